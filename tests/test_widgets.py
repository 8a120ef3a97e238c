"""The notebook widgets, driven by a scripted job stream, plus one real in-process orchestrator."""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

import pytest

from jupyter_trainorch.client.job import Job
from jupyter_trainorch.client.transport import TrainOrchError
from jupyter_trainorch.contract.states import TERMINAL_STATES
from jupyter_trainorch.orchestrator.access import Caller, actions
from jupyter_trainorch.package import read_modules, read_package
from jupyter_trainorch.widgets import JobBoard, JobWidget, SubmitForm


def job_json(
    state: str, *, step=None, total=None, attempts=(), error=None, name="demo", job_id="j1", **extra
):
    fraction = step / total if step is not None and total else None
    return {
        "id": job_id, "name": name, "user": "ada", "state": state, "priority": 100,
        "priority_class": "normal", "resources": {"gpus": 1, "cpus": 1, "memory": 0},
        "attempts": [{"n": n, "state": s} for n, s in attempts], "max_retries": 2, "attempts_allowed": 3,
        "progress": {"step": step, "total": total, "fraction": fraction, "message": None},
        "error": error, "created": "2026-01-02T03:04:05.123Z", "started": None, "ended": None,
        # What the service works out for the caller, by its own rules.
        "terminal": state in TERMINAL_STATES, "actions": actions(Caller("ada"), {"user": "ada", "state": state}),
        **extra,
    }  # fmt: skip


# queued -> running 1/3, 2/3 -> retrying -> running (attempt 2) -> succeeded, with log lines per step.
STREAM = [
    (job_json("queued"), []),
    (job_json("running", step=1, total=3, attempts=[(1, "running")]), [(1, "epoch 0")]),
    (job_json("running", step=2, total=3, attempts=[(1, "running")]), [(1, "epoch 1")]),
    (
        job_json("retrying", step=2, total=3, attempts=[(1, "failed")], error="RuntimeError: boom"),
        [(1, "boom")],
    ),
    (
        job_json("running", step=1, total=3, attempts=[(1, "failed"), (2, "running")]),
        [(2, "epoch 0")],
    ),
    (
        job_json("succeeded", step=3, total=3, attempts=[(1, "failed"), (2, "succeeded")]),
        [(2, "done")],
    ),
]


class FakeStream:
    """The transport methods the widgets use, answering from a scripted job stream.

    Each ``events`` call delivers one change and moves the job one step along ``steps``.
    """

    def __init__(self, steps=STREAM, jobs: list[dict[str, Any]] | None = None) -> None:
        self.steps = steps
        self.step = 0
        self.lines: list[dict[str, Any]] = []
        self.calls: list[tuple[Any, ...]] = []
        self.jobs = jobs or []
        self.lock = threading.Lock()
        self._add_lines(0)

    def _add_lines(self, index: int) -> None:
        for attempt, text in self.steps[index][1]:
            self.lines.append({"id": len(self.lines) + 1, "attempt": attempt, "text": text})

    def events(self, after: int = 0, timeout: float = 0.0) -> dict[str, Any]:
        with self.lock:
            probe = after == 0 and not timeout  # where the feed is now, asked once at start
            if probe or self.step + 1 >= len(self.steps):
                time.sleep(min(timeout, 0.02))
                return {"changes": [], "last": max(after, self.step)}
            self.step += 1
            self._add_lines(self.step)
            seq = self.step
        return {"changes": [{"seq": seq, "kind": "job", "job_id": "j1"}], "last": seq}

    def get(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.steps[self.step][0])

    def logs(self, job_id: str, attempt=None, after: int = 0, wait: float = 0.0) -> dict[str, Any]:
        with self.lock:
            lines = [line for line in self.lines if line["id"] > after]
        return {
            "lines": lines,
            "next": lines[-1]["id"] if lines else after,
            "state": "",
            "finished": False,
        }

    def cancel(self, job_id: str) -> dict[str, Any]:
        self.calls.append(("cancel", job_id))
        return job_json("cancelled", job_id=job_id)

    def retry(self, job_id: str) -> dict[str, Any]:
        self.calls.append(("retry", job_id))
        return job_json("queued", job_id=job_id)

    def list(self, state=None, user=None, limit=100, offset=0) -> dict[str, Any]:
        jobs = [
            j
            for j in self.jobs
            if (not state or j["state"] in state.split(",")) and (not user or j["user"] == user)
        ]
        return {"jobs": jobs[:limit], "total": len(jobs), "limit": limit, "offset": offset}

    def templates(self) -> dict[str, Any]:
        torch = {"name": "torch", "description": "one GPU", "params": {"lr": 0.0003, "epochs": 5, "tag": "x"},
                 "resources": {"gpus": 1, "cpus": 4.0, "memory": 16 * 2**30}, "retries": {"max": 2},
                 "priority": 100, "timeout": None}  # fmt: skip
        return {"templates": [{"name": "python-cell", "params": {}}, torch], "errors": {}}

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("submit", body))
        if body.get("overrides", {}).get("gpus") == "16":
            raise TrainOrchError("the job asks for 16 GPUs but the largest worker has 8")
        return job_json("succeeded", job_id="new", name=body["name"])


