"""``Job`` handles and the Python functions behind the magics and the CLI."""

from __future__ import annotations

import base64
import sys
from typing import Any, TextIO

from ..contract.states import TERMINAL_STATES as FINAL_STATES
from .transport import HTTPTransport, TrainOrchError, connect

Transport = HTTPTransport


def attempts_text(job: dict[str, Any]) -> str:
    """``n/m``: the current attempt and the attempts the job may take (``attempts_allowed``,
    sent by the service); a manual retry starts a fresh budget, so ``n`` can pass it."""
    attempts = job.get("attempts") or []
    n = int(attempts[-1].get("n") or len(attempts)) if attempts else 0
    return f"{n}/{max(n, int(job.get('attempts_allowed') or 1))}"


def model_text(job: dict[str, Any], escape: Any = str) -> str:
    """``, model doubler v1 @champion`` for a job that registered a model, else ``""``."""
    model = (job.get("mlflow") or {}).get("model")
    if not model:
        return ""
    alias = f" @{model['alias']}" if model.get("alias") else ""
    return escape(f", model {model['name']} v{model['version']}{alias}")


def schedule_text(job: dict[str, Any]) -> str:
    """Where a waiting job stands and when it should start, or when a running one should
    end: ``#3 in the queue, starts ~14:05:10: behind 2 jobs of higher priority``."""
    parts = []
    if job.get("queue_position"):
        parts.append(f"#{job['queue_position']} in the queue")
    if job.get("estimated_start"):
        parts.append(f"starts ~{_clock(job['estimated_start'])}")
    if job.get("estimated_end"):
        parts.append(f"ends ~{_clock(job['estimated_end'])}")
    text = ", ".join(parts)
    if job.get("wait_reason"):
        text = f"{text}: {job['wait_reason']}" if text else str(job["wait_reason"])
    return text


def _clock(stamp: str) -> str:
    """An ISO UTC time of the job JSON as the local time of day."""
    from datetime import datetime

    try:
        return (
            datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
        )
    except ValueError:
        return stamp


class JobFailed(TrainOrchError):
    """``Job.result()`` of a job that did not succeed."""


