"""How good the placement policy's decisions are, against a FIFO queue, on generated traces.

Run ``python bench/policy_quality.py``. Each trace is a shared 8x4-GPU cluster over a working
day: one user's 200-job sweep lands in a burst, a team submits a 40-job sweep every hour, a
small user submits a single job every 30 minutes and on-call engineers an urgent job every
20 minutes. The same trace runs through ``trainorch simulate``'s engine with the service's
policy (``fair``: priority classes, fair share inside each, backfill of the sweeps that state
a timeout, urgent jobs preempting) and with ``fifo`` (submission order only, what a plain
shared queue does), and the script prints the ratios the scheduling issue targets.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jupyter_trainorch.policy import PreemptionRules  # noqa: E402
from jupyter_trainorch.policy.simulate import (  # noqa: E402
    TraceJob,
    percentile,
    simulate,
    summary,
)

LOW, NORMAL, HIGH, URGENT = 0, 100, 200, 300
HOUR = 3600.0


def make_trace(seed: int) -> list[TraceJob]:
    rng = random.Random(seed)
    jobs: list[TraceJob] = []

    def add(user: str, submit: float, gpus: int, minutes: float, priority: int) -> None:
        # Sweeps state a timeout (twice their usual run time), which lets them backfill.
        timeout = 2 * minutes * 60 if user in ("sweeper", "team") else None
        duration = max(30.0, rng.gauss(minutes, minutes / 4) * 60)
        duration = min(duration, timeout) if timeout else duration
        jobs.append(
            TraceJob(f"{user}-{len(jobs)}", gpus, submit, duration, priority, user, timeout)
        )

    start = rng.uniform(0, 600)
    for n in range(200):  # the sweep: 200 one-GPU trials within two minutes
        add("sweeper", start + n * 0.6, 1, 20, NORMAL)
    for hour in range(8):  # the team's hourly sweep of 40 two-GPU trials
        for n in range(40):
            add("team", hour * HOUR + rng.uniform(0, 300) + n, 2, 15, NORMAL)
    t = rng.uniform(0, 1800)
    while t < 8 * HOUR:  # a small user's single jobs
        add("small", t, 1, 10, NORMAL)
        t += rng.uniform(1200, 2400)
    t = rng.uniform(0, 1200)
    while t < 8 * HOUR:  # urgent jobs: 1 or 2 GPUs for a few minutes
        add("oncall", t, rng.choice((1, 2)), 5, URGENT)
        t += rng.expovariate(1 / 1200)
    for _ in range(60):  # background low-priority work
        add("batch", rng.uniform(0, 8 * HOUR), rng.choice((1, 4)), 45, LOW)
    return sorted(jobs, key=lambda job: job.submit)


def figures(trace: list[TraceJob], policy: str, workers: int, gpus: int) -> dict[str, float]:
    # The service's defaults: urgent jobs preempt jobs that ran 10 minutes; jobs are
    # taken to checkpoint every 10 minutes.
    result = simulate(trace, workers, gpus, policy, preemption=PreemptionRules(),
                      checkpoint_every=600)  # fmt: skip
    overall = summary(result)
    waits = {
        user: [o.wait for o in result.outcomes if o.job.user == user]
        for user in ("oncall", "small")
    }
    return {
        "jct_mean": float(overall["jct_mean"]),  # type: ignore[arg-type]
        "urgent_p95": percentile(waits["oncall"], 95),
        "small_p95": percentile(waits["small"], 95),
        "utilisation": float(overall["gpu_utilisation"]),  # type: ignore[arg-type]
        "inversions": float(overall["priority_inversions"]),  # type: ignore[arg-type]
        "preemptions": float(result.preemptions),
        "backfilled": float(result.backfilled),
    }


def ratio(ours: float, baseline: float) -> float:
    return ours / baseline if baseline > 0 else (0.0 if ours == 0 else float("inf"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=5, help="generated traces (seeds 0..N-1)")
    parser.add_argument("--cluster", default="8x4", help="WORKERSxGPUS (default 8x4)")
    args = parser.parse_args()
    workers, gpus = (int(part) for part in args.cluster.split("x"))
    print(f"policy quality on {args.cluster} GPUs, {args.traces} generated 8-hour traces")
    print(f"{'seed':>4} {'jobs':>5}  {'avg JCT':>9}  {'urgent p95':>10}  {'small p95':>9}  "
          f"{'util':>6}  {'inversions':>10}  {'preempted':>9}  {'backfilled':>10}")  # fmt: skip
    rows = []
    for seed in range(args.traces):
        trace = make_trace(seed)
        ours, fifo = (
            figures(trace, "fair", workers, gpus),
            figures(trace, "fifo", workers, gpus),
        )
        row = {
            "jct": ratio(ours["jct_mean"], fifo["jct_mean"]),
            "urgent": ratio(ours["urgent_p95"], fifo["urgent_p95"]),
            "small": ratio(ours["small_p95"], fifo["small_p95"]),
            "util": ours["utilisation"] - fifo["utilisation"],
            "inversions": ours["inversions"],
            "preemptions": ours["preemptions"],
            "backfilled": ours["backfilled"],
        }
        rows.append(row)
        print(f"{seed:>4} {len(trace):>5}  {row['jct']:>8.2f}x  {row['urgent']:>9.2f}x  "
              f"{row['small']:>8.2f}x  {row['util'] * 100:>+5.1f}%  {row['inversions']:>10.0f}"
              f"  {row['preemptions']:>9.0f}  {row['backfilled']:>10.0f}")  # fmt: skip
    worst = {key: max(row[key] for row in rows) for key in ("jct", "urgent", "small")}
    util = min(row["util"] for row in rows)
    checks = [
        ("avg JCT <= FIFO's", worst["jct"] <= 1.0, f"worst {worst['jct']:.2f}x"),
        ("urgent p95 wait <= 10 % of FIFO's", worst["urgent"] <= 0.10, f"worst {worst['urgent']:.2f}x"),
        ("small user's p95 wait <= 25 % of FIFO's", worst["small"] <= 0.25, f"worst {worst['small']:.2f}x"),
        ("utilisation within 2 % of FIFO's", util >= -0.02, f"worst {util * 100:+.1f} %"),
        ("no priority inversion", all(r["inversions"] == 0 for r in rows), ""),
    ]  # fmt: skip
    print("ratios are fair (the service's policy) / fifo on the same trace (lower is better)")
    for name, met, detail in checks:
        print(f"target {name}: {'met' if met else 'MISS'} {detail}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
