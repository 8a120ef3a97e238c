"""Packaging a cell: its free variables, pickled with cloudpickle, one by one.

A name the cell reads but never binds must come from the kernel: it is required,
and a value that cannot be pickled (or is too large) is an error that names it. A
name the cell both binds and reads is captured when it exists and pickles, since
the cell may read it before binding it.
"""

from __future__ import annotations

import builtins
import functools
import io
import math
import os
import symtable
import types
from typing import Any

from ..spec import SpecError

DEFAULT_MAX_MB = 64
# A submit body is at most 128 MiB (contract.limits) and base64 adds a third.
LIMIT_MAX_MB = 90


def capture_limit() -> int:
    """``TRAINORCH_MAX_CAPTURE_MB`` (a kernel-side setting) in bytes, or one sentence."""
    raw = os.environ.get("TRAINORCH_MAX_CAPTURE_MB", "").strip()
    if not raw:
        return DEFAULT_MAX_MB * 2**20
    try:
        megabytes = float(raw)
    except ValueError:
        megabytes = math.nan
    if not math.isfinite(megabytes) or not 0 < megabytes <= LIMIT_MAX_MB:
        raise SpecError(
            f"TRAINORCH_MAX_CAPTURE_MB must be a number of megabytes above 0 and at most "
            f"{LIMIT_MAX_MB}, not {raw[:40]!r}"
        )
    return int(megabytes * 2**20)


_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "display"}


def _walk(table: symtable.SymbolTable) -> tuple[set[str], set[str]]:
    """(names read as globals anywhere, names bound at the top level)."""
    read: set[str] = set()
    bound: set[str] = set()
    top = table.get_type() == "module"
    for symbol in table.get_symbols():
        name = symbol.get_name()
        if top:
            if symbol.is_assigned() or symbol.is_imported() or symbol.is_namespace():
                bound.add(name)
            if symbol.is_referenced():
                read.add(name)
        elif symbol.is_global() and symbol.is_referenced():
            read.add(name)
    for child in table.get_children():
        child_read, _ = _walk(child)
        read |= child_read
    return read, bound


def free_names(source: str) -> tuple[set[str], set[str]]:
    """(required, optional) names for a cell; the cell must compile."""
    try:
        table = symtable.symtable(source, "<cell>", "exec")
    except SyntaxError as err:
        raise SpecError(f"the cell has a syntax error on line {err.lineno}: {err.msg}") from None
    read, bound = _walk(table)
    candidates = {n for n in read if not n.startswith("_") and n not in _KERNEL_NAMES}
    return candidates - bound, candidates & bound


@functools.cache
def _module_recorder() -> type:
    import cloudpickle

    class ModuleRecorder(cloudpickle.Pickler):
        """Notes the module of every class, function and module it pickles: what it
        pickles by reference must be importable on the worker."""

        def __init__(self, file: io.BytesIO, modules_seen: set[str]) -> None:
            super().__init__(file, protocol=cloudpickle.DEFAULT_PROTOCOL)
            self.modules_seen = modules_seen

        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, types.ModuleType):
                self.modules_seen.add(obj.__name__)
            elif isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
                module = getattr(obj, "__module__", None)
                if isinstance(module, str):
                    self.modules_seen.add(module)
            return super().reducer_override(obj)

    return ModuleRecorder


def _pickle(value: Any, modules_seen: set[str] | None) -> bytes:
    if modules_seen is None:
        import cloudpickle

        return cloudpickle.dumps(value)
    buffer = io.BytesIO()
    _module_recorder()(buffer, modules_seen).dump(value)
    return buffer.getvalue()


def capture_variables(
    source: str,
    namespace: dict[str, Any],
    exclude: set[str] | frozenset[str] = frozenset(),
    max_bytes: int | None = None,
    modules_seen: set[str] | None = None,
) -> dict[str, bytes]:
    """Pickle the kernel variables the cell needs; ``exclude`` holds injected params.
    ``modules_seen`` (when given) gets the names of the modules the pickles refer to."""
    if max_bytes is None:
        max_bytes = capture_limit()

    required, optional = free_names(source)
    captured: dict[str, bytes] = {}
    for name in sorted((required | optional) - set(exclude)):
        if name not in namespace:
            continue  # a builtin, or a NameError the job itself will report
        value = namespace[name]
        if isinstance(value, types.ModuleType) and name in dir(builtins):
            continue
        if isinstance(value, io.IOBase):
            # cloudpickle would send a snapshot of the file's contents, read in the kernel,
            # not the file: the job would silently write nowhere or read stale data.
            raise SpecError(
                f"variable {name!r} is an open file, which cannot be sent to the worker; "
                "open it inside the cell instead"
            )
        try:
            blob = _pickle(value, modules_seen)
        except Exception as err:  # noqa: BLE001 - any pickling failure is the user's to fix
            if name in optional:
                continue
            kind = type(value).__name__
            raise SpecError(
                f"variable {name!r} ({kind}) cannot be sent to the worker: {err}; "
                "create it inside the cell instead"
            ) from None
        if len(blob) > max_bytes:
            raise SpecError(
                f"variable {name!r} is {len(blob) / 2**20:.1f} MiB pickled, over the "
                f"{max_bytes / 2**20:.0f} MiB limit (TRAINORCH_MAX_CAPTURE_MB); load it inside the cell instead"
            )
        captured[name] = blob
    return captured