def lines(*texts: str, attempt: int = 1) -> list[dict[str, Any]]:
    return [{"id": i + 1, "attempt": attempt, "text": t} for i, t in enumerate(texts)]


def view(stream: FakeStream | None = None, **kwargs: Any) -> JobWidget:
    stream = stream or FakeStream()
    return JobWidget(Job("j1", stream), start=False, **kwargs)


def test_state_progress_and_attempts_follow_the_stream() -> None:
    widget = view()
    seen = []
    for job, new in STREAM:
        widget.apply(job, [{"id": 0, "attempt": a, "text": t} for a, t in new])
        bar = widget.progress_bar
        seen.append((widget.state_label.value, bar.value, bar.max, widget.progress_text.value,
                     widget.attempt_label.value, widget.cancel_button.disabled))  # fmt: skip
    assert seen == [
        ("queued", 0.0, 1.0, "", "no attempt yet, up to 3", False),
        ("running", 1.0, 3.0, "1/3 (33%)", "attempt 1 of 3", False),
        ("running", 2.0, 3.0, "2/3 (67%)", "attempt 1 of 3", False),
        ("retrying", 2.0, 3.0, "2/3 (67%)", "attempt 1 of 3", False),
        ("running", 1.0, 3.0, "1/3 (33%)", "attempt 2 of 3", False),
        ("succeeded", 3.0, 3.0, "3/3 (100%)", "attempt 2 of 3", True),
    ]
    assert widget.progress_bar.bar_style == "success"
    assert widget.log_lines == [
        "epoch 0",
        "epoch 1",
        "boom",
        "--- attempt 2 ---",
        "epoch 0",
        "done",
    ]
    assert "<b>demo</b>" in widget.title.value and "j1" in widget.title.value


def test_a_waiting_job_says_where_it_stands_and_when_it_should_start() -> None:
    from datetime import datetime, timezone

    from jupyter_trainorch.client.job import schedule_text

    widget = view()
    start = datetime(2026, 12, 6, 14, 5, 10, tzinfo=timezone.utc)
    local = start.astimezone().strftime("%H:%M:%S")
    waiting = {"state": "queued", "name": "demo", "queue_position": 3,
               "estimated_start": "2026-12-06T14:05:10Z",
               "wait_reason": "behind 2 jobs that go first; <every> worker is busy"}  # fmt: skip
    widget.apply(waiting, [])
    expected = (
        f"#3 in the queue, starts ~{local}: behind 2 jobs that go first; <every> worker is busy"
    )
    assert schedule_text(waiting) == expected
    assert widget.schedule_label.value == expected.replace("<", "&lt;").replace(">", "&gt;")
    widget.apply({"state": "running", "name": "demo", "estimated_end": "2026-12-06T14:05:10Z"}, [])
    assert widget.schedule_label.value == f"ends ~{local}"
    widget.apply({"state": "succeeded", "name": "demo"}, [])
    assert widget.schedule_label.value == ""


def test_the_error_of_a_retrying_job_is_shown_until_it_succeeds() -> None:
    widget = view()
    widget.apply(STREAM[3][0], [])
    assert widget.error_label.value == "RuntimeError: boom"
    widget.apply(STREAM[5][0], [])
    assert widget.error_label.value == ""


def test_the_log_view_keeps_the_last_lines_only() -> None:
    widget = view(max_lines=10)
    widget.apply(job_json("running"), lines(*(f"line {i}" for i in range(25))))
    assert widget.log_lines == [f"line {i}" for i in range(15, 25)]
    assert "line 24" in widget.log_view.value and "line 14" not in widget.log_view.value


