"""``JobWidget``: one job, live, under the cell that submitted it."""

from __future__ import annotations

import html
import threading
from collections import deque
from typing import Any

import ipywidgets as widgets

from ..client.job import attempts_text, model_text, schedule_text
from ..client.transport import TrainOrchError
from ._live import Follower, first_line, progress_text, summary

_STATE_COLOURS = {
    "pending": "#757575",
    "queued": "#757575",
    "starting": "#1565c0",
    "running": "#1565c0",
    "retrying": "#ef6c00",
    "preempted": "#ef6c00",
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "cancelled": "#6d4c41",
}
_BAR_STYLES = {
    "starting": "info",
    "running": "info",
    "retrying": "warning",
    "preempted": "warning",
    "succeeded": "success",
    "failed": "danger",
    "cancelled": "warning",
}
_MAX_LINE = 1000
_PRE_STYLE = "margin:0;max-height:16em;overflow:auto;white-space:pre-wrap;font-size:12px"


def log_html(lines: list[str]) -> str:
    """Log text as inert HTML: escaped, so a job cannot inject markup into the notebook."""
    body = html.escape("\n".join(lines)) if lines else "<i>no output yet</i>"
    return f'<pre style="{_PRE_STYLE}">{body}</pre>'


class JobWidget(widgets.VBox):
    """A live view of one job: state, progress, attempts, the last log lines and Cancel.

    A daemon thread follows the orchestrator's change feed and calls ``apply`` with the
    job JSON and the new log lines; it ends once the job is final, or on ``close()``.
    ``start=False`` builds the view without the thread (``apply`` can then be driven by hand).
    """

    def __init__(
        self,
        job: Any,
        *,
        transport: Any = None,
        max_lines: int = 10,
        interval: float = 5.0,
        poll_timeout: float = 10.0,
        start: bool = True,
        **kwargs: Any,
    ) -> None:
        from ..client.job import Job

        if isinstance(job, str):
            job = Job(job, transport)
        self.job = job
        self.transport = transport or job.transport
        self.max_lines = max_lines
        self.job_json: dict[str, Any] = {}
        self._lines: deque[str] = deque(maxlen=max_lines)
        self._line_attempt: int | None = None
        self._cursor = 0
        self._lock = threading.RLock()

        self.title = widgets.HTML(f"<code>{html.escape(job.id)}</code>")
        self.state_label = widgets.Label("…", layout=widgets.Layout(width="7em"))
        self.progress_bar = widgets.FloatProgress(
            value=0.0, min=0.0, max=1.0, layout=widgets.Layout(width="14em")
        )
        # Labels take the width of their text ("attempt 2 of 3" was cut to "attempt 2 of").
        self.progress_text = widgets.Label("", layout=widgets.Layout(flex="0 0 auto"))
        self.attempt_label = widgets.Label("", layout=widgets.Layout(flex="0 0 auto"))
        self.cancel_button = widgets.Button(
            description="Cancel", icon="stop", layout=widgets.Layout(width="7em")
        )
        self.cancel_button.on_click(self._on_cancel)
        self.error_label = widgets.Label("")
        self.error_label.style.text_color = _STATE_COLOURS["failed"]
        self.error_label.add_class(
            "trainorch-wrap"
        )  # the panel's stylesheet: a long sentence wraps
        self.notice_label = widgets.Label("")
        # Why it waits and when it should start (or end); HTML, which wraps a long reason
        # where a Label would cut it.
        self.schedule_label = widgets.HTML("")
        self.log_view = widgets.HTML(log_html([]))
        row = widgets.HBox(
            [
                self.state_label,
                self.progress_bar,
                self.progress_text,
                self.attempt_label,
                self.cancel_button,
            ],
            layout=widgets.Layout(align_items="center", flex_flow="row wrap"),
        )
        super().__init__(
            [
                self.title,
                row,
                self.schedule_label,
                self.error_label,
                self.log_view,
                self.notice_label,
            ],
            **kwargs,
        )
        info = getattr(job, "_info", None)
        if info and info.get("state"):
            self.apply(info, [])
        self._follower = Follower(
            self.transport,
            wants=lambda changes: any(c.get("job_id") == self.job.id for c in changes),
            refresh=self.update,
            report=self._report,
            interval=interval,
            poll_timeout=poll_timeout,
            name=f"trainorch-job-{job.id}",
        )
        if start:
            self._follower.start()

    @property
    def thread(self) -> threading.Thread:
        return self._follower.thread

    @property
    def log_lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)

    @property
    def finished(self) -> bool:
        return bool(self.job_json.get("terminal"))

    def apply(self, job: dict[str, Any], new_lines: list[dict[str, Any]]) -> None:
        """Show ``job`` (the job JSON) and append ``new_lines`` (log line dicts) to the view."""
        with self._lock:
            self.job_json = job
            state = str(job.get("state") or "")
            name = job.get("name") or ""
            self.title.value = (
                f"<b>{html.escape(str(name))}</b> <code>{html.escape(self.job.id)}</code>"
                + model_text(job, html.escape)
            )
            self.state_label.value = state
            self.state_label.style.text_color = _STATE_COLOURS.get(state, "")
            self._show_progress(state, job.get("progress") or {})
            if job.get("attempts"):
                self.attempt_label.value = "attempt " + attempts_text(job).replace("/", " of ")
            else:
                self.attempt_label.value = f"no attempt yet, up to {job.get('attempts_allowed', 1)}"
            self.schedule_label.value = html.escape(schedule_text(job))
            cancellable = "cancel" in (job.get("actions") or [])
            self.cancel_button.disabled = not cancellable
            # A finished job has nothing to cancel: no greyed-out button either.
            self.cancel_button.layout.display = "" if cancellable else "none"
            error = job.get("error")
            self.error_label.value = (
                str(error).splitlines()[-1] if error and state != "succeeded" else ""
            )
            if new_lines:
                for line in new_lines:
                    attempt = line.get("attempt")
                    if self._line_attempt is not None and attempt != self._line_attempt:
                        self._lines.append(f"--- attempt {attempt} ---")
                    self._line_attempt = attempt
                    text = str(line.get("text", ""))
                    self._lines.append(text if len(text) <= _MAX_LINE else text[:_MAX_LINE] + "…")
                self.log_view.value = log_html(list(self._lines))

    def _show_progress(self, state: str, progress: dict[str, Any]) -> None:
        step, total, fraction = (
            progress.get("step"),
            progress.get("total"),
            progress.get("fraction"),
        )
        bar = self.progress_bar
        numeric = isinstance(step, (int, float)) and not isinstance(step, bool)
        if numeric and isinstance(total, (int, float)) and total > 0:
            bar.max = float(total)  # before value: the value is clamped to the current max
            bar.value = float(min(max(step, 0), total))
        elif isinstance(fraction, (int, float)):
            bar.max = 1.0
            bar.value = float(min(max(fraction, 0.0), 1.0))
        elif state == "succeeded":
            bar.max = 1.0
            bar.value = 1.0
        bar.bar_style = _BAR_STYLES.get(state, "")
        self.progress_text.value = progress_text(progress)

    def update(self) -> bool:
        """Fetch the job and its new log lines, ``apply`` them; False once the job is final."""
        job = self.transport.get(self.job.id)
        # The job is read before its logs: when it is final, every line is already stored.
        lines: list[dict[str, Any]] = []
        while True:
            chunk = self.transport.logs(self.job.id, after=self._cursor)
            fresh = chunk.get("lines") or []
            if not fresh or chunk.get("next", self._cursor) == self._cursor:
                break
            lines = (lines + fresh)[-self.max_lines :]
            self._cursor = chunk["next"]
        self.apply(job, lines)
        return not job.get("terminal")

    def _report(self, message: str) -> None:
        self.notice_label.value = f"cannot update: {message}" if message else ""

    def _on_cancel(self, _button: Any = None) -> None:
        self.cancel_button.disabled = True
        try:
            job = self.transport.cancel(self.job.id)
        except TrainOrchError as err:
            self.notice_label.value = first_line(err)
            self.cancel_button.disabled = self.finished
            return
        self.notice_label.value = ""
        self.apply(job, [])

    def close(self) -> None:
        follower = getattr(self, "_follower", None)
        if follower is not None:
            follower.stop()
        super().close()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is not None:
            # Front ends without widget support (nbconvert, a console) show this line instead.
            bundle["text/plain"] = summary(self.job.id, self.job_json)
        return bundle
