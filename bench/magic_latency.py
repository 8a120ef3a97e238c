"""How long ``%%train`` takes to hand back its job handle (target: p50 <= 50 ms).

Run ``python bench/magic_latency.py [--cells 30]``. It starts ``trainorch serve`` (one local
worker, tracking off), then runs ``%%train`` cells in an in-process IPython shell pointed at
it, as a kernel in JupyterLab is; each cell captures a small array and a function. The
baseline is what a user would type by hand to start the same work on the same cluster:
``distributed.Client.submit`` of a function, which returns a future.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import percentile, trainorch_service  # noqa: E402 - after the path

CELL = """%%train --name bench-cell --timeout 60
total = scale(sum(values))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=30)
    parser.add_argument(
        "--uncached", action="store_true",
        help="list the installed packages on every submit (the behaviour before the cache)",
    )  # fmt: skip
    args = parser.parse_args()
    with trainorch_service() as service:
        os.environ.update(TRAINORCH_URL=service.url, TRAINORCH_TOKEN=service.token)
        if args.uncached:
            import jupyter_trainorch.package as package

            package._environment_fingerprint = object  # a new key each time: never a hit
        magic, raw = measure(args.cells, service.cluster)
    print(f"%%train -> job handle:   p50 {percentile(magic, 50):.1f} ms, "
          f"p95 {percentile(magic, 95):.1f} ms ({len(magic)} cells)")  # fmt: skip
    print(f"Client.submit -> future: p50 {percentile(raw, 50):.1f} ms, "
          f"p95 {percentile(raw, 95):.1f} ms ({len(raw)} calls)")  # fmt: skip
    print(f"target %%train p50 <= 50 ms: {'PASS' if percentile(magic, 50) <= 50 else 'MISS'}")
    return 0


def measure(cells: int, cluster: dict) -> tuple[list[float], list[float]]:
    from distributed import Client
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext jupyter_trainorch", store_history=False)
    shell.run_cell("values = list(range(1000))\ndef scale(x):\n    return 2 * x\n")
    time.sleep(2.0)  # the environment snapshot is computed in the background after %load_ext
    magic = []
    for index in range(cells + 3):
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the handle's repr, as Out[n]
            result = shell.run_cell(CELL, store_history=True)
        elapsed = (time.perf_counter() - started) * 1000
        assert result.success and result.result is not None, result.error_in_exec
        if index >= 3:  # the first cells warm the HTTP connection and imports
            magic.append(elapsed)
    raw = []
    with Client(cluster["address"], timeout=30) as client:
        for index in range(cells + 3):
            started = time.perf_counter()
            future = client.submit(sum, [index, 1], pure=False)
            elapsed = (time.perf_counter() - started) * 1000
            future.result()
            if index >= 3:
                raw.append(elapsed)
    return magic, raw


if __name__ == "__main__":
    raise SystemExit(main())
