"""How the panel holds up during a burst of jobs: main-thread blocking and update latency.

Run ``python bench/panel.py [--jobs 300] [--sample 20] [--window 30]``. It starts
``trainorch serve`` (one local worker, tracking off) and a JupyterLab with the extension in
front of it, both on loopback, opens the panel in headless Chromium (Playwright,
``/usr/bin/chromium``) and records the page's long tasks (a ``PerformanceObserver`` for
``longtask``: main-thread tasks of 50 ms or more). Then it submits ``--jobs`` cheap command
jobs (``python -c pass``) over REST as fast as it can and prints, for the burst (at least
``--window`` seconds from its first submit): the time the main thread was blocked and its
share of the wall time, the longest task, the number of tasks over 100 ms, the latency from
a job's submit to its row appearing (polling ``[data-job-id]`` for ``--sample`` jobs), and
how long the filter box takes to show only the rows matching a name fragment.

The baseline is the same page in the same run with the panel idle: ``--seed`` jobs submitted
one at a time (their row latency), then ``--idle`` seconds of no activity (the blocking
figures), then the same filter typed over the seed jobs.

The page is found through data attributes (``data-job-id``) and the filter box's
placeholder only, so the script measures whichever panel is built.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from harness import free_port, percentile, trainorch_service
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update"]  # fmt: skip
FRAGMENT = "probe"  # in the names of every tenth job, and typed into the filter
ROW = "#trainorch-panel [data-job-id]"
FILTER = re.compile(r"search name|filter", re.IGNORECASE)

# Collects long tasks into window.__benchTasks and, every 10 ms, the time (epoch ms) each
# awaited job id first has a row.
OBSERVE = """() => {
  window.__benchTasks = [];
  new PerformanceObserver(list => {
    for (const entry of list.getEntries()) window.__benchTasks.push(entry.duration);
  }).observe({ type: 'longtask' });
  window.__benchFrames = [];
  new PerformanceObserver(list => {
    for (const f of list.getEntries()) {
      if (f.duration <= 100) continue;
      const end = f.startTime + f.duration;
      window.__benchFrames.push({
        at: f.startTime, duration: f.duration,
        render: f.renderStart ? end - f.renderStart : 0,
        styleLayout: f.styleAndLayoutStart ? end - f.styleAndLayoutStart : 0,
        scripts: f.scripts.map(s => ({
          duration: s.duration, layout: s.forcedStyleAndLayoutDuration,
          invoker: s.invoker, fn: s.sourceFunctionName, url: (s.sourceURL || '').split('/').pop(),
        })),
      });
    }
  }).observe({ type: 'long-animation-frame' });
  window.__benchAwaited = new Set();
  window.__benchSeen = {};
  setInterval(() => {
    for (const id of window.__benchAwaited) {
      if (document.querySelector(`#trainorch-panel [data-job-id="${id}"]`)) {
        window.__benchSeen[id] = Date.now();
        window.__benchAwaited.delete(id);
      }
    }
  }, 10);
}"""
LIST = "#trainorch-panel .trainorch-list"
# The page time (performance.now) of each key pressed in the filter box; the listener is
# added once, however often the filter is timed.
KEY_TIMES = """box => {
  window.__benchKeys = [];
  if (box.__benchKeyed) return;
  box.__benchKeyed = true;
  box.addEventListener('keydown', event => window.__benchKeys.push(event.timeStamp));
}"""
# The page time once the list shows a search, and for the whole fragment only its rows.
SEARCH_SHOWN = """([list, selector, text, whole]) => {
  if (document.querySelector(list)?.dataset.search !== text) return false;
  const rows = [...document.querySelectorAll(selector)];
  const only = rows.length > 0 && rows.every(row => row.textContent.toLowerCase().includes(text));
  return !whole || only ? performance.now() : false;
}"""
UNFILTERED = """([selector, fragment]) => [...document.querySelectorAll(selector)].some(
  row => !row.textContent.toLowerCase().includes(fragment))"""


class Lab:
    """A JupyterLab with the extension, in front of the service of ``data_dir``."""

    def __init__(self, data_dir: Path, root: Path) -> None:
        self.port, self.token = free_port(), secrets.token_hex(8)
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TRAINORCH_", "JUPYTERHUB_")) and k != "JUPYTER_CONFIG_DIR"}  # fmt: skip
        env.update(TRAINORCH_DATA_DIR=str(data_dir), TRAINORCH_MLFLOW="off",
                   JUPYTER_CONFIG_DIR=str(root / "config"), JUPYTER_RUNTIME_DIR=str(root / "runtime"),
                   JUPYTERLAB_SETTINGS_DIR=str(root / "settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(root / "workspaces"))  # fmt: skip
        (root / "work").mkdir()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={self.port}",
             "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={root / 'work'}"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def api(self, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"{self.url}/trainorch/api/{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method="POST" if body is not None else "GET",
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.api("templates")
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("JupyterLab did not start") from None
                time.sleep(0.5)

    def submit(self, name: str) -> tuple[str, float]:
        """The new job's id and when its submit was sent (epoch ms, the browser's clock too)."""
        sent = time.time() * 1000
        body = {"spec": {"name": name, "kind": "command", "command": "python -c pass"}}
        return self.api("jobs", body)["id"], sent

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass


def job_name(prefix: str, index: int) -> str:
    return f"{prefix}-{FRAGMENT}-{index}" if index % 10 == 0 else f"{prefix}-{index}"


def await_rows(page, sent: dict[str, float], timeout: float) -> list[float]:
    """Row latencies (ms) of the jobs of ``sent`` (id: submit time) whose row showed within
    ``timeout`` s; a row never shown is left out."""
    try:
        page.wait_for_function("() => window.__benchAwaited.size === 0", polling=100,
                               timeout=timeout * 1000)  # fmt: skip
    except PlaywrightTimeout:
        page.evaluate("() => window.__benchAwaited.clear()")
    seen = page.evaluate("() => window.__benchSeen")
    return [seen[job_id] - at for job_id, at in sent.items() if job_id in seen]


def expect_rows(page, ids: list[str]) -> None:
    page.evaluate("ids => ids.forEach(id => window.__benchAwaited.add(id))", ids)


def wait_ended(lab: Lab, ids: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    for job_id in ids:
        while not lab.api(f"jobs/{job_id}")["terminal"] and time.monotonic() < deadline:
            time.sleep(0.2)


def filter_response(page) -> tuple[float, float]:
    """Milliseconds from the first key of the fragment until only matching rows show (the
    typing of its keys included), and the slowest key's response inside the page: from its
    ``keydown`` to the animation frame whose list shows that key's search (``data-search``)."""
    box = page.locator("#trainorch-panel").get_by_placeholder(FILTER).first
    box.evaluate(KEY_TIMES)
    started = time.perf_counter()
    slowest = 0.0
    for typed in range(1, len(FRAGMENT) + 1):
        box.press(FRAGMENT[typed - 1])
        shown = page.wait_for_function(
            SEARCH_SHOWN, arg=[LIST, ROW, FRAGMENT[:typed], typed == len(FRAGMENT)],
            polling="raf", timeout=30_000,
        ).json_value()  # fmt: skip
        slowest = max(slowest, shown - page.evaluate("() => window.__benchKeys.at(-1)"))
    ended = time.perf_counter()
    box.fill("")
    page.wait_for_function(UNFILTERED, arg=[ROW, FRAGMENT], polling="raf", timeout=30_000)
    return (ended - started) * 1000, slowest