def test_log_text_and_names_are_escaped() -> None:
    widget = view()
    widget.apply(job_json("running", name="<b>x</b>"), lines("<img src=x onerror=alert(1)>"))
    assert "&lt;img src=x onerror=alert(1)&gt;" in widget.log_view.value
    assert "<img" not in widget.log_view.value
    assert "&lt;b&gt;x&lt;/b&gt;" in widget.title.value


def test_cancel_calls_the_transport_and_disables_the_button() -> None:
    stream = FakeStream()
    widget = view(stream)
    widget.apply(job_json("running", step=1, total=3), [])
    assert not widget.cancel_button.disabled and widget.cancel_button.layout.display == ""
    widget.cancel_button.click()
    assert stream.calls == [("cancel", "j1")]
    assert widget.state_label.value == "cancelled" and widget.cancel_button.disabled
    assert widget.cancel_button.layout.display == "none"  # nothing left to cancel


def test_a_failed_cancel_is_one_sentence() -> None:
    stream = FakeStream()
    stream.cancel = lambda job_id: (_ for _ in ()).throw(
        TrainOrchError("job j1 has already succeeded", 409)
    )
    widget = view(stream)
    widget.apply(job_json("running"), [])
    widget.cancel_button.click()
    assert widget.notice_label.value == "job j1 has already succeeded"
    assert not widget.cancel_button.disabled


def test_the_thread_follows_the_stream_and_ends_when_the_job_is_final() -> None:
    stream = FakeStream()
    widget = JobWidget(Job("j1", stream), interval=30.0)
    states: list[str] = []
    widget.state_label.observe(lambda change: states.append(change["new"]), names="value")
    widget.thread.join(timeout=20)
    assert not widget.thread.is_alive()
    assert widget.state_label.value == "succeeded"
    assert (widget.progress_bar.value, widget.progress_bar.max) == (3.0, 3.0)
    assert widget.attempt_label.value == "attempt 2 of 3"
    assert widget.log_lines[-2:] == ["epoch 0", "done"]
    assert states[-4:] == ["running", "retrying", "running", "succeeded"]
    assert widget.cancel_button.disabled


def test_closing_the_widget_stops_its_thread() -> None:
    stream = FakeStream(steps=[STREAM[1]])  # stays running forever
    widget = JobWidget(Job("j1", stream), interval=30.0, poll_timeout=0.1)
    deadline = time.monotonic() + 10
    while widget.state_label.value != "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert widget.thread.is_alive()
    widget.close()
    widget.thread.join(timeout=5)
    assert not widget.thread.is_alive()


def test_the_text_form_is_the_job_summary(capsys: pytest.CaptureFixture[str]) -> None:
    widget = view()
    widget.apply(STREAM[1][0], [])
    bundle = widget._repr_mimebundle_()
    assert (
        bundle["text/plain"]
        == "Job j1 'demo': running, priority normal, 1 attempt(s), 2 retries allowed"
    )
    assert "application/vnd.jupyter.widget-view+json" in bundle
    # Outside a kernel a Job displays as text, and no widget (or thread) is made.
    Job("j1", FakeStream(), STREAM[1][0])._ipython_display_()
    assert "Job j1 'demo': queued" in capsys.readouterr().out


def test_in_a_kernel_a_job_displays_as_a_live_widget(monkeypatch: pytest.MonkeyPatch) -> None:
    import IPython.display

    import jupyter_trainorch.widgets as module

    shown = []
    monkeypatch.setattr(module, "can_render", lambda: True)
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: shown.append(obj))
    stream = FakeStream(steps=[STREAM[5]])
    Job("j1", stream, STREAM[5][0])._ipython_display_()
    (widget,) = shown
    assert isinstance(widget, JobWidget) and widget.state_label.value == "succeeded"
    widget.thread.join(timeout=10)
    assert not widget.thread.is_alive()


BOARD_JOBS = [
    job_json("running", job_id="a", name="<b>bold</b>", step=1, total=4),
    job_json("failed", job_id="b", name="broken"),
    job_json("succeeded", job_id="c", name="fine"),
]


