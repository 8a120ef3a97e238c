"""``JobBoard``: a live table of jobs for front ends without the JupyterLab panel."""

from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as widgets

from ..client.job import attempts_text
from ..client.transport import TrainOrchError
from ..contract.states import ALL_STATES
from ._live import Follower, first_line, number

# (column, width); the cells of every row share these widths so the rows line up.
COLUMNS = (
    ("id", "8em"), ("name", "12em"), ("user", "8em"), ("state", "7em"), ("priority", "6em"),
    ("gpus", "3em"), ("attempts", "5em"), ("progress", "6em"), ("created", "11em"),
)  # fmt: skip


def row_cells(job: dict[str, Any]) -> dict[str, str]:
    """The text of each column for one job JSON."""
    progress = job.get("progress") or {}
    fraction, step, total = progress.get("fraction"), progress.get("step"), progress.get("total")
    if fraction is not None:
        shown = f"{fraction:.0%}"
    elif step is not None:
        shown = f"{number(step)}/{number(total)}" if total else f"step {number(step)}"
    else:
        shown = ""
    created = str(job.get("created") or "")
    return {
        "id": str(job.get("id", "")),
        "name": str(job.get("name", "")),
        "user": str(job.get("user", "")),
        "state": str(job.get("state", "")),
        "priority": str(job.get("priority_class", job.get("priority", ""))),
        "gpus": number((job.get("resources") or {}).get("gpus", 0)),
        "attempts": attempts_text(job),
        "progress": shown,
        "created": created.replace("T", " ")[:19],
    }


def _cell(text: str, width: str, bold: bool = False) -> widgets.HTML:
    escaped = html.escape(text)
    return widgets.HTML(
        f"<b>{escaped}</b>" if bold else escaped, layout=widgets.Layout(width=width)
    )


class JobRow(widgets.HBox):
    """One job: escaped cells, then Cancel (while it runs) and Retry (once it failed)."""

    def __init__(self, board: JobBoard, job: dict[str, Any]) -> None:
        self.job_id = str(job["id"])
        self.cells = {name: _cell("", width) for name, width in COLUMNS}
        # Wide enough for their words with JupyterLab's padding ("Cancel" was cut to "Ca…").
        self.cancel_button = widgets.Button(description="Cancel", layout=_button_layout())
        self.retry_button = widgets.Button(description="Retry", layout=_button_layout())
        self.cancel_button.on_click(lambda _b: board.act("cancel", self.job_id))
        self.retry_button.on_click(lambda _b: board.act("retry", self.job_id))
        super().__init__([*self.cells.values(), self.cancel_button, self.retry_button])
        self.show(job)

    def show(self, job: dict[str, Any]) -> None:
        self.texts = row_cells(job)
        for name, text in self.texts.items():
            self.cells[name].value = html.escape(text)
        may = job.get("actions") or []
        self.cancel_button.disabled = "cancel" not in may
        self.retry_button.disabled = "retry" not in may

    def close(self) -> None:
        for child in (*self.cells.values(), self.cancel_button, self.retry_button):
            child.close()
        super().close()


class JobBoard(widgets.VBox):
    """Jobs newest first, filtered by state (and ``user``), kept current by the change feed.

    ``start=False`` builds the table once without the background thread.
    """

    def __init__(
        self,
        state: str | None = None,
        user: str | None = None,
        limit: int = 50,
        *,
        transport: Any = None,
        interval: float = 10.0,
        poll_timeout: float = 10.0,
        start: bool = True,
        **kwargs: Any,
    ) -> None:
        if transport is None:
            from ..client.transport import connect

            transport = connect()
        self.transport = transport
        self.user = user
        self.limit = limit
        self.rows: dict[str, JobRow] = {}
        self._lock = threading.RLock()

        options = [("all states", ""), *((s, s) for s in ALL_STATES)]
        if state and state not in ALL_STATES:
            options.append((state, state))  # a comma list such as "queued,running"
        self.state_filter = widgets.Dropdown(
            options=options, value=state or "", description="state"
        )
        self.refresh_button = widgets.Button(
            description="Refresh", icon="refresh", layout=widgets.Layout(width="8em")
        )
        self.refresh_button.on_click(lambda _b: self.reload())
        self.count_label = widgets.Label("")
        self.notice_label = widgets.Label("")
        self.notice_label.style.text_color = "#c62828"
        header = widgets.HBox([_cell(name, width, bold=True) for name, width in COLUMNS])
        self.rows_box = widgets.VBox([])
        controls = widgets.HBox([self.state_filter, self.refresh_button, self.count_label])
        super().__init__([controls, self.notice_label, header, self.rows_box], **kwargs)
        self.state_filter.observe(lambda _change: self.reload(), names="value")
        self._follower = Follower(
            transport,
            wants=lambda changes: any(c.get("kind") != "logs" for c in changes),
            refresh=self._refresh,
            report=self._report,
            interval=interval,
            poll_timeout=poll_timeout,
            min_gap=1.0,
            name="trainorch-board",
        )
        if start:
            self._follower.start()
        else:
            self.reload()

    @property
    def thread(self) -> threading.Thread:
        return self._follower.thread

    @property
    def state(self) -> str | None:
        return self.state_filter.value or None

    def _refresh(self) -> bool:
        listing = self.transport.list(state=self.state, user=self.user, limit=self.limit)
        self.apply(listing.get("jobs") or [], listing.get("total"))
        return True

    def reload(self) -> None:
        """Read the listing now (on the calling thread); errors show as one sentence."""
        try:
            self._refresh()
        except TrainOrchError as err:
            self._report(first_line(err))
        else:
            self._report("")

    def apply(self, jobs: list[dict[str, Any]], total: int | None = None) -> None:
        """Show ``jobs`` (job JSON, in order), reusing the rows of jobs already shown."""
        with self._lock:
            fresh: dict[str, JobRow] = {}
            for job in jobs:
                row = self.rows.pop(str(job["id"]), None)
                if row is None:
                    row = JobRow(self, job)
                else:
                    row.show(job)
                fresh[row.job_id] = row
            for gone in self.rows.values():
                gone.close()
            self.rows = fresh
            self.rows_box.children = tuple(fresh.values())
            total = len(jobs) if total is None else total
            self.count_label.value = f"{len(jobs)} of {total} job(s)"

    def act(self, action: str, job_id: str) -> None:
        """``cancel`` or ``retry`` one job, then show the table as it is now."""
        try:
            getattr(self.transport, action)(job_id)
        except TrainOrchError as err:
            self._report(first_line(err))
            return
        self.reload()

    def _report(self, message: str) -> None:
        self.notice_label.value = message

    def close(self) -> None:
        follower = getattr(self, "_follower", None)
        if follower is not None:
            follower.stop()
        for row in getattr(self, "rows", {}).values():
            row.close()
        super().close()


def _button_layout() -> widgets.Layout:
    return widgets.Layout(width="auto", min_width="6.5em", flex="0 0 auto")
