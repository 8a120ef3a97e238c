"""What the user's path costs: submit over REST until the first line of job code runs.

Run ``python bench/service_path.py [--jobs 30]``. It starts what a JupyterLab user has — a
Jupyter server with the trainorch extension, which forwards to the trainorch service (its own
process, with a one-worker local cluster) — and times, one job at a time on an idle cluster:

(a) through the Jupyter server: ``POST <server>/trainorch/api/jobs``, as a kernel's ``%%train``
    does (the server forwards to the service);
(b) to the service directly: ``POST <service>/trainorch/api/jobs``, as the CLI outside
    JupyterLab does;
(c) raw Dask, the baseline a user would write by hand: ``Client.submit`` on the same
    scheduler, pinned to the same worker, of a task that spawns a bare ``python -c`` child.

The three paths take turns, in a shuffled order each round, so that other load on the
machine (and one job's clean-up) falls on all alike. Tracking is
off, so the figures are the orchestration and the REST hops alone.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import free_port, percentile, wait_for_stamp  # noqa: E402 - after the path

JOB_SOURCE = """\
_first_line_at = __import__("time").time()
with open(stamp_file, "w") as _handle:
    _handle.write(repr(_first_line_at))
"""
BARE_CHILD = "import time; print(repr(time.time()), flush=True)"


def spawn_bare_child(argv: list[str]) -> float:
    """The baseline's Dask task: spawn the child, return the time of its first line."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, start_new_session=True)
    line = proc.stdout.readline()
    proc.wait()
    proc.stdout.close()
    return float(line)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30, help="measured jobs per path")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)

    from distributed import Client

    from jupyter_trainorch.client.transport import HTTPTransport
    from jupyter_trainorch.processes import stop_process
    from jupyter_trainorch.service import read_runtime

    root = Path(tempfile.mkdtemp(prefix="trainorch-bench-path-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINORCH_", "JUPYTER"))}
    env.update(
        TRAINORCH_DATA_DIR=str(root / "data"), TRAINORCH_WORKERS="1",
        TRAINORCH_GPUS_PER_WORKER="1", TRAINORCH_MLFLOW="off",
        JUPYTER_CONFIG_DIR=str(root / "config"), JUPYTER_RUNTIME_DIR=str(root / "runtime"),
    )  # fmt: skip
    port, token = free_port(), secrets.token_hex(8)
    (root / "notebooks").mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}", "--no-browser", "--allow-root",
         f"--ServerApp.root_dir={root / 'notebooks'}"],
        env=env, stdout=open(root / "server.log", "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True,
    )  # fmt: skip
    client = None
    try:
        front = HTTPTransport(f"http://127.0.0.1:{port}/", token, reconnect_for=120)
        front.me()  # the extension starts the service; this waits for it
        info = read_runtime(root / "data")
        direct = HTTPTransport(info.url, info.token)
        cluster = json.loads((root / "data" / "cluster.json").read_text())
        client = Client(cluster["address"], timeout=60, name="bench-raw-dask")
        worker = next(iter(client.scheduler_info()["workers"]))
        bare = [sys.executable, "-c", BARE_CHILD]

        def through(transport: HTTPTransport, index: int) -> float:
            stamp = root / f"stamp-{id(transport)}-{index}"
            t0 = time.time()
            job = transport.submit({"spec": {"name": f"bench-{index}", "source": JOB_SOURCE,
                                             "params": {"stamp_file": str(stamp)},
                                             "resources": {"gpus": 1}}})  # fmt: skip
            first = wait_for_stamp(stamp)
            transport.wait(job["id"], timeout=60)
            return first - t0

        def raw(_: int) -> float:
            t0 = time.time()
            first = client.submit(
                spawn_bare_child, bare, workers=[worker], allow_other_workers=False,
                resources={"GPU": 1}, pure=False,
            ).result(timeout=120)  # fmt: skip
            return first - t0

        paths = {
            "through the Jupyter server": lambda i: through(front, i),
            "to the service directly": lambda i: through(direct, i),
            "raw Dask + bare python -c child": raw,
        }
        samples: dict[str, list[float]] = {name: [] for name in paths}
        order = list(paths)
        shuffle = random.Random(0).shuffle
        for index in range(args.warmup + args.jobs):
            shuffle(order)  # no path always follows another one's clean-up
            for name in order:
                took = paths[name](index)
                if index >= args.warmup:
                    samples[name].append(took * 1000)
        base = percentile(samples["raw Dask + bare python -c child"], 50)
        for name, values in samples.items():
            p50, p95 = percentile(values, 50), percentile(values, 95)
            print(
                f"{name}: submit->first line p50 {p50:.1f} ms p95 {p95:.1f} ms ({len(values)} jobs)"
            )
        for name in ("through the Jupyter server", "to the service directly"):
            print(
                f"ratio vs bare python child ({name}): {percentile(samples[name], 50) / base:.2f}"
            )
        hop = percentile(samples["through the Jupyter server"], 50) - percentile(
            samples["to the service directly"], 50
        )
        print(f"the Jupyter server's forwarding adds (p50 difference): {hop:.1f} ms")
    finally:
        if client is not None:
            client.close()
        stop_process(server.pid)
        runtime = read_runtime(root / "data")
        if runtime is not None:
            stop_process(runtime.pid)
        state = root / "data" / "cluster.json"
        if state.exists():
            stop_process(json.loads(state.read_text())["pid"])
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
