"""The sidebar panel in a real JupyterLab driven by headless Debian Chromium.

A notebook cell runs ``%%train``; the panel must show the job, its progress and log
while it runs, the retry counter after a failed first attempt, escape HTML in logs,
and stop the job from its cancel button. It also shows who the user is, queue
positions, other users' jobs as queue rows only, and reconnects by itself when the
trainorch service restarts. A second lab's service scales its pool with the queue (the
cluster strip shows the decision and the GPUs busy and idle) and sends failure alerts to
the job's owner (a notification in the owner's JupyterLab only).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from conftest import (
    CHROMIUM,
    free_port,
    pid_alive,
    service_env,
    stop_process_group,
    stop_services_under,
)

pytestmark = pytest.mark.browser
DOCS = Path(__file__).resolve().parent.parent / "docs"
HOSTILE = "<img src=x onerror=alert(1)>"
CELL = f"""%%train --name browser-demo --retries 2 marker={{marker!r}}
import os, pathlib, time, jupyter_trainorch
print({HOSTILE!r}, flush=True)
print("pid", os.getpid(), flush=True)
m = pathlib.Path(marker)
if not m.exists():
    m.write_text("1")
    raise RuntimeError("the first attempt fails")
for i in range(600):
    jupyter_trainorch.progress(i + 1, 600)
    print("tick", i, flush=True)
    time.sleep(0.2)
"""


class Lab:
    def __init__(self, root: Path, data_dir: Path) -> None:
        self.root = root
        self.data_dir = data_dir  # the service's TRAINORCH_DATA_DIR
        self.port = free_port()
        self.token = secrets.token_hex(8)
        self.url = f"http://127.0.0.1:{self.port}"

    def api(self, path: str, method: str = "GET", body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}/trainorch/api/{path}", data=data, method=method
        )
        request.add_header("Authorization", f"token {self.token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


@contextlib.contextmanager
def _running_lab(root: Path, **settings: str) -> Iterator[Lab]:
    """JupyterLab (and through it the trainorch service) with the test's settings."""
    work = root / "work"
    work.mkdir()
    env = service_env(root)
    lab = Lab(work, Path(env["TRAINORCH_DATA_DIR"]))
    env.update(
        JUPYTERLAB_SETTINGS_DIR=str(root / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(root / "workspaces"),
        **settings,
    )
    log = open(root / "lab.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={lab.port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={lab.token}", f"--ServerApp.root_dir={work}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                lab.api("templates")
                break
            except OSError:
                assert proc.poll() is None, (root / "lab.log").read_text()[-3000:]
                time.sleep(0.5)
        yield lab
    finally:
        stop_process_group(proc, grace=30)
        stop_services_under(root)
        log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with _running_lab(tmp_path_factory.mktemp("lab")) as lab:
        yield lab


@pytest.fixture(scope="module")
def scaling_lab(tmp_path_factory):
    """A service whose pool of one-GPU, one-slot workers grows from 1 to 2 with the queue,
    and whose alert rule tells a job's owner in JupyterLab when the job fails."""
    settings = {
        "TRAINORCH_SLOTS_PER_WORKER": "1",
        "TRAINORCH_AUTOSCALE_MINIMUM": "1",
        "TRAINORCH_AUTOSCALE_MAXIMUM": "2",
        "TRAINORCH_AUTOSCALE_GRACE": "2",
        "TRAINORCH_ALERTS": json.dumps([{"on": "failed", "to": "owner"}]),
        "TRAINORCH_MLFLOW": "off",
    }
    with _running_lab(tmp_path_factory.mktemp("scaling-lab"), **settings) as lab:
        yield lab


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.dialogs = dialogs  # type: ignore[attr-defined]
        try:
            yield page
        finally:
            browser.close()


def test_panel_follows_a_notebook_job_and_cancels_it(lab, page, tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("%load_ext jupyter_trainorch"),
        nbformat.v4.new_code_cell(CELL.format(marker=str(tmp_path / "marker"))),
    ]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(notebook, lab.root / "demo.ipynb")

    page.goto(f"{lab.url}/lab/tree/demo.ipynb?token={lab.token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    cells = page.locator(".jp-Notebook .jp-Cell")
    # Keystrokes before the kernel is connected run nothing: repeat until the first cell ran.
    # Ctrl+Enter keeps the first cell selected, so a repeat can never run the `%%train` cell early.
    deadline = time.monotonic() + 90
    while not re.search(r"\[\d+\]", prompt := cells.first.locator(".jp-InputPrompt").inner_text()):
        assert time.monotonic() < deadline, "the notebook's kernel never ran the first cell"
        if "*" not in prompt:  # not queued or running yet: the keystroke was lost
            cells.first.click()
            page.keyboard.press("Control+Enter")
        page.wait_for_timeout(1000)
    cells.nth(1).click()
    page.keyboard.press("Shift+Enter")

    _open_panel(page)
    panel = page.locator("#trainorch-panel")
    named = panel.locator("[data-job-id]", has_text="browser-demo")
    named.first.wait_for(timeout=60_000)
    job_id = named.first.get_attribute("data-job-id")
    # Rows move between groups as their state changes: follow this job's row by its id.
    row = panel.locator(f"[data-job-id='{job_id}']")

    # The first attempt fails; the second runs: the counter shows it without a reload.
    page.wait_for_function(
        "id => document.querySelector(`[data-job-id='${id}'] .trainorch-attempts`)?.textContent.trim() === '2/3'",
        arg=job_id, timeout=60_000,
    )  # fmt: skip
    state = row.locator(".trainorch-state")
    page.wait_for_function(
        "id => document.querySelector(`[data-job-id='${id}'] .trainorch-state`)?.textContent.trim() === 'running'",
        arg=job_id, timeout=30_000,
    )  # fmt: skip
    progress = row.locator(".trainorch-progress")
    first = progress.inner_text()
    page.wait_for_function(
        "([id, before]) => { const t = document.querySelector(`[data-job-id='${id}'] .trainorch-progress`)?.textContent;"
        " return t && t !== before && /\\d+\\s*\\/\\s*600/.test(t); }",
        arg=[job_id, first], timeout=20_000,
    )  # fmt: skip

    row.locator("[data-action='open']").click()
    # The detail opens in a main-area tab, not in the sidebar.
    detail = page.locator("#jp-main-dock-panel .trainorch-detail")
    detail.locator(".trainorch-log-line", has_text="tick").first.wait_for(timeout=20_000)
    ticks_before = detail.locator(".trainorch-log-line", has_text="tick").count()
    page.wait_for_function(
        "n => document.querySelectorAll('.trainorch-detail .trainorch-log-line').length > n", arg=ticks_before,
        timeout=20_000,
    )  # fmt: skip
    hostile = detail.locator(".trainorch-log-line", has_text=HOSTILE)
    assert hostile.count() >= 1
    assert detail.locator(".trainorch-log img").count() == 0
    assert page.dialogs == []  # type: ignore[attr-defined]

    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "panel.png"))

    pid = [int(line.split()[1]) for line in _log_lines(lab, job_id) if line.startswith("pid ")][-1]
    # Cancel asks first: keeping the job leaves it running; confirming cancels it.
    row.locator("[data-action='cancel']").click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=10_000)
    assert "browser-demo" in dialog.inner_text()
    dialog.locator(".jp-Dialog-button.jp-mod-reject").click()
    dialog.wait_for(state="detached", timeout=10_000)
    page.wait_for_timeout(1000)
    assert lab.api(f"jobs/{job_id}")["state"] == "running"
    assert pid_alive(pid)
    row.locator("[data-action='cancel']").click()
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
    page.wait_for_function(
        "id => document.querySelector(`[data-job-id='${id}'] .trainorch-state`)?.textContent.trim() === 'cancelled'",
        arg=job_id, timeout=30_000,
    )  # fmt: skip
    assert state.inner_text().strip() == "cancelled"
    assert lab.api(f"jobs/{job_id}")["state"] == "cancelled"
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(pid)


