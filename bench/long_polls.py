"""Do long polls hold up other requests? ``GET jobs`` latency with many waiters open.

Run ``python bench/long_polls.py [--waiters 200] [--reads 100]``. It starts ``trainorch
serve`` (one local worker, tracking off), submits a job that sleeps, then opens
``--waiters`` long polls at once — half ``GET events?timeout=30``, half ``GET
jobs/{id}/logs?wait=30`` (what ``job.wait()``, ``--wait`` and ``logs --follow`` do) — and
times ``--reads`` plain ``GET jobs`` while they wait. The baseline is the same reads
against the same service with no waiter open, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from harness import percentile, trainorch_service
from tornado.httpclient import AsyncHTTPClient, HTTPRequest


async def run(url: str, token: str, waiters: int, reads: int) -> dict[str, float]:
    AsyncHTTPClient.configure(None, max_clients=waiters + 10)
    client = AsyncHTTPClient()
    headers = {"Authorization": f"token {token}"}

    async def call(path: str, method: str = "GET", body: object = None, timeout: float = 60):
        request = HTTPRequest(url + "trainorch/api/" + path, method=method, headers=headers,
                              body=json.dumps(body) if body is not None else None,
                              request_timeout=timeout)  # fmt: skip
        return json.loads((await client.fetch(request)).body)

    async def timed_reads() -> list[float]:
        times = []
        for _ in range(reads):
            started = time.perf_counter()
            await call("jobs")
            times.append((time.perf_counter() - started) * 1000)
        return times

    job = await call("jobs", "POST", {"spec": {"name": "sleeper", "kind": "command",
                                              "command": "sleep 60"}})  # fmt: skip
    await timed_reads()  # warm up, and the job reaches running
    idle = await timed_reads()
    await asyncio.sleep(2.0)
    last = (await call("events?timeout=0"))["last"]
    polls = [
        asyncio.ensure_future(call(f"events?after={last}&timeout=30"
                                   if i % 2 else f"jobs/{job['id']}/logs?after=999999999&wait=30"))
        for i in range(waiters)
    ]  # fmt: skip
    await asyncio.sleep(2.0)  # every waiter is open and waiting
    busy = await timed_reads()
    still_waiting = sum(not poll.done() for poll in polls)
    await call(f"jobs/{job['id']}", "DELETE")
    await asyncio.gather(*polls, return_exceptions=True)
    return {
        "idle_p50": percentile(idle, 50), "idle_p95": percentile(idle, 95),
        "busy_p50": percentile(busy, 50), "busy_p95": percentile(busy, 95),
        "still_waiting": still_waiting,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiters", type=int, default=200)
    parser.add_argument("--reads", type=int, default=100)
    args = parser.parse_args()
    with trainorch_service() as service:
        figures = asyncio.run(run(service.url, service.token, args.waiters, args.reads))
    print(
        f"GET jobs, no waiters:         p50 {figures['idle_p50']:.1f} ms, p95 {figures['idle_p95']:.1f} ms"
    )
    print(f"waiters still open after the reads: {figures['still_waiting']} of {args.waiters}")
    print(f"GET jobs, {args.waiters} waiters open: p50 {figures['busy_p50']:.1f} ms, "
          f"p95 {figures['busy_p95']:.1f} ms")  # fmt: skip
    print(
        f"ratio p95 busy/idle: {figures['busy_p95'] / figures['idle_p95']:.2f} (target: p95 < 50 ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