def test_the_board_lists_jobs_and_filters_by_state() -> None:
    stream = FakeStream(jobs=BOARD_JOBS)
    board = JobBoard(transport=stream, start=False)
    assert list(board.rows) == ["a", "b", "c"]
    assert board.count_label.value == "3 of 3 job(s)"
    row = board.rows["a"]
    assert row.texts["progress"] == "25%" and row.texts["created"] == "2026-01-02 03:04:05"
    assert row.cells["name"].value == "&lt;b&gt;bold&lt;/b&gt;"
    assert not row.cancel_button.disabled and row.retry_button.disabled
    assert board.rows["b"].cancel_button.disabled and not board.rows["b"].retry_button.disabled
    board.state_filter.value = "failed"
    assert list(board.rows) == ["b"] and board.count_label.value == "1 of 1 job(s)"
    assert row.comm is None  # the rows of jobs no longer shown are closed
    board.state_filter.value = ""
    assert list(board.rows) == ["a", "b", "c"]


def test_board_buttons_cancel_and_retry() -> None:
    stream = FakeStream(jobs=BOARD_JOBS)
    board = JobBoard(transport=stream, start=False)
    board.rows["a"].cancel_button.click()
    board.rows["b"].retry_button.click()
    assert stream.calls == [("cancel", "a"), ("retry", "b")]
    stream.retry = lambda job_id: (_ for _ in ()).throw(
        TrainOrchError("job b depends on x, which has failed", 409)
    )
    board.rows["b"].retry_button.click()
    assert board.notice_label.value == "job b depends on x, which has failed"


def test_the_board_refreshes_from_its_thread() -> None:
    stream = FakeStream(jobs=[])
    board = JobBoard(transport=stream, interval=0.2, poll_timeout=0.1)
    try:
        stream.jobs = BOARD_JOBS
        deadline = time.monotonic() + 10
        while len(board.rows) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(board.rows) == ["a", "b", "c"]
    finally:
        board.close()
    board.thread.join(timeout=5)
    assert not board.thread.is_alive()


def test_the_form_builds_the_submit_body() -> None:
    stream = FakeStream(steps=[STREAM[5]])
    form = SubmitForm(
        "torch", source="print(lr, epochs, tag, note)", transport=stream, name="run-1"
    )
    assert {k: f.value for k, f in form.param_fields.items()} == {
        "lr": "0.0003",
        "epochs": "5",
        "tag": "x",
    }
    assert form.resource_fields["memory"].placeholder == "16GiB"
    form.param_fields["lr"].value = "1e-3"
    form.param_fields["epochs"].value = "7"
    form.extra_params.value = "note='a b' seed=1"
    form.resource_fields["gpus"].value = "2"
    form.resource_fields["retries"].value = "1"
    form.priority.value = "high"
    form.after.value = "prep, data"
    body, package = form.build_request()
    assert read_package(package) == ({}, {}) and not read_modules(package)
    assert {k: v for k, v in body.items() if k != "workdir"} == {
        "template": "torch", "name": "run-1",
        "params": {"lr": 0.001, "epochs": 7, "tag": "x", "note": "a b", "seed": 1},
        "overrides": {"gpus": "2", "retries": "1", "priority": "high"},
        "source": "print(lr, epochs, tag, note)", "depends_on": ["prep", "data"], "outputs": [],
    }  # fmt: skip
    job = form.submit()
    # Who submits is the service's to know (from authentication), never the request's.
    assert job.id == "new" and "user" not in stream.calls[0][1]
    (shown,) = form.jobs_box.children
    assert isinstance(shown, JobWidget) and shown.job.id == "new"
    shown.thread.join(timeout=10)


def test_form_mistakes_are_one_sentence() -> None:
    stream = FakeStream()
    form = SubmitForm(source="print(1)", transport=stream)
    form.extra_params.value = "lr0.1"
    assert form.submit() is None
    assert form.error_label.value == "'lr0.1' is not a key=value pair"
    form.extra_params.value = ""
    form.resource_fields["gpus"].value = "16"
    assert form.submit() is None
    assert form.error_label.value == "the job asks for 16 GPUs but the largest worker has 8"
    assert not form.jobs_box.children

    bare = SubmitForm(transport=stream)
    assert bare.submit_button.disabled
    assert bare.error_label.value.startswith("a widget cannot read the cell it was created in")
    assert "\n" not in bare.error_label.value


FACTOR = 10