def _open_panel(page) -> None:
    """Show the sidebar panel; the restored layout may already show it (a click would hide it)."""
    tab = page.locator("[title='Training jobs']").first
    tab.wait_for(timeout=60_000)
    page.wait_for_timeout(1500)  # let JupyterLab finish restoring the layout
    if not page.locator("#trainorch-panel").is_visible():
        tab.click()
    page.locator("#trainorch-panel").wait_for(state="visible", timeout=30_000)


def _open_job_tab(lab: Lab, page, job_id: str):
    """Load JupyterLab, find the job's row in the panel and open its detail tab: (row, detail)."""
    page.goto(f"{lab.url}/lab?token={lab.token}")
    _open_panel(page)
    row = page.locator(f"#trainorch-panel [data-job-id='{job_id}']")
    row.wait_for(timeout=60_000)
    row.locator("[data-action='open']").click()
    detail = page.locator(f"#jp-main-dock-panel .trainorch-detail[data-detail-job-id='{job_id}']")
    return row, detail


def _log_lines(lab: Lab, job_id: str) -> list[str]:
    return [line["text"] for line in lab.api(f"jobs/{job_id}/logs")["lines"]]


TRAINING = "import jupyter_trainorch, time\nfor i in range(1, 21):\n    jupyter_trainorch.progress(i, 20, loss=lr / i)\n    time.sleep(0.05)\n"