def long_tasks(page, since: float) -> dict[str, float]:
    tasks = page.evaluate("() => window.__benchTasks.splice(0)")
    frames = page.evaluate("() => window.__benchFrames.splice(0)")
    wall = time.monotonic() - since
    return {"wall": wall, "blocked": sum(tasks), "longest": max(tasks, default=0.0),
            "over_100": sum(t > 100 for t in tasks), "count": len(tasks), "frames": frames}  # fmt: skip


def measure(
    lab: Lab, jobs: int, sample: int, seed: int, idle: float, window: float
) -> dict[str, dict]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{lab.url}/lab?token={lab.token}")
            page.locator("[title='Training jobs']").first.wait_for(timeout=60_000)
            page.wait_for_timeout(1500)  # JupyterLab restores its layout
            if not page.locator("#trainorch-panel").is_visible():
                page.locator("[title='Training jobs']").first.click()
            page.locator("#trainorch-panel").wait_for(state="visible", timeout=30_000)
            page.evaluate(OBSERVE)

            # Baseline: one job at a time, then the idle panel, then the filter over them.
            seed_latency, seeds = [], []
            for index in range(seed):
                job_id, sent = lab.submit(job_name("seed", index))
                expect_rows(page, [job_id])
                seed_latency += await_rows(page, {job_id: sent}, timeout=30)
                seeds.append(job_id)
            wait_ended(lab, seeds)
            page.wait_for_timeout(1000)
            page.evaluate("() => window.__benchTasks.splice(0)")
            started = time.monotonic()
            page.wait_for_timeout(idle * 1000)
            baseline = long_tasks(page, started)
            baseline.update(latency=seed_latency, filter=filter_response(page))

            # The burst: every job submitted at once from a few threads. The sampled jobs'
            # names match the filter, so their rows still show while the filter is timed.
            page.evaluate("() => window.__benchTasks.splice(0)")
            started = time.monotonic()
            probes = range(0, jobs, 10)
            every = max(1, len(probes) // sample)
            wanted = set(probes[::every][:sample])
            sampled: dict[str, float] = {}
            with ThreadPoolExecutor(8) as pool:
                futures = {pool.submit(lab.submit, job_name("burst", i)): i for i in range(jobs)}
                for future in as_completed(futures):
                    if futures[future] in wanted:
                        job_id, sent = future.result()
                        sampled[job_id] = sent
                        expect_rows(page, [job_id])
                    future.result()
            burst_filter = filter_response(page)
            burst_latency = await_rows(page, sampled, timeout=60)
            page.wait_for_timeout(max(0.0, window - (time.monotonic() - started)) * 1000)
            burst = long_tasks(page, started)
            burst.update(latency=burst_latency, filter=burst_filter, sampled=len(sampled))
            return {"baseline": baseline, "burst": burst}
        finally:
            browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--sample", type=int, default=20, help="jobs whose row latency is timed")
    parser.add_argument("--seed", type=int, default=10, help="jobs submitted one at a time first")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of the idle baseline")
    parser.add_argument("--explain", action="store_true",
                        help="print what each frame over 100 ms spent its time on")  # fmt: skip
    parser.add_argument("--window", type=float, default=30.0,
                        help="seconds of the burst's figures at least, from its first submit")  # fmt: skip
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"needs Chromium at {CHROMIUM}")
        return 1
    with (
        trainorch_service() as service,
        tempfile.TemporaryDirectory(prefix="trainorch-panel-") as root,
    ):
        lab = Lab(service.data_dir, Path(root))
        try:
            lab.wait_ready()
            figures = measure(lab, args.jobs, args.sample, args.seed, args.idle, args.window)
        finally:
            lab.stop()
    report(figures, args.jobs)
    if args.explain:
        explain(figures["burst"]["frames"])
    return 0


