"""Side by side with Ray Jobs: submit → first line of job code, one job at a time.

Run ``python bench/ray.py [--jobs 20] [--ray PATH]``. It needs Ray's ``ray`` command
(``pip install "ray[default]"``, here or in a virtual environment of its own, then
``--ray /path/to/venv/bin/ray``); without it the bench says so and stops. It starts:

- a Ray head on 127.0.0.1 (``ray start --head --block``, its own process group, stopped by
  that group at the end), and submits through the Jobs REST API (``POST /api/jobs/``), as
  ``ray job submit`` and the Python SDK do;
- a ``trainorch serve`` (one local worker, tracking off), submitting through its REST API.

Both run the same job: a Python child that writes the time of its first line to a file.
The two paths take turns, so other load on the machine falls on both alike. Target:
Ray's p50 ≥ 30× trainorch's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import free_port, percentile, trainorch_service, wait_for_stamp  # noqa: E402

STAMP = "import time; open({path!r}, 'w').write(repr(time.time()))"


def http_json(url: str, body: dict | None = None, timeout: float = 30.0) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if body else "GET")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"{}")


class RayHead:
    """A Ray head of our own on loopback, its processes in one group that we end."""

    def __init__(self, ray: str, root: Path) -> None:
        self.dashboard = free_port()
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
               "RAY_USAGE_STATS_ENABLED": "0"}  # fmt: skip
        self.log = open(root / "ray.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1",
             f"--port={free_port()}", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={self.dashboard}", "--num-cpus=2",
             "--object-store-memory=200000000", "--include-dashboard=true",
             "--disable-usage-stats", f"--temp-dir={root / 'ray'}"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.dashboard}"
        deadline = time.monotonic() + 180
        while True:
            try:
                http_json(f"{self.url}/api/version", timeout=2)
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"Ray did not start; see {root / 'ray.log'}") from None
                time.sleep(0.5)

    def submit(self, entrypoint: str) -> str:
        return http_json(f"{self.url}/api/jobs/", {"entrypoint": entrypoint})["submission_id"]

    def wait(self, submission_id: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = http_json(f"{self.url}/api/jobs/{submission_id}")["status"]
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                return status
            time.sleep(0.05)
        raise TimeoutError(f"Ray job {submission_id} did not end in {timeout:g} s")

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)  # ray start --block stops its own
            self.process.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20, help="measured jobs per path")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--ray", default=shutil.which("ray"), help="the ray command")
    args = parser.parse_args(argv)
    if not args.ray or not Path(args.ray).exists():
        print("ray is not installed (pip install 'ray[default]', or --ray PATH): skipped")
        return 0

    from jupyter_trainorch.client.transport import HTTPTransport

    root = Path(tempfile.mkdtemp(prefix="trainorch-bench-ray-"))
    head = RayHead(args.ray, root)
    try:
        with trainorch_service() as service:
            transport = HTTPTransport(service.url, service.token)

            def trainorch(index: int) -> float:
                stamp = root / f"trainorch-{index}"
                t0 = time.time()
                job = transport.submit({"spec": {"name": f"first-line-{index}",
                                                 "source": STAMP.format(path=str(stamp))}})  # fmt: skip
                first = wait_for_stamp(stamp)
                transport.wait(job["id"], timeout=120)
                return first - t0

            def ray(index: int) -> float:
                stamp = root / f"ray-{index}"
                code = STAMP.format(path=str(stamp)).replace('"', '\\"')
                t0 = time.time()
                submission = head.submit(f'{sys.executable} -c "{code}"')
                first = wait_for_stamp(stamp)
                assert head.wait(submission) == "SUCCEEDED"
                return first - t0

            samples: dict[str, list[float]] = {"trainorch": [], "Ray Jobs": []}
            for index in range(args.warmup + args.jobs):
                for name, path in (("trainorch", trainorch), ("Ray Jobs", ray))[:: 1 - 2 * (index % 2)]:  # fmt: skip
                    took = path(index)
                    if index >= args.warmup:
                        samples[name].append(took * 1000)
    finally:
        head.stop()
        shutil.rmtree(root, ignore_errors=True)
    for name, values in samples.items():
        p50, p95 = percentile(values, 50), percentile(values, 95)
        print(f"{name}: submit->first line p50 {p50:.1f} ms p95 {p95:.1f} ms ({len(values)} jobs)")
    ratio = percentile(samples["Ray Jobs"], 50) / percentile(samples["trainorch"], 50)
    print(
        f"Ray Jobs / trainorch (p50): {ratio:.1f}x (target >= 30x: {'PASS' if ratio >= 30 else 'FAIL'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
