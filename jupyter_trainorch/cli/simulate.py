"""``trainorch simulate TRACE.csv``: replay a job trace through the placement policy."""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
from pathlib import Path
from typing import Any

from ..spec.errors import SpecError
from .common import EXIT_OK

REQUIRED_COLUMNS = ("job_id", "num_gpu", "submit_time", "duration")
MAX_TRACE_JOBS = 1_000_000
MAX_WORKERS = 100_000
MAX_GPUS_PER_WORKER = 1024


def cmd_simulate(args: argparse.Namespace) -> int:
    from ..policy import PreemptionRules, simulate
    from ..spec.units import PRIORITY_CLASSES

    workers, gpus = parse_cluster(args.cluster)
    if not math.isfinite(args.half_life) or not 1 <= args.half_life <= 366 * 86400:
        raise SpecError(f"--half-life must be 1 to 31622400 seconds, not {args.half_life!r}")
    for flag, value in (("--min-runtime", args.min_runtime),
                        ("--checkpoint-every", args.checkpoint_every)):  # fmt: skip
        if not math.isfinite(value) or not 0 <= value <= 366 * 86400:
            raise SpecError(f"{flag} must be 0 to 31622400 seconds, not {value!r}")
    trace = read_trace(Path(args.trace))
    rules = PreemptionRules(min_runtime=args.min_runtime) if args.preemption else None
    result = simulate.simulate(
        trace, workers, gpus, args.policy, args.half_life, rules, args.checkpoint_every
    )
    figures = simulate.summary(result, {v: k for k, v in PRIORITY_CLASSES.items()})
    figures = {"policy": args.policy, "cluster": f"{workers}x{gpus}", **figures}
    if args.plot:
        _plot(result, Path(args.plot))
    if args.json:
        print(json.dumps(_finite(figures), indent=2))
    else:
        print(_text(figures))
    return EXIT_OK


def parse_cluster(text: str) -> tuple[int, int]:
    """``WORKERSxGPUS`` (``32x4``: 32 workers of 4 GPUs each)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text or "")
    if not match:
        raise SpecError(f"--cluster must be WORKERSxGPUS, e.g. 32x4, not {text!r}")
    workers, gpus = int(match.group(1)), int(match.group(2))
    if not 1 <= workers <= MAX_WORKERS or not 1 <= gpus <= MAX_GPUS_PER_WORKER:
        raise SpecError(
            f"--cluster needs 1 to {MAX_WORKERS} workers of 1 to {MAX_GPUS_PER_WORKER} GPUs, "
            f"not {text!r}"
        )
    return workers, gpus


def read_trace(path: Path) -> list[Any]:
    """The trace's jobs; columns ``job_id,num_gpu,submit_time,duration`` and optionally
    ``priority`` (a class name or a number), ``user`` and ``timeout`` (the run-time bound
    the scheduler knows, which lets a job backfill); other columns are ignored."""
    from ..policy.simulate import TraceJob
    from ..spec.units import parse_priority

    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as err:
        raise SpecError(f"cannot read the trace {path}: {err.strerror or err}") from None
    jobs = []
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SpecError(f"{path}: the trace needs the column(s) {', '.join(missing)}")
        try:
            for row in reader:
                where = f"{path} line {reader.line_num}"
                if len(jobs) >= MAX_TRACE_JOBS:
                    raise SpecError(f"{path}: a trace holds at most {MAX_TRACE_JOBS} jobs")
                priority = (row.get("priority") or "").strip() or "normal"
                try:
                    priority_value = parse_priority(priority)
                except SpecError as err:
                    raise SpecError(f"{where}: {err}") from None
                jobs.append(
                    TraceJob(
                        job_id=(row["job_id"] or "").strip()[:200],
                        gpus=_number(row, "num_gpu", where, whole=True),
                        submit=_number(row, "submit_time", where),
                        duration=_number(row, "duration", where),
                        priority=priority_value,
                        user=(row.get("user") or "").strip()[:200],
                        timeout=_number(row, "timeout", where)
                        if (row.get("timeout") or "").strip()
                        else None,
                    )
                )
        except (csv.Error, UnicodeDecodeError) as err:
            raise SpecError(f"{path}: not a readable CSV trace ({err})") from None
    return jobs


def _number(row: dict[str, str], column: str, where: str, whole: bool = False) -> Any:
    text = (row.get(column) or "").strip()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (whole and value != int(value)):
        kind = "a whole number" if whole else "a number of seconds"
        raise SpecError(f"{where}: {column} must be {kind} of 0 or more, not {text!r}")
    return int(value) if whole else value


def _finite(value: Any) -> Any:
    """JSON has no NaN: a figure that has no value (no job in a class) is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _seconds(value: Any) -> str:
    return "-" if not isinstance(value, (int, float)) or math.isnan(value) else f"{value:,.1f} s"


def _text(figures: dict[str, Any]) -> str:
    lines = [
        f"policy {figures['policy']} on {figures['cluster']}: {figures['jobs']} jobs"
        + (f" ({figures['never_started']} refused: larger than every worker)"
           if figures["never_started"] else ""),
        f"  JCT            mean {_seconds(figures['jct_mean'])}   p95 {_seconds(figures['jct_p95'])}",
        f"  queueing delay mean {_seconds(figures['wait_mean'])}   p95 {_seconds(figures['wait_p95'])}",
        f"  GPU utilisation {figures['gpu_utilisation'] * 100:.1f} %   makespan "
        f"{_seconds(figures['makespan'])}",
        f"  preemptions {figures['preemptions']} ({figures['lost_gpu_hours']:,.1f} GPU-hours "
        f"redone)   backfilled {figures['backfilled']}   priority inversions "
        f"{figures['priority_inversions']}",
    ]  # fmt: skip
    for title, key in (("per priority class", "per_class"), ("per user", "per_user")):
        groups = figures[key]
        if len(groups) < 2:
            continue
        lines.append(f"  {title}:")
        for name, group in groups.items():
            lines.append(
                f"    {name:<12} {group['jobs']:>7} jobs   wait mean {_seconds(group['wait_mean'])}"
                f"   p95 {_seconds(group['wait_p95'])}   JCT p95 {_seconds(group['jct_p95'])}"
            )
    return "\n".join(lines)


def _plot(result: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    times = [t for t, _, _ in result.busy]
    figure, (gpus, queue) = plt.subplots(2, 1, sharex=True, figsize=(9, 5))
    gpus.step(times, [b for _, b, _ in result.busy], where="post")
    gpus.set_ylabel("GPUs busy")
    gpus.set_ylim(0, result.gpus * 1.05)
    queue.step(times, [q for _, _, q in result.busy], where="post", color="tab:orange")
    queue.set_ylabel("jobs queued")
    queue.set_xlabel("seconds from the trace's start")
    figure.tight_layout()
    try:
        figure.savefig(path)
    except OSError as err:
        raise SpecError(f"--plot: cannot write {path}: {err.strerror or err}") from None
    finally:
        plt.close(figure)
