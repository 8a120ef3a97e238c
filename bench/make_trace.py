"""Write a random job trace for ``trainorch simulate``: ``python bench/make_trace.py OUT.csv``.

10,000 jobs by default, arriving every 20 s on average; 1, 2, 4 or 8 GPUs; 1 to 60 minutes;
five priority draws (low, normal twice, high, urgent); ten users; half of the jobs state a
timeout of 1.5 times their run time (what lets them backfill).
"""

from __future__ import annotations

import argparse
import random


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    clock = 0.0
    with open(args.out, "w") as trace:
        trace.write("job_id,num_gpu,submit_time,duration,priority,user,timeout\n")
        for n in range(args.jobs):
            clock += rng.expovariate(1 / 20)
            gpus = rng.choice([1, 1, 1, 2, 4, 8])
            duration = rng.uniform(60, 3600)
            priority = rng.choice(["low", "normal", "normal", "high", "urgent"])
            timeout = f"{duration * 1.5:.0f}" if rng.random() < 0.5 else ""
            trace.write(
                f"j{n},{gpus},{clock:.1f},{duration:.1f},{priority},u{rng.randint(0, 9)},{timeout}\n"
            )


if __name__ == "__main__":
    main()
