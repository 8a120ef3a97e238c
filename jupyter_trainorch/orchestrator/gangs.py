"""Multi-node attempts (gangs): one supervisor task per rank, launched, followed and ended
together.

Rank 0 is the attempt as a single-node job has it (its key, worker and GPU ids are the
attempt's); ranks 1..K-1 are ``Rank`` entries of its ``Running``, each a task pinned to
its own worker with a key derived from the attempt's. Each rank's request carries its
``GangRole`` (rank, world size, local rank among the ranks of its host, rank 0's host and
the rendezvous where rank 0 publishes its port: ``runner.gang``).

All or nothing: the first rank that fails (non-zero exit, lost worker, task error) stops
the others and fails the attempt as a whole, so the job's retry policy runs the whole
gang again; cancel, timeout and preemption stop every rank. Each rank's lines reach the
job's log (``[rank r]`` before those of ranks > 0, numbered so that they never collide).
A restarted orchestrator does not adopt a gang: it stops every rank it can find and runs
the attempt again as an infrastructure re-execution (``recovery``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..runner.protocol import AttemptOutcome, AttemptRequest, GangRole, attempt_key
from ..runner.supervisor import read_log

if TYPE_CHECKING:
    from .attempts import AttemptTracker, Running

log = logging.getLogger(__name__)


@dataclass
class Rank:
    """One rank of a multi-node attempt: its worker, GPU ids and supervisor task."""

    rank: int
    worker: str
    gpu_ids: tuple[str, ...]
    key: str
    future: Any = None


def extra_ranks(job_id: str, n: int, slots: Sequence[tuple[str, tuple[str, ...]]]) -> list[Rank]:
    """Ranks 1..K-1 of attempt ``n`` on the placement's other (worker, GPU ids)."""
    return [
        Rank(rank, worker, tuple(gpu_ids), attempt_key(job_id, n, rank))
        for rank, (worker, gpu_ids) in enumerate(slots, start=1)
    ]


def members(run: Running) -> list[Rank]:
    """Every rank of the attempt, rank 0 (the attempt itself) first."""
    return [Rank(0, run.worker, run.gpu_ids, run.key, run.future), *run.ranks]


def rendezvous_name(run: Running) -> str:
    return f"{run.key}-master"


def roles(run: Running) -> list[GangRole]:
    """Each rank's place in the gang, rank 0 first. Ranks sharing a host (workers of one
    machine) count as one node, with local ranks 0..n-1 in rank order."""
    from distributed.comm import get_address_host

    hosts = [get_address_host(member.worker) for member in members(run)]
    nodes = list(dict.fromkeys(hosts))
    found: list[GangRole] = []
    for rank, host in enumerate(hosts):
        found.append(
            {
                "rank": rank,
                "world_size": len(hosts),
                "local_rank": hosts[:rank].count(host),
                "local_world_size": hosts.count(host),
                "node_rank": nodes.index(host),
                "master_addr": hosts[0],
                "rendezvous": rendezvous_name(run),
            }
        )
    return found


def submit_ranks(tracker: AttemptTracker, run: Running, request: AttemptRequest) -> None:
    """One supervisor task per rank, each told its place in the gang."""
    for member, role in zip(members(run), roles(run), strict=True):
        own = {**request, "gang": role, "gpu_ids": list(member.gpu_ids)}
        future = tracker.submit(own, member.key, member.worker, member.gpu_ids)  # type: ignore[arg-type]
        if member.rank:
            member.future = future
        else:
            run.future = future


def _failed(outcome: AttemptOutcome) -> bool:
    return outcome.get("exit_code") != 0 or bool(outcome.get("cancelled"))


async def watch_gang(tracker: AttemptTracker, run: Running) -> None:
    """Follow every rank; at the first failure stop the others; then end the attempt once."""
    ranks = members(run)
    waiting = {
        asyncio.ensure_future(tracker.outcome_of(run, member.future)): member for member in ranks
    }
    outcomes: dict[int, AttemptOutcome] = {}
    failure: tuple[Rank, AttemptOutcome] | None = None
    try:
        while waiting:
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                member = waiting.pop(task)
                outcomes[member.rank] = task.result()
                if "exit_code" not in outcomes[member.rank] and (
                    member.worker not in tracker.backend.workers
                ):
                    outcomes[member.rank] = {
                        "error": f"worker {member.worker} was lost",
                        "infrastructure": True,
                    }
                if failure is None and _failed(outcomes[member.rank]):
                    failure = (member, outcomes[member.rank])
                    if waiting:
                        log.info("rank %d of %s failed: stopping the others", member.rank, run.key)
                        tracker.spawn(tracker.halt(run))
    finally:
        for task in waiting:
            task.cancel()
    await _fill_log_gaps(tracker, run, ranks, outcomes)
    await tracker.finish(run, _combined(outcomes, failure))
    for member in ranks[1:]:
        if "exit_code" in outcomes.get(member.rank, {}):
            tracker.collected(member.worker, member.key)
    _forget_rendezvous(tracker, run)


def _combined(
    outcomes: dict[int, AttemptOutcome], failure: tuple[Rank, AttemptOutcome] | None
) -> AttemptOutcome:
    """The attempt's outcome: rank 0's when every rank succeeded (its outputs are the
    job's), else the first failure's, naming its rank. Lines are already stored."""
    first = dict(outcomes.get(0) or {})
    if failure is not None:
        member, outcome = failure
        error = outcome.get("error") or "failed"
        first = {**first, **outcome, "error": f"rank {member.rank} on {member.worker}: {error}"}
        first.pop("outputs", None)
    first.pop("log_lines", None)
    return first  # type: ignore[return-value]


async def _fill_log_gaps(
    tracker: AttemptTracker,
    run: Running,
    ranks: list[Rank],
    outcomes: dict[int, AttemptOutcome],
) -> None:
    """Fetch each rank's lines whose events never arrived, from its worker's durable log.
    Rank r of K numbers its n-th line n*K + r (``runner.streams``)."""
    world = len(ranks)
    stored = tracker.store.log_seqs(run.job_id, run.n)
    for member in ranks:
        outcome = outcomes.get(member.rank) or {}
        total, path = int(outcome.get("log_lines") or 0), outcome.get("log_path", "")
        mine = [seq for seq in stored if seq % world == member.rank]
        if total <= len(mine) or not path or member.worker not in tracker.backend.workers:
            continue
        try:
            got = await tracker.backend.client.run(
                read_log, path, max(mine, default=0), workers=[member.worker]
            )
        except Exception as err:  # noqa: BLE001 - the lines stay on the worker
            log.warning("could not fetch the log of %s: %s", member.key, err)
            continue
        lines = [tuple(line) for line in got.get(member.worker) or []]
        if lines:
            tracker.store_lines(run, lines)


def _forget_rendezvous(tracker: AttemptTracker, run: Running) -> None:
    from distributed import Variable

    try:
        Variable(rendezvous_name(run), client=tracker.backend.client).delete()
    except Exception as err:  # noqa: BLE001 - the scheduler keeps a few bytes
        log.debug("could not delete the rendezvous of %s: %s", run.key, err)