def test_metric_charts_and_the_compare_view(lab, page):
    ids = [
        lab.api(
            "jobs",
            "POST",
            {"template": "python-cell", "source": TRAINING, "params": {"lr": lr}, "name": name},
        )["id"]
        for name, lr in (("chart-a", 0.1), ("chart-b", 0.5))
    ]
    deadline = time.monotonic() + 90
    while {lab.api(f"jobs/{i}")["state"] for i in ids} != {"succeeded"}:
        assert time.monotonic() < deadline, "the training jobs did not finish"
        time.sleep(0.5)

    page.goto(f"{lab.url}/lab?token={lab.token}")
    _open_panel(page)
    panel = page.locator("#trainorch-panel")
    for job_id in ids:
        panel.locator(f"[data-job-id='{job_id}']").wait_for(timeout=60_000)

    # The job's loss curve, drawn from its MLflow attempt run: one line of 20 points.
    panel.locator(f"[data-job-id='{ids[0]}'] [data-action='open']").click()
    page.locator(
        ".trainorch-detail .trainorch-chart[data-metric='loss'] .u-legend [data-attempt='1'][data-points='20']"
    ).wait_for(timeout=60_000)
    # Its MLflow run opens through this server, which starts the MLflow UI on first use.
    job = lab.api(f"jobs/{ids[0]}")
    link = page.locator(".trainorch-detail [data-field='mlflow'] a.trainorch-mlflow")
    href = link.get_attribute("href") or ""
    expected = f"/trainorch/mlflow?experiment={job['mlflow']['experiment_id']}&run={job['mlflow']['run_id']}"
    assert href.endswith(expected), href
    ui = page.request.get(href, timeout=120_000)
    assert ui.status == 200 and "/mlflow/" in ui.url and "<title>MLflow</title>" in ui.text()

    for job_id in ids:
        panel.locator(f"[data-job-id='{job_id}'] input[data-action='select']").check()
    panel.locator("[data-action='compare']").click()
    compare = page.locator(".trainorch-compare")
    compare.locator(".trainorch-compare-table").wait_for(timeout=30_000)
    lr = compare.locator("td[data-column='param:lr']").all_inner_texts()
    assert "0.1" in lr and "0.5" in lr
    for job_id in ids:
        compare.locator(f".trainorch-chart .u-legend [data-job-id='{job_id}']").wait_for(
            timeout=30_000
        )
    page.screenshot(path=str(DOCS / "compare.png"))


def _submit(lab: Lab, name: str, source: str, gpus: int = 0) -> str:
    body = {"template": "python-cell", "source": source, "name": name, "overrides": {"gpus": gpus}}
    return lab.api("jobs", "POST", body)["id"]


