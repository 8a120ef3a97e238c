"""The ``{{ }}`` language of templates: Jinja's sandbox, bounded in time and size.

Templates come from users and shared folders, and are rendered inside the service. The
sandbox already blocks attribute tricks; this also keeps a render from taking the
service's memory or a thread: few filters, sizes checked before an operator multiplies a
string or list, at most ``MAX_RENDER_CHARS`` of output and ``RENDER_SECONDS`` of time.
"""

from __future__ import annotations

import ctypes
import shlex
import threading
from collections.abc import Callable
from typing import Any

from jinja2 import StrictUndefined, Template
from jinja2.sandbox import SandboxedEnvironment

from .errors import SpecError

MAX_RENDER_CHARS = 256 * 2**10
RENDER_SECONDS = 2.0
MAX_INT_BITS = 4096
# Filters a job template has use for; the others (center, indent, wordwrap, …) can turn a
# short template into gigabytes and are left out.
ALLOWED_FILTERS = (
    "abs capitalize count d default first float int join last length list lower max min "
    "replace round sort string sum title tojson trim unique upper"
).split()


class RenderTimeout(Exception):
    """Raised inside a render that ran past its time."""


class BoundedEnvironment(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
        kept = {name: self.filters[name] for name in ALLOWED_FILTERS}
        kept["replace"] = _bounded_replace
        kept["join"] = _bounded(self.filters["join"])
        kept["quote"] = shlex.quote
        self.filters = kept

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                if max(1, abs(left).bit_length()) * right > MAX_INT_BITS:
                    raise SpecError("uses a number that is too large")
            return left**right
        sequence, count = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(sequence, (str, list, tuple)) and isinstance(count, int):
            if len(sequence) * count > MAX_RENDER_CHARS:
                raise SpecError(f"builds a value longer than {MAX_RENDER_CHARS} items")
        return left * right


def _bounded(filter_fn: Callable[..., Any]) -> Callable[..., Any]:
    def bounded(*args: Any, **kwargs: Any) -> Any:
        result = filter_fn(*args, **kwargs)
        if isinstance(result, str) and len(result) > MAX_RENDER_CHARS:
            raise SpecError(f"builds a value longer than {MAX_RENDER_CHARS} characters")
        return result

    bounded.__dict__.update(filter_fn.__dict__)  # keeps jinja's pass_environment marks
    return bounded


def _bounded_replace(value: Any, old: str, new: str, count: int | None = None) -> str:
    text, old, new = str(value), str(old), str(new)
    hits = text.count(old) if old else len(text) + 1
    if len(text) + hits * max(0, len(new) - len(old)) > MAX_RENDER_CHARS:
        raise SpecError(f"builds a value longer than {MAX_RENDER_CHARS} characters")
    return text.replace(old, new, -1 if count is None else count)


JINJA = BoundedEnvironment()


class _Deadline:
    """Interrupts the calling thread (a pure-Python Jinja loop) once ``seconds`` pass."""

    def __init__(self, seconds: float) -> None:
        self._thread = threading.get_ident()
        self._lock = threading.Lock()
        self._active, self.fired = True, False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._active:
                self.fired = True
                _set_async_exc(self._thread, RenderTimeout)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._active = False
            if self.fired:  # fired as the render ended: drop it if not yet delivered
                _set_async_exc(self._thread, None)


def _set_async_exc(thread: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread), ctypes.py_object(exc) if exc is not None else None
    )


def render_bounded(template: Template, values: dict[str, Any]) -> str:
    """Render, refusing output over ``MAX_RENDER_CHARS`` and renders over ``RENDER_SECONDS``."""
    deadline = _Deadline(RENDER_SECONDS)
    try:
        parts: list[str] = []
        size = 0
        for chunk in template.generate(values):
            size += len(chunk)
            if size > MAX_RENDER_CHARS:
                raise SpecError(f"renders to more than {MAX_RENDER_CHARS} characters")
            parts.append(chunk)
        return "".join(parts)
    except RenderTimeout:
        raise SpecError(f"took longer than {RENDER_SECONDS:g} s to render") from None
    finally:
        try:
            deadline.close()
        except RenderTimeout:
            pass  # it fired just as the render ended
