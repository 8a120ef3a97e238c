"""Jobs that need more GPUs than one worker has: the GPUs of several workers of one host.

dask-cuda starts one worker per GPU, yet a job runs in a child process that may use any
GPU of its host. So a single-node job asking for more GPUs than any one worker has takes
them from several workers of one host, all at once or not at all: the worker with the most
free GPUs (that also has the job's CPUs and memory) runs it, the others lend their GPUs
(``Placement.borrowed``) and take nothing else of the job. Best fit: the host that has
the fewest free GPUs that are still enough. When no host has them free, the job holds the
workers of the host closest to enough, so that smaller jobs cannot starve it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .board import CPU_SLACK, Board
from .model import Placement, WorkerView, host_of
from .wording import Shape, demand_text, names_text, plural


def needs_host(gpus: int, board: Board) -> bool:
    """More GPUs than any one worker has: only a host's workers together can hold it."""
    return gpus > board.largest_gpus > 0 and bool(_hosts(board))


def pooling(workers: Sequence[WorkerView]) -> bool:
    """Whether the workers of some host may pool their GPUs."""
    return bool(_hosts(Board(workers)))


def _hosts(board: Board) -> dict[str, list[int]]:
    """The workers of each host that may pool their GPUs: only where every GPU id of the
    host is one worker's (physical ids, as dask-cuda workers have them); workers that
    all call their GPU "0" cannot tell which GPUs a pooled job would get."""
    hosts: dict[str, list[int]] = {}
    for index, address in enumerate(board.address):
        hosts.setdefault(host_of(address), []).append(index)
    return {
        host: members
        for host, members in hosts.items()
        if len(members) > 1 and _distinct(board.gpu_ids[i] for i in members)
    }


def _distinct(id_lists: Iterable[tuple[str, ...]]) -> bool:
    seen: set[str] = set()
    for ids in id_lists:
        if seen & set(ids):
            return False
        seen.update(ids)
    return True


def _runs_it(board: Board, index: int, cpus: float, memory: int, free: bool) -> bool:
    """Whether worker ``index`` can run the job's process (CPUs and memory), now or ever."""
    cap_memory = board.cap_memory[index]
    if free:
        return board.free_cpus[index] + CPU_SLACK >= cpus and (
            not memory or not cap_memory or board.free_memory[index] >= memory
        )
    return board.cap_cpus[index] + CPU_SLACK >= cpus and (
        not memory or not cap_memory or cap_memory >= memory
    )


def place_on_host(board: Board, job_id: str, shape: Shape) -> Placement | None:
    """Take the GPUs now from the workers of one host, or None."""
    gpus, cpus, memory = shape
    best: tuple[int, str, list[int]] | None = None
    for host, members in _hosts(board).items():
        free = [i for i in members if not board.held[i]]
        total = sum(len(board.free_ids[i]) for i in free)
        runners = [i for i in free if _runs_it(board, i, cpus, memory, free=True)]
        if total >= gpus and runners and (best is None or total < best[0]):
            best = (total, host, free)
    if best is None:
        return None
    members = sorted(best[2], key=lambda i: (-len(board.free_ids[i]), board.address[i]))
    primary = next(i for i in members if _runs_it(board, i, cpus, memory, free=True))
    own = board.take(primary, min(gpus, len(board.free_ids[primary])), cpus, memory)
    ids, borrowed, missing = list(own), [], gpus - len(own)
    for index in members:
        if missing <= 0:
            break
        if index == primary or not board.free_ids[index]:
            continue
        lent = board.take(index, min(missing, len(board.free_ids[index])), 0.0, 0)
        borrowed.append((board.address[index], lent))
        ids.extend(lent)
        missing -= len(lent)
    return Placement(job_id, board.address[primary], tuple(ids), borrowed=tuple(borrowed))


def hold_host(board: Board, shape: Shape) -> list[int] | None:
    """The unheld workers of the host to keep for the job (the one with the most GPUs free
    among those that could ever hold it), or None when no host could."""
    gpus, cpus, memory = shape
    best: tuple[int, list[int]] | None = None
    for members in _hosts(board).values():
        free = [i for i in members if not board.held[i]]
        capacity = sum(board.cap_gpus[i] for i in free)
        if capacity < gpus or not any(_runs_it(board, i, cpus, memory, False) for i in free):
            continue
        total = sum(len(board.free_ids[i]) for i in free)
        if best is None or total > best[0]:
            best = (total, [i for i in free if board.cap_gpus[i]])
    return best[1] if best else None


def host_fit_error(shape: Shape, workers: Sequence[WorkerView]) -> str | None:
    """None if the GPUs of some host's workers together could hold the job, else why not."""
    gpus, cpus, memory = shape
    board = Board(workers)
    hosts = _hosts(board)
    for members in hosts.values():
        if sum(board.cap_gpus[i] for i in members) >= gpus and any(
            _runs_it(board, i, cpus, memory, False) for i in members
        ):
            return None
    largest = max(
        (sum(board.cap_gpus[i] for i in m), -n, h) for n, (h, m) in enumerate(hosts.items())
    )
    return (
        f"the job asks for {demand_text(shape)} but the largest host has "
        f"{plural(largest[0], 'GPU')} ({largest[2]}; the largest worker has "
        f"{board.largest_gpus}); a job's GPUs must be on one host "
        "(use nodes for several)"
    )


def host_waits_text(shape: Shape, held: list[str]) -> str:
    return (
        f"needs {demand_text(shape)} on one host, which no host has free now; its workers "
        f"{names_text(held)} are held for it and it starts there next"
    )