def _wait_api(lab: Lab, job_id: str, check, what: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while not check(job := lab.api(f"jobs/{job_id}")):
        assert time.monotonic() < deadline, f"job {job_id}: {what} (it is {job['state']})"
        time.sleep(0.3)
    return job


def test_mine_filter_and_queue_position(lab, page):
    me = lab.api("me")
    # The lab's cluster has one GPU: the second one-GPU job waits first in the queue.
    blocker = _submit(lab, "gpu-blocker", "import time\ntime.sleep(300)", gpus=1)
    waiter = _submit(lab, "gpu-waiter", "print('ran')", gpus=1)
    try:
        _wait_api(lab, blocker, lambda j: j["state"] == "running", "never ran")
        _wait_api(lab, waiter, lambda j: j.get("queue_position") == 1, "has no queue position 1")

        page.goto(f"{lab.url}/lab?token={lab.token}")
        _open_panel(page)
        panel = page.locator("#trainorch-panel")
        # The user comes from GET me, not from jobs seen in this browser.
        # The first read of GET me waits behind the lab's start-up on a loaded machine.
        panel.locator(".trainorch-header [data-field='me']", has_text=me["name"]).wait_for(
            timeout=60_000
        )
        mine = panel.locator("[data-action='user-mine']")
        page.wait_for_function(
            "() => !document.querySelector(\"[data-action='user-mine']\").disabled", timeout=30_000
        )
        assert me["name"] in (mine.get_attribute("title") or "")
        mine.click()
        page.wait_for_function(
            "name => document.querySelector('.trainorch-filter-user').value === name", arg=me["name"], timeout=10_000,
        )  # fmt: skip
        assert "trainorch-mod-active" in (mine.get_attribute("class") or "")
        # The Dask dashboard link goes through this server (jupyter-server-proxy) and answers.
        link = panel.locator("[data-field='dashboard']")
        link.wait_for(timeout=30_000)
        href = link.get_attribute("href") or ""
        assert href.endswith("/trainorch/dashboard"), href
        dashboard = page.request.get(href)
        assert dashboard.status == 200 and "/proxy/" in dashboard.url and "Dask" in dashboard.text()

        row = panel.locator(f"[data-job-id='{waiter}']")
        row.wait_for(timeout=30_000)
        assert row.get_attribute("data-state") == "queued"
        row.locator(".trainorch-queue-position", has_text="#1 in queue").wait_for(timeout=10_000)
        # A queued job of one's own can be cancelled and reprioritised, not retried.
        assert row.locator("[data-action='cancel']").count() == 1
        assert row.locator("[data-action='retry']").count() == 0
        assert row.locator("[data-action='priority']").count() >= 1
        assert panel.locator(f"[data-job-id='{blocker}'] .trainorch-queue-position").count() == 0
        # No text below the theme's small size (0.8333 of --jp-ui-font-size1), the priority
        # select of a row included.
        sizes = page.evaluate(
            """() => [...document.querySelectorAll('#trainorch-panel *')]
                .filter(e => [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()))
                .map(e => parseFloat(getComputedStyle(e).fontSize))"""
        )
        base = page.evaluate(
            "() => parseFloat(getComputedStyle(document.body).getPropertyValue('--jp-ui-font-size1'))"
        )
        assert min(sizes) >= base * 0.8333 - 0.05, (min(sizes), base)

        row.locator("[data-action='open']").click()
        detail = page.locator(f".trainorch-detail[data-detail-job-id='{waiter}']")
        detail.locator(".trainorch-queue-position", has_text="#1 in queue").wait_for(timeout=10_000)
        # Why it waits, in the policy's words: the one GPU is taken and its worker held for it.
        reason = detail.locator("[data-field='wait_reason']")
        reason.wait_for(timeout=10_000)
        assert reason.inner_text().startswith("needs 1 GPU and 1 CPU, which no worker has free now")
        assert reason.inner_text() == lab.api(f"jobs/{waiter}")["wait_reason"]
    finally:
        for job_id in (waiter, blocker):
            lab.api(f"jobs/{job_id}", "DELETE")


def test_other_users_jobs_are_queue_rows(lab, page):
    """A shared hub's queue view of another user's job (served here through a route)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    other = {
        "id": "otheruser01", "name": "someone-elses-run", "user": "bob", "state": "queued",
        "priority": 50, "priority_class": "normal", "resources": {"gpus": 2, "cpus": 4, "memory": 0},
        "created": now, "started": None, "ended": None, "terminal": False, "queue_position": 2,
        "actions": [], "restricted": True,
    }  # fmt: skip
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    def jobs(route):
        response = route.fetch()
        data = response.json()
        data["jobs"].insert(0, other)
        data["total"] += 1
        route.fulfill(response=response, json=data)

    page.route(re.compile(r".*/trainorch/api/jobs(\?.*)?$"), jobs)
    page.route(
        re.compile(r".*/trainorch/api/jobs/otheruser01(\?.*)?$"),
        lambda route: route.fulfill(json=other),
    )
    page.goto(f"{lab.url}/lab?token={lab.token}")
    _open_panel(page)
    row = page.locator("#trainorch-panel [data-job-id='otheruser01']")
    row.wait_for(timeout=30_000)
    assert row.get_attribute("data-restricted") == "true"
    text = row.inner_text()
    assert "bob" in text and "#2 in queue" in text and "2 GPU" in text and "normal" in text
    for action in ("select", "cancel", "retry", "rerun", "clone", "priority"):
        assert row.locator(f"[data-action='{action}']").count() == 0, action
    assert row.locator(".trainorch-progress-bar").count() == 0

    row.locator("[data-action='open']").click()
    detail = page.locator(".trainorch-detail[data-detail-job-id='otheruser01']")
    note = detail.locator("[data-field='restricted']")
    note.wait_for(timeout=10_000)
    assert (
        "belongs to bob" in note.inner_text()
        and "only its owner and admins" in note.inner_text().lower()
    )
    page.wait_for_timeout(1000)
    assert detail.locator(".trainorch-log").count() == 0
    assert not [url for url in requested if "/jobs/otheruser01/" in url], requested


def test_the_cluster_strip_shows_the_users_quotas(lab, page):
    """Quotas an admin set (served here through a route, as a hub's service would)."""

    def me(route):
        response = route.fetch()
        data = response.json()
        data["quota"] = {
            "gpus": 4, "queued": None, "gpus_held": 1, "waiting": 3,
            "groups": [{"name": "vision", "gpus": 2, "queued": 100, "gpus_held": 2,
                        "waiting": 7}],
        }  # fmt: skip
        route.fulfill(response=response, json=data)

    page.route(re.compile(r".*/trainorch/api/me(\?.*)?$"), me)
    page.goto(f"{lab.url}/lab?token={lab.token}")
    _open_panel(page)
    item = page.locator("#trainorch-panel [data-field='quota']")
    item.wait_for(timeout=30_000)
    # The tightest GPU quota: the group's, all of it in use.
    assert item.inner_text() == "quota 2/2 GPUs (group vision)"
    assert item.get_attribute("title").splitlines() == [
        "Quotas set by the admins",
        "you: GPUs 1 of 4 held, jobs 3 of no limit waiting",
        "group vision: GPUs 2 of 2 held, jobs 7 of 100 waiting",
    ]


def test_the_detail_shows_dependency_conditions_and_nodes(lab, page):
    upstream = _submit(lab, "upstream-hold", "import time\ntime.sleep(30)")
    body = {
        "template": "python-cell", "source": "print('alert')", "name": "alert-if-failed",
        "dependencies": [{"job": upstream, "when": "notok"}],
    }  # fmt: skip
    waiting = lab.api("jobs", "POST", body)["id"]
    _, detail = _open_job_tab(lab, page, waiting)
    dep = detail.locator("[data-field='depends_on'] [data-when='notok']")
    dep.wait_for(timeout=30_000)
    assert dep.inner_text() == f"{upstream} (only if it failed)"
    assert "failed or was cancelled" in dep.locator("button").get_attribute("title")
    lab.api(f"jobs/{upstream}", "DELETE")
    _wait_api(lab, waiting, lambda job: job["state"] == "pending" or job["terminal"], "settle")


def _service_pid(lab: Lab) -> int:
    from jupyter_trainorch.service.runtime import read_runtime

    info = read_runtime(lab.data_dir)
    assert info is not None, f"no service.json in {lab.data_dir}"
    return info.pid


def test_panel_reconnects_after_the_service_restarts(lab, page):
    page.goto(f"{lab.url}/lab?token={lab.token}")
    _open_panel(page)
    panel = page.locator("#trainorch-panel")
    live = panel.locator(".trainorch-connection[data-connection='live']")
    live.wait_for(timeout=60_000)

    old = _service_pid(lab)
    os.kill(old, signal.SIGTERM)
    panel.locator(".trainorch-connection[data-connection='reconnecting']").wait_for(timeout=30_000)
    assert (
        "Reconnecting to the trainorch service"
        in panel.locator(".trainorch-reconnecting").inner_text()
    )
    # The cluster strip says the figures are unknown rather than showing stale ones.
    panel.locator("[data-field='cluster-unavailable']").wait_for(timeout=10_000)
    assert panel.locator("[data-field='gpus']").count() == 0
    deadline = time.monotonic() + 60
    while pid_alive(old):
        assert time.monotonic() < deadline, "the service did not stop on SIGTERM"
        time.sleep(0.2)

    # The front starts the service again when it is gone and a request comes.
    deadline = time.monotonic() + 120
    while True:
        try:
            lab.api("jobs")
            break
        except (urllib.error.HTTPError, OSError) as err:
            assert time.monotonic() < deadline, f"the service did not come back: {err}"
            time.sleep(1)
    assert _service_pid(lab) != old

    # The socket reopens by itself (no reload), and a job submitted now shows up and ends.
    live.wait_for(timeout=60_000)
    assert panel.locator(".trainorch-reconnecting").count() == 0
    job_id = _submit(lab, "after-restart", "print('back')")
    row = panel.locator(f"[data-job-id='{job_id}']")
    row.wait_for(timeout=30_000)
    page.wait_for_function(
        "id => document.querySelector(`[data-job-id='${id}']`)?.dataset.state === 'succeeded'", arg=job_id,
        timeout=60_000,
    )  # fmt: skip


ANSI_SOURCE = (
    "print('\\x1b[31mred\\x1b[0m plain', flush=True)\nprint('a second line', flush=True)\n"
)


def test_log_view_shows_ansi_colours_and_searches(lab, page):
    """ANSI colour codes become coloured spans (ansi_up), no escape bytes; search finds a line."""
    job_id = _submit(lab, "ansi-colours", ANSI_SOURCE)
    _wait_api(lab, job_id, lambda j: j["state"] == "succeeded", "did not succeed")
    assert any("\x1b[31m" in line for line in _log_lines(lab, job_id))

    row, detail = _open_job_tab(lab, page, job_id)
    line = detail.locator(".trainorch-log-line", has_text="red plain")
    line.wait_for(timeout=30_000)
    red = line.locator("span[style*='color']")
    assert red.count() == 1 and red.inner_text() == "red"
    assert "rgb(187" in (red.get_attribute("style") or "")  # ansi_up's red
    text = detail.locator(".trainorch-log").inner_text()
    assert "\x1b" not in text and "[31m" not in text and "[0m" not in text
    assert line.inner_text().strip() == "red plain"

    # Search: the matching line is highlighted as the current match, and can be the only one shown.
    detail.locator("[data-action='log-search']").fill("second")
    detail.locator(".trainorch-log-match-current", has_text="a second line").wait_for(
        timeout=10_000
    )
    assert detail.locator(".trainorch-log-match").count() == 1
    assert detail.locator("[data-field='search-count']").inner_text().strip() == "1/1"
    detail.locator("[data-action='log-filter']").check()
    page.wait_for_function(
        "id => document.querySelectorAll(`.trainorch-detail[data-detail-job-id='${id}'] .trainorch-log-line`).length === 1",
        arg=job_id, timeout=10_000,
    )  # fmt: skip
    assert "a second line" in detail.locator(".trainorch-log-line").inner_text()

    # The detail is a main-area tab, one per job: opening the job again activates it.
    tab = page.locator(f"#jp-main-dock-panel #trainorch-job-{job_id}")
    assert tab.count() == 1
    row.locator("[data-action='open']").click()
    page.wait_for_timeout(500)
    assert tab.count() == 1 and tab.is_visible()
    # The sidebar keeps a compact preview of the selected job, with its last log lines.
    row.locator(".trainorch-job-name").click()
    preview = page.locator(f"#trainorch-panel .trainorch-preview[data-preview-job-id='{job_id}']")
    preview.locator(".trainorch-log-line", has_text="a second line").wait_for(timeout=10_000)
    assert preview.locator("[data-action='open']").count() == 1
    # The command palette's "Open Selected Training Job" opens the previewed job's tab again.
    page.locator(f".lm-TabBar-tab[title*='{job_id}'] .lm-TabBar-tabCloseIcon").click()
    tab.wait_for(state="detached", timeout=10_000)
    page.keyboard.press("Control+Shift+C")
    page.locator(".lm-CommandPalette-input").fill("Open Selected Training Job")
    page.keyboard.press("Enter")
    tab.wait_for(timeout=10_000)


LONG_LOG = 100_000


def test_a_long_log_is_virtualised(lab, page):
    """A 100,000-line log keeps a bounded number of rows in the DOM; its end shows the last line.

    The job is real; its log is served by a route (a job printing 100k lines would take
    minutes to stream), in the API's pages of 1,000 lines.
    """
    job_id = _submit(lab, "long-log", "print('short')")
    _wait_api(lab, job_id, lambda j: j["state"] == "succeeded", "did not succeed")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def logs(route):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(route.request.url).query)
        after = int(query.get("after", ["0"])[0])
        ids = range(after + 1, min(after + 1000, LONG_LOG) + 1)
        lines = [
            {"id": i, "attempt": 1, "seq": i, "stream": "stdout", "text": f"line {i} of the long log", "time": now}
            for i in ids
        ]  # fmt: skip
        next_ = lines[-1]["id"] if lines else after
        route.fulfill(
            json={
                "job_id": job_id,
                "state": "succeeded",
                "lines": lines,
                "next": next_,
                "finished": True,
            }
        )

    page.route(re.compile(rf".*/trainorch/api/jobs/{job_id}/logs(\?.*)?$"), logs)
    _, detail = _open_job_tab(lab, page, job_id)
    rows = f".trainorch-detail[data-detail-job-id='{job_id}'] .trainorch-log-line"
    # The view follows the end: the last line is shown.
    detail.locator(f".trainorch-log-line[data-line-id='{LONG_LOG}']").wait_for(timeout=120_000)
    assert detail.locator(".trainorch-log-line").count() < 200

    detail.locator("[data-action='log-load-all']").click()
    detail.locator("[data-field='log-lines']", has_text="100,000 lines").wait_for(timeout=120_000)
    log = detail.locator(".trainorch-log")
    log.evaluate("el => { el.scrollTop = 0; }")
    detail.locator(".trainorch-log-line[data-line-id='1']").wait_for(timeout=10_000)
    assert page.locator(rows).count() < 200
    log.evaluate("el => { el.scrollTop = el.scrollHeight; }")
    last = detail.locator(f".trainorch-log-line[data-line-id='{LONG_LOG}']")
    last.wait_for(timeout=10_000)
    assert last.inner_text().strip() == f"line {LONG_LOG} of the long log"
    assert page.locator(rows).count() < 200
    # Search covers every line, not only those in the DOM.
    detail.locator("[data-action='log-search']").fill("line 5000")
    page.wait_for_function(
        "() => /^1\\/\\d+$/.test(document.querySelector(\"[data-field='search-count']\")?.textContent.trim() ?? '')",
        timeout=20_000,
    )  # fmt: skip
    assert detail.locator(".trainorch-log-match-current", has_text="line 5000").count() == 1


def test_the_empty_panel_says_how_to_submit(lab, page):
    """With no job at all, the list explains how to submit one instead of "No jobs match."."""
    page.route(
        re.compile(r".*/trainorch/api/jobs(\?.*)?$"),
        lambda route: route.fulfill(json={"jobs": [], "total": 0, "offset": 0, "limit": 100}),
    )
    page.goto(f"{lab.url}/lab?token={lab.token}")
    _open_panel(page)
    intro = page.locator("#trainorch-panel [data-field='empty-intro']")
    intro.wait_for(timeout=30_000)
    assert "No training jobs yet" in intro.inner_text() and "%%train" in intro.inner_text()


def _toasts(page) -> list[str]:
    return [t.inner_text() for t in page.locator(".Toastify__toast").all()]


class _ChangeTap:
    """The panel's push channel through a route: real changes pass, and a test can add one
    as a shared hub's channel would carry it (numbered between two real ones)."""

    def __init__(self, page) -> None:
        self.sockets: list = []
        self.last_seq = 0.0
        page.route_web_socket(re.compile(r".*/trainorch/api/events/ws.*"), self._connect)

    def _connect(self, ws) -> None:
        server = ws.connect_to_server()

        def forward(message):
            try:
                seq = json.loads(message).get("seq")
                if isinstance(seq, (int, float)):
                    self.last_seq = max(self.last_seq, seq)
            except (ValueError, AttributeError):
                pass
            ws.send(message)

        server.on_message(forward)
        self.sockets.append(ws)

    def inject(self, change: dict) -> None:
        assert self.sockets, "the panel's push channel did not go through the route"
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.sockets[-1].send(json.dumps({"seq": self.last_seq + 0.5, "time": now, **change}))


def test_notifications_only_for_the_users_own_jobs(lab, page):
    """Another user's job that fails raises no notification; the user's own failed job does.

    The other user's job reaches the panel as a change of the push channel (injected into
    the real socket), as a shared hub's channel would carry it; the user's own jobs are
    submitted through the API (not from this browser): with the default `notify` setting
    only their failures are told about, not their successes.
    """
    me = lab.api("me")
    tap = _ChangeTap(page)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    other = {
        "id": "otheruser02", "name": "someone-elses-failure", "user": "bob", "state": "failed",
        "priority": 50, "priority_class": "normal", "resources": {"gpus": 0, "cpus": 1, "memory": 0},
        "created": now, "started": now, "ended": now, "terminal": True, "queue_position": None,
        "actions": [], "restricted": True,
    }  # fmt: skip
    page.route(
        re.compile(r".*/trainorch/api/jobs/otheruser02(\?.*)?$"),
        lambda route: route.fulfill(json=other),
    )
    page.goto(f"{lab.url}/lab?token={lab.token}")
    _open_panel(page)
    panel = page.locator("#trainorch-panel")
    panel.locator(".trainorch-connection[data-connection='live']").wait_for(timeout=60_000)
    panel.locator(".trainorch-header [data-field='me']", has_text=me["name"]).wait_for(
        timeout=30_000
    )
    # Another user's job fails: a change on the channel, between two real sequence numbers.
    tap.inject({"kind": "job", "job_id": "otheruser02", "state": "failed", "user": "bob"})
    # One of the user's own jobs succeeds (submitted elsewhere): no notification either.
    ok = _submit(lab, "mine-succeeds", "print('fine')")
    _wait_api(lab, ok, lambda j: j["state"] == "succeeded", "did not succeed")
    page.wait_for_timeout(5000)  # longer than the notifications' grouping window
    toasts = _toasts(page)
    assert not [t for t in toasts if "otheruser02" in t or "someone-elses" in t], toasts
    assert not [t for t in toasts if ok in t or "mine-succeeds" in t], toasts

    # One of the user's own jobs fails: one notification, naming it.
    bad = _submit(lab, "mine-fails", "raise RuntimeError('boom')")
    _wait_api(lab, bad, lambda j: j["state"] == "failed", "did not fail")
    toast = page.locator(".Toastify__toast", has_text=bad)
    toast.wait_for(timeout=30_000)
    assert "mine-fails" in toast.inner_text() and "failed" in toast.inner_text()
    toasts = _toasts(page)
    assert not [t for t in toasts if "otheruser02" in t or "someone-elses" in t], toasts


def test_the_cluster_strip_shows_autoscaling_and_gpus_busy_and_idle(scaling_lab, page):
    """Two one-GPU jobs on one one-GPU worker: the pool grows to its maximum of two, and the
    strip says why, with the GPUs busy and idle, each worker's utilisation and the event."""
    lab = scaling_lab
    page.goto(f"{lab.url}/lab?token={lab.token}")
    _open_panel(page)
    panel = page.locator("#trainorch-panel")
    workers = panel.locator("[data-field='workers']")
    workers.filter(has_text="(autoscaling 1–2)").wait_for(timeout=30_000)
    gpus = panel.locator("[data-field='gpus']")
    assert re.fullmatch(r"GPUs \d busy · \d idle", gpus.inner_text()), gpus.inner_text()

    jobs = [_submit(lab, f"scaled-{i}", "import time\ntime.sleep(60)", gpus=1) for i in range(2)]
    try:
        event = panel.locator("[data-field='scaling-event']", has_text="waits for capacity")
        event.wait_for(timeout=30_000)
        assert "1 → 2 workers" in event.inner_text(), event.inner_text()
        # The second worker joins and takes the second job: both GPUs busy, none idle.
        panel.locator("[data-field='gpus']", has_text="GPUs 2 busy · 0 idle").wait_for(
            timeout=45_000
        )
        assert workers.inner_text().startswith("2 workers"), workers.inner_text()

        panel.locator("[data-action='cluster-details']").click()
        events = panel.locator("[data-field='cluster-events'] li")
        events.first.wait_for(timeout=10_000)
        assert "1 → 2 workers" in events.first.inner_text(), events.all_inner_texts()
        usage = panel.locator("[data-field='worker-usage']", has_text="CPU")
        usage.first.wait_for(timeout=20_000)
        assert re.search(r"CPU \d+% · memory [\d.]+ \w+ used", usage.first.inner_text())
    finally:
        for job_id in jobs:
            lab.api(f"jobs/{job_id}", "DELETE")


def test_an_owner_alert_is_a_notification_for_the_owner_only(scaling_lab, page):
    """An alert rule routed to the owner: the owner's failed job raises an alert notification
    that opens the job; another user's alert, which an admin's channel carries, raises none."""
    lab = scaling_lab
    tap = _ChangeTap(page)
    page.goto(f"{lab.url}/lab?token={lab.token}")
    _open_panel(page)
    panel = page.locator("#trainorch-panel")
    panel.locator(".trainorch-connection[data-connection='live']").wait_for(timeout=60_000)
    panel.locator(".trainorch-header [data-field='me']").wait_for(timeout=30_000)

    tap.inject({"kind": "alert", "job_id": "otheruser03", "user": "bob", "event": "failed",
                "message": "job otheruser03 failed"})  # fmt: skip
    bad = _submit(lab, "alert-fails", "raise RuntimeError('boom')")
    _wait_api(lab, bad, lambda j: j["state"] == "failed", "did not fail")
    alert = page.locator(".Toastify__toast", has_text=f"Alert: job {bad} failed")
    alert.wait_for(timeout=30_000)
    assert not [t for t in _toasts(page) if "otheruser03" in t], _toasts(page)
    assert len([t for t in _toasts(page) if f"Alert: job {bad}" in t]) == 1

    alert.get_by_role("button", name="Show").click()
    page.locator(f"#jp-main-dock-panel .trainorch-detail[data-detail-job-id='{bad}']").wait_for(
        timeout=30_000
    )


def test_the_cluster_strip_shows_the_queue_idle_gpu_time_and_gpu_usage(scaling_lab, page):
    """What an idle test cluster does not have (a queue, GPU time left idle, NVML readings),
    served here through a route on top of the real answer."""
    lab = scaling_lab
    gib = 2**30

    def cluster(route):
        response = route.fetch()
        data = response.json()
        data.update(queue_by_priority={"normal": 5, "urgent": 3}, queue_depth=8)
        data.update(idle_gpu_minutes=12.4)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        data["workers"][0]["usage"] = {
            "cpu": 35.2, "memory_used": 12 * gib, "time": now,
            "gpus": [{"id": "0", "utilisation": 80, "memory_used": 10 * gib,
                      "memory_total": 16 * gib}],
        }  # fmt: skip
        route.fulfill(response=response, json=data)

    page.route(re.compile(r".*/trainorch/api/cluster(\?.*)?$"), cluster)
    page.goto(f"{lab.url}/lab?token={lab.token}")
    _open_panel(page)
    panel = page.locator("#trainorch-panel")
    queue = panel.locator("[data-field='queue']")
    queue.wait_for(timeout=30_000)
    assert queue.inner_text() == "queue 3 urgent · 5 normal"
    idle = panel.locator("[data-field='idle-gpu-minutes']")
    assert idle.inner_text() == "idle 12 GPU-min"
    assert "A good schedule keeps this at 0" in idle.get_attribute("title")

    panel.locator("[data-action='cluster-details']").click()
    assert panel.locator("[data-field='worker-usage']").first.inner_text() == (
        "CPU 35% · memory 12 GiB used"
    )
    assert panel.locator("[data-field='gpu-usage']").inner_text() == "GPU 0: 80% · 10 GiB/16 GiB"
    title = panel.locator(".trainorch-cluster-items").get_attribute("title")
    assert "  GPU 0: 80% · 10 GiB/16 GiB" in title.splitlines(), title
