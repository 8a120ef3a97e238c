"""``%%train``, ``%jobs`` and ``%job``: the notebook surface.

Every mistake a user can make ends as one ``UsageError`` sentence (IPython shows it
without a traceback); nothing here schedules or validates beyond parsing flags.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shlex
import threading
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from ..spec import SpecError
from .transport import TrainOrchError

_ACTIONS = ("status", "logs", "cancel", "retry", "wait")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("unrecognized arguments:"):
            flag = message.split(":", 1)[1].split()[0]
            known = [o for a in self._actions for o in a.option_strings]
            close = difflib.get_close_matches(flag, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"{self.prog}: unknown flag {flag}{hint}")
        raise UsageError(f"{self.prog}: {message}")


def _train_parser() -> _Parser:
    parser = _Parser(prog="%%train", add_help=False, allow_abbrev=False)
    parser.add_argument("--name")
    parser.add_argument("--template", default="python-cell")
    parser.add_argument("--gpus")
    parser.add_argument("--nodes")
    parser.add_argument("--cpus")
    parser.add_argument("--memory")
    parser.add_argument("--priority")
    parser.add_argument("--retries")
    parser.add_argument("--timeout")
    parser.add_argument("--experiment")
    parser.add_argument("--register-model", dest="register_model")
    parser.add_argument("--after", action="append", default=[])
    parser.add_argument("--after-any", dest="after_any", action="append", default=[])
    parser.add_argument("--after-notok", dest="after_notok", action="append", default=[])
    parser.add_argument("--out", default="")
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--secret-env", dest="secret_env", action="append", default=[])
    parser.add_argument("--data", action="append", default=[])
    parser.add_argument("--artifact", action="append", default=[])
    parser.add_argument("--wait", action="store_true")
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("params", nargs="*")
    return parser


def _split_list(values: list[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _notebook_name() -> str:
    """The MLflow experiment a notebook's jobs go to by default: the notebook's name
    (empty without one: the orchestrator's default experiment)."""
    path = os.environ.get("JPY_SESSION_NAME", "")
    return os.path.splitext(os.path.basename(path))[0]


def build_request(
    line: str, cell: str, execution_count: int | None
) -> tuple[dict[str, Any], list[str], bool]:
    """The submit body for a ``%%train`` cell; also the ``--out`` names and ``--wait``."""
    from ..spec.data import flag_overrides
    from ..spec.dependencies import conditional
    from ..spec.render import parse_secret_pairs, parse_set_values

    try:
        args = _train_parser().parse_args(shlex.split(line))
    except ValueError as err:
        raise UsageError(f"%%train: {err}") from None
    try:
        params = parse_set_values(args.params)
        env = parse_set_values(args.env) if args.env else {}
        secrets = parse_secret_pairs(args.secret_env)
        data_io = flag_overrides(args.data, args.artifact)
    except SpecError as err:
        raise UsageError(f"%%train: {err}") from None
    overrides: dict[str, Any] = {
        key: getattr(args, key)
        for key in (
            "gpus",
            "nodes",
            "cpus",
            "memory",
            "priority",
            "retries",
            "timeout",
            "experiment",
            "register_model",
        )
        if getattr(args, key) is not None
    }
    overrides.setdefault("experiment", _notebook_name())
    if env:
        overrides["env"] = {k: str(v) for k, v in env.items()}
    if secrets:
        overrides["secret_env"] = secrets
    overrides.update(data_io)
    outputs = _split_list([args.out]) if args.out else []
    for name in outputs:
        if not name.isidentifier():
            raise UsageError(f"%%train: --out takes variable names, and {name!r} is not one")
    if not cell.strip():
        raise UsageError("%%train: the cell is empty; put the training code below the magic line")
    body = {
        "template": args.template,
        "name": args.name or (f"cell-{execution_count}" if execution_count else "cell"),
        "params": params,
        "overrides": overrides,
        "source": cell,
        "depends_on": _split_list(args.after),
        "dependencies": conditional(_split_list(args.after_any), _split_list(args.after_notok)),
        "outputs": outputs,
        "workdir": os.getcwd(),
    }
    if args.sweep:
        body["sweep"] = sweep_axes(args.params)
    return body, outputs, args.wait


def sweep_axes(pairs: list[str]) -> dict[str, list[Any]]:
    """``lr=1e-3,3e-4`` -> ``{"lr": [0.001, 0.0003]}``: every param with a comma is an axis."""
    from ..spec.render import parse_set_values

    axes: dict[str, list[Any]] = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        if "," in text:
            axes[key.strip()] = [
                parse_set_values([f"{key.strip()}={item.strip()}"])[key.strip()]
                for item in text.split(",")
            ]
    if not axes:
        raise UsageError("%%train: --sweep needs at least one key=v1,v2 param to sweep over")
    return axes


def sweep_requests(body: dict[str, Any]) -> list[dict[str, Any]]:
    """One submit body per point of the grid, all in one group."""
    import itertools
    import uuid

    axes = body.pop("sweep")
    group = uuid.uuid4().hex[:10]
    requests = []
    for values in itertools.product(*axes.values()):
        point = dict(zip(axes, values, strict=True))
        label = ",".join(f"{k}={v}" for k, v in point.items())
        requests.append(
            {
                **body,
                "params": {**body["params"], **point},
                "name": f"{body['name']}[{label}]",
                "group": group,
            }
        )
    return requests


@magics_class
class TrainMagics(Magics):
    @cell_magic
    def train(self, line: str, cell: str) -> Any:
        """Run this cell as a training job: ``%%train [--gpus N --priority high …] [k=v …]``."""
        from .code_package import package_cell
        from .job import submit

        body, outputs, wait = build_request(line, cell, self.shell.execution_count)
        try:
            package = package_cell(
                cell, self.shell.user_ns, exclude=set(body["params"]) | set(body.get("sweep", {})),
            )  # fmt: skip
            if "sweep" in body:
                return [submit(request, package) for request in sweep_requests(body)]
            job = submit(body, package)
        except (SpecError, TrainOrchError) as err:
            raise UsageError(str(err)) from None
        if wait:
            state = job.follow()
            job.log_printed = True
            info = job.refresh()
            if state == "succeeded":
                self._bring_back(job, outputs)
                print(f"job {job.id} succeeded")
            else:
                print(f"job {job.id} {state}: {info.get('error') or ''}".rstrip(": "))
        elif outputs:
            threading.Thread(
                target=self._bring_back_later, args=(job, outputs), daemon=True
            ).start()
        return job

    def _bring_back(self, job: Any, outputs: list[str]) -> None:
        if outputs:
            self.shell.user_ns.update(job.result())

    def _bring_back_later(self, job: Any, outputs: list[str]) -> None:
        try:
            if job.wait() == "succeeded":
                self._bring_back(job, outputs)
        except TrainOrchError:
            pass  # the job's own state says what happened

    @line_magic
    def jobs(self, line: str) -> Any:
        """A DataFrame of jobs: ``%jobs [--state running] [--user NAME] [--limit N]``."""
        from .job import jobs

        parser = _Parser(prog="%jobs", add_help=False, allow_abbrev=False)
        parser.add_argument("--state")
        parser.add_argument("--user")
        parser.add_argument("--limit", type=int, default=100)
        args = parser.parse_args(shlex.split(line))
        try:
            return jobs(state=args.state, user=args.user, limit=args.limit)
        except TrainOrchError as err:
            raise UsageError(str(err)) from None

    @line_magic
    def job(self, line: str) -> Any:
        """``%job ID [status|logs|cancel|retry|wait]``."""
        from .job import get_job

        words = shlex.split(line)
        if not words or len(words) > 2:
            raise UsageError("%job: usage is %job ID [status|logs|cancel|retry|wait]")
        action = words[1] if len(words) == 2 else "status"
        if action not in _ACTIONS:
            raise UsageError(f"%job: action must be one of {', '.join(_ACTIONS)}, not {action!r}")
        try:
            handle = get_job(words[0])
            if action == "logs":
                print(handle.logs())
                return None
            if action == "cancel":
                print(f"job {handle.id}: {handle.cancel()}")
                return None
            if action == "retry":
                print(f"job {handle.id}: {handle.retry()}")
                return None
            if action == "wait":
                handle.follow()
            return handle
        except TrainOrchError as err:
            raise UsageError(str(err)) from None


def register(ipython: Any) -> None:
    ipython.register_magics(TrainMagics)
