"""``Pipeline``: several jobs that wait on each other, submitted in one call (all or none).

    from jupyter_trainorch import Pipeline, Step

    jobs = Pipeline([
        Step("prep", "data = list(range(10))", out="data"),
        Step("train", TRAIN_CODE, after="prep", gpus=1, out="model"),
        Step("report", REPORT_CODE, after_any="train"),
    ]).submit()
    jobs["train"].result()

A step is built as ``%%train`` builds a cell's job: Python source (its free variables are
taken from the notebook, like a cell's) or a shell ``command``, a template, resources,
params and ``--out`` names. Inside a step, ``jupyter_trainorch.upstream("prep").result()``
gives the ``--out`` values of the step it waited on. Mistakes are a ``ValueError`` of one
sentence naming the step and the field.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..spec.dependencies import conditional, find_cycle
from .job import Job, Transport
from .transport import connect

_FLAGS = ("gpus", "nodes", "cpus", "memory", "priority", "retries", "timeout", "experiment")


def _names(value: Any, step: str, field: str) -> list[str]:
    """Names from text (commas allowed), ``Job`` handles (their ids) or a list of them."""
    if isinstance(value, (str, Job)):
        value = [value]
    try:
        items = list(value)
    except TypeError:
        items = [value]
    names: list[str] = []
    for entry in items:
        if isinstance(entry, Job):
            names.append(entry.id)
        elif isinstance(entry, str):
            names += [item.strip() for item in entry.split(",") if item.strip()]
        else:
            raise ValueError(f"step {step!r}: {field} takes names as text, not {entry!r}")
    return names


class Step:
    """One job of a pipeline. ``source`` is Python code (or give ``command``, a shell
    command); ``after``/``after_any``/``after_notok`` name steps of the same pipeline or
    earlier jobs (by name or id); ``out`` the variables the step gives back."""

    def __init__(
        self,
        name: str,
        source: str | None = None,
        *,
        command: str | None = None,
        template: str | None = None,
        after: str | Iterable[str] = (),
        after_any: str | Iterable[str] = (),
        after_notok: str | Iterable[str] = (),
        out: str | Iterable[str] = (),
        params: Mapping[str, Any] | None = None,
        env: Mapping[str, Any] | None = None,
        variables: Mapping[str, Any] | None = None,
        **flags: Any,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a step's name must be non-empty text, not {name!r}")
        self.name = name.strip()
        if (source is None) == (command is None):
            raise ValueError(f"step {self.name!r}: give either source (Python) or command")
        text = source if source is not None else command
        if not isinstance(text, str) or not text.strip():
            field = "source" if source is not None else "command"
            raise ValueError(f"step {self.name!r}: {field} must be non-empty text")
        unknown = sorted(set(flags) - set(_FLAGS))
        if unknown:
            raise ValueError(
                f"step {self.name!r}: {unknown[0]} is not a step option "
                f"(options: {', '.join(_FLAGS)}, template, params, env, variables, out)"
            )
        self.source, self.command = source, command
        self.template = template or ("command" if command is not None else "python-cell")
        self.after = _names(after, self.name, "after")
        self.after_any = _names(after_any, self.name, "after_any")
        self.after_notok = _names(after_notok, self.name, "after_notok")
        self.out = _names(out, self.name, "out")
        for variable in self.out:
            if not variable.isidentifier():
                raise ValueError(
                    f"step {self.name!r}: out takes variable names, and {variable!r} is not one"
                )
        self.params = dict(params or {})
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.variables = None if variables is None else dict(variables)
        self.flags = {k: v for k, v in flags.items() if v is not None}

    @property
    def waits_on(self) -> list[str]:
        return [*self.after, *self.after_any, *self.after_notok]

    def request(self, group: str) -> tuple[dict[str, Any], bytes | None]:
        """The submit body of this step and its code package (captured variables)."""
        params = dict(self.params)
        if self.command is not None:
            params.setdefault("cmd", self.command)
        overrides: dict[str, Any] = dict(self.flags)
        if self.env:
            overrides["env"] = self.env
        body: dict[str, Any] = {
            "template": self.template,
            "name": self.name,
            "params": params,
            "overrides": overrides,
            "depends_on": self.after,
            "dependencies": conditional(self.after_any, self.after_notok),
            "outputs": self.out,
            "workdir": os.getcwd(),
            "group": group,
        }
        if self.source is None:
            return body, None
        body["source"] = self.source
        return body, self._package()

    def _package(self) -> bytes:
        from ..spec import SpecError
        from .code_package import package_cell

        namespace = self.variables if self.variables is not None else _notebook_namespace()
        try:
            return package_cell(str(self.source), namespace, exclude=set(self.params))
        except SpecError as err:
            raise ValueError(f"step {self.name!r}: {err}") from None

    def __repr__(self) -> str:
        waits = f" after {', '.join(self.waits_on)}" if self.waits_on else ""
        out = f" -> {', '.join(self.out)}" if self.out else ""
        return f"<Step {self.name}{waits}{out}>"


def _notebook_namespace() -> dict[str, Any]:
    """The notebook's variables, as ``%%train`` takes them (none outside IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return {}
    shell = get_ipython()
    return dict(shell.user_ns) if shell is not None else {}


class Pipeline:
    """Steps that wait on each other; ``submit()`` sends them in one call."""

    def __init__(self, steps: Iterable[Step]) -> None:
        self.steps = list(steps)
        if not self.steps:
            raise ValueError("a pipeline needs at least one step")
        seen: set[str] = set()
        for step in self.steps:
            if not isinstance(step, Step):
                raise ValueError(f"a pipeline takes Step objects, not {type(step).__name__}")
            if step.name in seen:
                raise ValueError(f"two steps are named {step.name!r}; step names must be unique")
            seen.add(step.name)
        edges = {s.name: [d for d in s.waits_on if d in seen] for s in self.steps}
        cycle = find_cycle(edges)
        if cycle is not None:
            raise ValueError(f"the steps' dependencies form a cycle: {' -> '.join(cycle)}")

    def submit(self, transport: Transport | None = None) -> PipelineJobs:
        """Submit every step at once (all or none); their handles by step name."""
        transport = transport or connect()
        group = uuid.uuid4().hex[:10]
        bodies = []
        for step in self.steps:
            body, package = step.request(group)
            if package is not None:
                body["package"] = base64.b64encode(package).decode()
            bodies.append(body)
        infos = transport.submit_batch(bodies)
        return PipelineJobs({i["name"]: Job(i["id"], transport, i) for i in infos})

    def __repr__(self) -> str:
        return f"<Pipeline of {len(self.steps)} steps: {', '.join(map(repr, self.steps))}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        lines = [f"Pipeline of {len(self.steps)} steps"] + [f"  {s!r}" for s in self.steps]
        printer.text("\n".join(lines))


class PipelineJobs(Mapping[str, Job]):
    """The submitted steps' ``Job`` handles by step name, in the pipeline's order."""

    def __init__(self, jobs: dict[str, Job]) -> None:
        self._jobs = jobs

    def __getitem__(self, name: str) -> Job:
        try:
            return self._jobs[name]
        except KeyError:
            raise KeyError(
                f"no step named {name!r}; the steps are {', '.join(self._jobs)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)

    def wait(self, timeout: float | None = None) -> dict[str, str]:
        """Wait until every step has ended (or ``timeout`` seconds for each); their states."""
        return {name: job.wait(timeout) for name, job in self._jobs.items()}

    def __repr__(self) -> str:
        rows = [f"  {name}: {job.id} {job._info.get('state', '')}" for name, job in self.items()]
        return "\n".join([f"{len(self)} pipeline jobs", *rows])