def test_the_form_submits_a_function_with_its_variables() -> None:
    offset = 3

    def train():
        print(lr * FACTOR + offset)  # noqa: F821 - lr is a template param, set on the worker

    form = SubmitForm("torch", fn=train, transport=FakeStream())
    body, package = form.build_request()
    assert body["name"] == "train"
    assert body["source"].startswith("def train():") and body["source"].endswith("\ntrain()\n")
    variables, _files = read_package(package)
    assert sorted(variables) == ["FACTOR", "offset"]

    def needs(x):
        return x

    assert SubmitForm(fn=needs, transport=FakeStream()).error_label.value.startswith(
        "needs() must run without"
    )


def test_a_real_job_shows_live_in_the_widget(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Through the user's own service, started for this test's data folder."""
    from jupyter_trainorch.client.job import submit

    monkeypatch.setenv("TRAINORCH_WORKERS", "1")
    monkeypatch.setenv("TRAINORCH_GPUS_PER_WORKER", "1")
    widget = None
    try:
        job = submit({
            "template": "python-cell", "name": "w",
            "source": "import jupyter_trainorch, time\nfor i in range(3):\n"
                      "    jupyter_trainorch.progress(i + 1, 3)\n    print('step', i)\n    time.sleep(0.2)",
        })  # fmt: skip
        widget = JobWidget(job, interval=2.0)
        deadline = time.monotonic() + 120
        while widget.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert widget.state_label.value == "succeeded", widget.notice_label.value
        assert (widget.progress_bar.value, widget.progress_bar.max) == (3.0, 3.0)
        assert widget.progress_text.value.startswith("3/3")
        assert widget.log_lines == ["step 0", "step 1", "step 2"]
        assert widget.attempt_label.value == "attempt 1 of 1" and widget.cancel_button.disabled
    finally:
        if widget is not None:
            widget.close()


@pytest.mark.parametrize("value", ["lots", "nan", "0", "-1", "1e9"])
def test_a_bad_capture_limit_is_one_sentence(monkeypatch, value):
    from jupyter_trainorch.client.capture import capture_variables
    from jupyter_trainorch.spec import SpecError

    monkeypatch.setenv("TRAINORCH_MAX_CAPTURE_MB", value)
    with pytest.raises(SpecError, match="^TRAINORCH_MAX_CAPTURE_MB must be a number of megabytes"):
        capture_variables("print(x)", {"x": 1})


def test_the_environment_snapshot_is_listed_once_until_packages_change(monkeypatch, tmp_path):
    from importlib import metadata

    import jupyter_trainorch.package as package

    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(package, "_snapshot", None)
    calls = []
    real = metadata.distributions
    monkeypatch.setattr(metadata, "distributions", lambda: calls.append(1) or real())
    first = package.environment_snapshot()
    assert package.environment_snapshot() is first and len(calls) == 1
    (tmp_path / "notebook.txt").write_text("a file beside the notebook changes nothing")
    assert package.environment_snapshot() is first and len(calls) == 1
    time.sleep(0.01)
    (site / "broken-0.1.dist-info").mkdir()  # a folder without metadata is skipped
    installed = site / "newpkg-1.0.dist-info"  # what pip install leaves
    installed.mkdir()
    (installed / "METADATA").write_text("Metadata-Version: 2.1\nName: newpkg\nVersion: 1.0\n")
    again = package.environment_snapshot()
    assert len(calls) == 2 and "newpkg==1.0" in again.splitlines() and "newpkg" not in first


def test_an_open_file_is_refused_not_copied(tmp_path):
    from jupyter_trainorch.client.capture import capture_variables
    from jupyter_trainorch.spec import SpecError

    with open(tmp_path / "data.txt", "w+") as handle:
        with pytest.raises(SpecError) as err:
            capture_variables("handle.write('x')", {"handle": handle})
    assert str(err.value) == (
        "variable 'handle' is an open file, which cannot be sent to the worker; "
        "open it inside the cell instead"
    )


def test_a_job_whose_log_was_printed_is_shown_without_it(monkeypatch):
    """``%%train --wait`` prints the whole log; the handle it returns then shows as text,
    not as a widget with the log's tail again."""
    import jupyter_trainorch.widgets as live
    from jupyter_trainorch.client.job import Job

    widgets_shown = []
    monkeypatch.setattr(live, "show_job", lambda job: widgets_shown.append(job.id) or True)

    class Answers:
        def get(self, job_id):
            return job_json("succeeded", job_id=job_id)

    printed, fresh = Job("j1", Answers()), Job("j2", Answers())
    printed.log_printed = True
    printed._ipython_display_()
    fresh._ipython_display_()
    assert widgets_shown == ["j2"]