class Job:
    """A handle on a submitted job. Cheap: every property asks the orchestrator."""

    def __init__(
        self, job_id: str, transport: Transport | None = None, info: dict[str, Any] | None = None
    ) -> None:
        self.id = job_id
        self._transport = transport
        self._info = info or {}
        self._outputs: dict[str, Any] | None = None
        # Set once ``follow`` printed the whole log: showing it shows no log tail again.
        self.log_printed = False

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            self._transport = connect()
        return self._transport

    def refresh(self) -> dict[str, Any]:
        self._info = self.transport.get(self.id)
        return self._info

    @property
    def name(self) -> str:
        return self._info.get("name") or self.refresh()["name"]

    @property
    def state(self) -> str:
        return self.refresh()["state"]

    @property
    def info(self) -> dict[str, Any]:
        return self.refresh()

    def to_dict(self) -> dict[str, Any]:
        return self.refresh()

    def wait(self, timeout: float | None = None) -> str:
        """Block until the job ends (or ``timeout`` seconds pass); return its state."""
        self._info = self.transport.wait(self.id, timeout)
        return self._info["state"]

    def logs(self, attempt: int | None = None) -> str:
        """All log lines so far (of one attempt, or of all)."""
        lines, after = [], 0
        while True:
            chunk = self.transport.logs(self.id, attempt=attempt, after=after)
            lines += [line["text"] for line in chunk["lines"]]
            if chunk["next"] == after or not chunk["lines"]:
                return "\n".join(lines)
            after = chunk["next"]

    def follow(self, out: TextIO | None = None, attempt: int | None = None) -> str:
        """Print log lines as they arrive until the job ends; return the final state."""
        out = out or sys.stdout
        after, shown_attempt = 0, None
        while True:
            chunk = self.transport.logs(self.id, attempt=attempt, after=after, wait=10.0)
            for line in chunk["lines"]:
                if attempt is None and line["attempt"] != shown_attempt:
                    if shown_attempt is not None:
                        print(f"--- attempt {line['attempt']} ---", file=out)
                    shown_attempt = line["attempt"]
                print(line["text"], file=out)
            out.flush()
            after = chunk["next"]
            if chunk["finished"] and not chunk["lines"]:
                return chunk["state"]

    def cancel(self) -> str:
        self._info = self.transport.cancel(self.id)
        return self._info["state"]

    def rerun(self) -> Job:
        """A new job from this one's stored spec and code, byte for byte."""
        info = self.transport.rerun(self.id)
        return Job(info["id"], self.transport, info)

    def retry(self) -> str:
        self._info = self.transport.retry(self.id)
        return self._info["state"]

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait, then return the ``--out`` variables; raise ``JobFailed`` if it did not succeed."""
        state = self.wait(timeout)
        if state != "succeeded":
            if state not in FINAL_STATES:
                raise TrainOrchError(f"job {self.id} is still {state} after {timeout}s", 408)
            error = self._info.get("error")
            detail = f": {error}" if error and error != state else ""
            raise JobFailed(f"job {self.id} ({self._info.get('name')}) {state}{detail}", 409)
        if self._outputs is None:
            import cloudpickle

            blob = self.transport.outputs(self.id)
            self._outputs = cloudpickle.loads(blob) if blob else {}
        return dict(self._outputs)

    def __repr__(self) -> str:
        info = self._info
        return f"<Job {self.id} {info.get('name', '')!s} {info.get('state', '')}>".replace(
            "  ", " "
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        info = self.refresh()
        attempts = info.get("attempts") or []
        schedule = schedule_text(info)
        printer.text(
            f"Job {self.id} '{info['name']}': {info['state']}, priority {info['priority_class']}, "
            f"{len(attempts)} attempt(s), {info['max_retries']} retries allowed" + model_text(info)
            + (f"\n  {schedule}" if schedule else "")
        )  # fmt: skip

    def metrics(self) -> Any:
        """Every metric point of every attempt, as MLflow holds them: a DataFrame with
        ``attempt``, ``step``, ``time`` and a column per metric (``progress(step, loss=…)``
        gives one point per step). Raises when MLflow cannot be read or tracking is off."""
        import pandas as pd

        history = self.transport.metrics(self.id)
        if history.get("warning"):
            raise TrainOrchError(f"job {self.id}: {history['warning']}", 503)
        rows: dict[tuple[int, float], dict[str, Any]] = {}
        for attempt in history["attempts"]:
            for key, points in attempt["metrics"].items():
                for step, value, stamp in points:
                    row = rows.setdefault(
                        (attempt["n"], step),
                        {"attempt": attempt["n"], "step": step, "time": stamp},
                    )
                    row[key], row["time"] = value, max(row["time"], stamp)
        frame = pd.DataFrame(sorted(rows.values(), key=lambda r: (r["attempt"], r["step"])))
        if not frame.empty:
            frame["time"] = pd.to_datetime(frame["time"], unit="ms", utc=True)
        return frame

    @property
    def model(self) -> dict[str, Any] | None:
        """The model version this job registered (``name``, ``version``, ``alias``), if any."""
        return (self.refresh().get("mlflow") or {}).get("model")

    def _ipython_display_(self) -> None:
        """In a kernel, a live ``JobWidget``; elsewhere the text of ``_repr_pretty_``."""
        from IPython.display import display

        try:
            from ..widgets import show_job

            if not self.log_printed and show_job(self):
                return
        except ImportError:
            pass  # no ipywidgets: the text below says everything
        from IPython.lib.pretty import pretty

        display({"text/plain": pretty(self)}, raw=True)


def submit(
    body: dict[str, Any], package: bytes | None = None, transport: Transport | None = None
) -> Job:
    """Submit a request (see ``JobService.submit``); return its handle."""
    transport = transport or connect()
    body = dict(body)
    if package is not None:
        body["package"] = base64.b64encode(package).decode()
    info = transport.submit(body)
    return Job(info["id"], transport, info)


def get_job(ref: str) -> Job:
    """The job with this id, or else the newest job with this name (as ``--after`` takes)."""
    transport = connect()
    try:
        return Job(ref, transport, transport.get(ref))
    except TrainOrchError as err:
        if err.status != 404:
            raise
    named = [j for j in transport.list(q=ref, limit=1000)["jobs"] if j["name"] == ref]
    if not named:
        raise TrainOrchError(f"there is no job with id or name {ref!r}", status=404)
    return Job(named[0]["id"], transport, transport.get(named[0]["id"]))


def jobs(state: str | None = None, user: str | None = None, limit: int = 100) -> Any:
    """The jobs as a pandas DataFrame, newest first."""
    import pandas as pd

    listing = connect().list(state=state, user=user, limit=limit)
    rows = [_row(job) for job in listing["jobs"]]
    columns = [
        "id", "name", "user", "state", "priority", "gpus", "attempts", "progress",
        "created", "started", "ended", "error", "group",
    ]  # fmt: skip
    # Params and final metrics as columns, so a sweep can be sorted in pandas.
    extra = sorted({key for row in rows for key in row if key.startswith(("param.", "metric."))})
    frame = pd.DataFrame(rows, columns=columns + extra)
    for column in ("created", "started", "ended"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame.set_index("id")


def _row(job: dict[str, Any]) -> dict[str, Any]:
    progress = job.get("progress") or {}
    fraction = progress.get("fraction")
    return {
        "id": job["id"],
        "name": job["name"],
        "user": job["user"],
        "state": job["state"],
        "priority": job["priority_class"],
        "gpus": job["resources"]["gpus"],
        "attempts": attempts_text(job),
        "progress": None if fraction is None else round(fraction, 3),
        "created": job["created"],
        "started": job["started"],
        "ended": job["ended"],
        "error": job["error"],
        "group": job.get("group") or None,
        **{f"param.{k}": v for k, v in (job.get("params") or {}).items()},
        **{
            f"metric.{k}": v
            for k, v in {
                **progress.get("metrics", {}),
                **(job.get("mlflow") or {}).get("metrics", {}),
            }.items()
        },
    }