def explain(frames: list[dict]) -> None:
    """Each animation frame over 100 ms of the burst: its script, forced layout, style and
    layout, and render time, then its longest scripts (Chromium's long-animation-frame
    entries)."""
    print(f"frames over 100 ms during the burst: {len(frames)}")
    for frame in frames:
        script = sum(s["duration"] for s in frame["scripts"])
        forced = sum(s["layout"] for s in frame["scripts"])
        print(f"  at {frame['at'] / 1000:7.1f} s: {frame['duration']:.0f} ms; scripts {script:.0f} ms "
              f"(forced layout {forced:.0f} ms), render {frame['render']:.0f} ms "
              f"(style and layout {frame['styleLayout']:.0f} ms)")  # fmt: skip
        for s in sorted(frame["scripts"], key=lambda s: -s["duration"])[:3]:
            print(f"      {s['duration']:5.0f} ms {s['invoker']} {s['fn']} {s['url']}")


def report(figures: dict[str, dict], jobs: int) -> None:
    base, burst = figures["baseline"], figures["burst"]

    def blocked(f: dict) -> str:
        return (f"{f['blocked']:.0f} ms of {f['wall']:.1f} s ({100 * f['blocked'] / 1000 / f['wall']:.1f} %), "
                f"{f['count']} long tasks")  # fmt: skip

    def latency(values: list[float]) -> str:
        if not values:
            return "no row seen"
        return f"p50 {percentile(values, 50):.0f} ms, p95 {percentile(values, 95):.0f} ms"

    print(f"panel during a {jobs}-job burst (baseline: the same page, panel idle)")
    print(f"main thread blocked:  burst {blocked(burst)}")
    print(f"                      idle  {blocked(base)}")
    print(f"longest task:         burst {burst['longest']:.0f} ms, idle {base['longest']:.0f} ms")
    print(f"tasks > 100 ms:       burst {burst['over_100']}, idle {base['over_100']}")
    print(f"submit -> row:        burst {latency(burst['latency'])} "
          f"({len(burst['latency'])} of {burst['sampled']} sampled rows seen)")  # fmt: skip
    print(f"                      idle  {latency(base['latency'])} "
          f"({len(base['latency'])} jobs, one at a time)")  # fmt: skip
    print(
        f"filter '{FRAGMENT}':       burst {burst['filter'][0]:.0f} ms, idle {base['filter'][0]:.0f} ms"
        f" ({len(FRAGMENT)} keys, each awaited: the harness's round trips included)\n"
        f"  slowest key, keydown -> list shows it: burst {burst['filter'][1]:.0f} ms, "
        f"idle {base['filter'][1]:.0f} ms"
    )
    print(
        f"target no task > 100 ms during the burst: {'PASS' if burst['over_100'] == 0 else 'MISS'}"
    )
    print(
        "target filter <= 100 ms a key during the burst: "
        f"{'PASS' if burst['filter'][1] <= 100 else 'MISS'}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
