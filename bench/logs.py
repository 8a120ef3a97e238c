"""The log path: from a job's ``print`` to a line readable through REST.

Run ``python bench/logs.py [--lines 200000] [--jobs 6]``. It starts a ``trainorch serve``
(one local worker, tracking off) and runs ``--jobs`` jobs one after another, each printing
``--lines`` numbered lines of 48 bytes as fast as it can, while a reader follows the job's
log over REST (``GET jobs/ID/logs?after=…&wait=…``, as ``trainorch logs --follow`` and the
panel do). The baseline, measured between the jobs: the same loop in a bare ``python -c``
child whose stdout is a plain pipe read and thrown away by its parent.

It prints, per job and in summary:
- the job's own print time against the pipe's (target ≤ 1.5×);
- lines/s from the job's first print to its last line readable over REST (≥ 100,000);
- how long after the job's last print its last line was readable (≤ 0.5 s);
- lines lost, duplicated and out of order (0);
- the service's resident memory before the jobs, and after they end (back within 50 MB);
- the store's growth against the bytes printed (≤ 1.2×).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import trainorch_service  # noqa: E402 - after the path

LINE_BYTES = 48  # with its newline
PRINTER = """\
import sys, time
_start = time.time()
for _i in range({lines}):
    print(f"{{_i:08d}} {{'x' * 38}}")
_end = time.time()
print(f"done {{_start!r}} {{_end!r}}", flush=True)
"""


def pipe_print_seconds(lines: int) -> float:
    """The print loop in a bare child writing to a pipe that its parent drains."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PRINTER.format(lines=lines)], stdout=subprocess.PIPE, bufsize=0
    )
    last = b""
    while chunk := proc.stdout.read(65536):
        last = (last + chunk)[-200:]
    proc.wait()
    _, start, end = last.decode().strip().splitlines()[-1].split()
    return float(end) - float(start)


def follow(transport: Any, job_id: str) -> dict[str, Any]:
    """Read the job's log over REST until it ends; when each line became readable."""
    texts: list[str] = []
    arrival: list[float] = []
    after = 0
    while True:
        page = transport.logs(job_id, after=after, wait=5)
        now = time.time()
        texts.extend(line["text"] for line in page["lines"])
        arrival.extend(now for _ in page["lines"])
        after = page["next"]
        if page["finished"] and not page["lines"]:
            return {"texts": texts, "arrival": arrival}


def check_order(texts: list[str], lines: int) -> dict[str, int]:
    numbers = [int(t[:8]) for t in texts if t[:8].isdigit()]
    seen: set[int] = set()
    duplicated = out_of_order = 0
    previous = -1
    for n in numbers:
        if n in seen:
            duplicated += 1
        seen.add(n)
        if n < previous:
            out_of_order += 1
        previous = n
    return {"lost": lines - len(seen), "duplicated": duplicated, "out_of_order": out_of_order}


def store_bytes(data_dir: Path) -> int:
    """The SQLite store and its write-ahead log."""
    return sum(p.stat().st_size for p in data_dir.glob("*.db*") if p.is_file())


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 1e6


def run_job(transport: Any, index: int, lines: int) -> dict[str, Any]:
    spec = {"name": f"logs-{index}", "source": PRINTER.format(lines=lines)}
    job = transport.submit({"spec": spec})
    result: dict[str, Any] = {}
    reader = threading.Thread(target=lambda: result.update(follow(transport, job["id"])))
    reader.start()
    reader.join(timeout=600)
    final = transport.get(job["id"])
    assert final["state"] == "succeeded", final
    done = next(t for t in reversed(result["texts"]) if t.startswith("done "))
    _, start, end = done.split()
    numbered = [
        a for t, a in zip(result["texts"], result["arrival"], strict=True) if t[:8].isdigit()
    ]
    return {
        "print_seconds": float(end) - float(start),
        "lines_per_second": lines / (numbered[-1] - float(start)),
        "last_line_after_end": result["arrival"][-1] - float(end),
        **check_order(result["texts"], lines),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000, help="lines each job prints")
    parser.add_argument("--jobs", type=int, default=6)
    args = parser.parse_args(argv)

    from jupyter_trainorch.client.transport import HTTPTransport
    from jupyter_trainorch.service import read_runtime

    printed = args.lines * LINE_BYTES * args.jobs
    with trainorch_service() as service:
        transport = HTTPTransport(service.url, service.token)
        pid = read_runtime(service.data_dir).pid
        run_job(transport, -1, 100)  # a first job: the worker and the reader warm
        time.sleep(1)
        memory_before, stored_before = rss_mb(pid), store_bytes(service.data_dir)
        jobs, pipes = [], []
        for index in range(args.jobs):
            pipes.append(pipe_print_seconds(args.lines))
            jobs.append(run_job(transport, index, args.lines))
            job = jobs[-1]
            print(
                f"job {index}: print {job['print_seconds']:.2f} s (pipe {pipes[-1]:.2f} s), "
                f"{job['lines_per_second']:,.0f} lines/s readable, last line "
                f"{job['last_line_after_end']:.2f} s after the end; lost {job['lost']}, "
                f"duplicated {job['duplicated']}, out of order {job['out_of_order']}; "
                f"service {rss_mb(pid):.0f} MB",
                flush=True,
            )
        gc.collect()
        time.sleep(5)  # what the service gives back once the jobs have ended
        memory_after, stored_after = rss_mb(pid), store_bytes(service.data_dir)

    median = lambda key: statistics.median(job[key] for job in jobs)  # noqa: E731
    print_ratio = median("print_seconds") / statistics.median(pipes)
    lost = sum(job["lost"] for job in jobs)
    dup = sum(job["duplicated"] for job in jobs)
    reordered = sum(job["out_of_order"] for job in jobs)
    stored_ratio = (stored_after - stored_before) / printed
    checks = [
        (f"job print time vs a plain pipe (median): {print_ratio:.2f}", print_ratio <= 1.5, "<= 1.5"),
        (f"lines/s readable over REST (median): {median('lines_per_second'):,.0f}",
         median("lines_per_second") >= 100_000, ">= 100,000"),
        (f"last line readable after the job's end (median): {median('last_line_after_end'):.2f} s",
         median("last_line_after_end") <= 0.5, "<= 0.5 s"),
        (f"lines lost {lost}, duplicated {dup}, out of order {reordered}",
         lost == dup == reordered == 0, "0"),
        (f"service memory {memory_before:.0f} MB before, {memory_after:.0f} MB after",
         memory_after - memory_before <= 50, "within 50 MB"),
        (f"store grew {(stored_after - stored_before) / 1e6:.0f} MB for {printed / 1e6:.0f} MB "
         f"printed: {stored_ratio:.2f}", stored_ratio <= 1.2, "<= 1.2"),
    ]  # fmt: skip
    for text, ok, target in checks:
        print(f"{text} (target {target}: {'PASS' if ok else 'FAIL'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
