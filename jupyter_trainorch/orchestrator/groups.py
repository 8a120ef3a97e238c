"""Group submits: several jobs that name each other in their dependencies, created in one
transaction (all or none) and queued each after the jobs it waits on.

Every job is checked (its fit on the cluster, its references, the group's cycles) before
any is stored. An Idempotency-Key covers the whole group: job ``n`` carries ``KEY#n``,
so a client retrying after a lost answer gets the same jobs back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..spec import JobSpec, SpecError
from ..store import DuplicateSubmission, JobRecord
from .access import Forbidden
from .dependencies import check_group

if TYPE_CHECKING:
    from .service import Orchestrator


def check_replay(earlier: JobRecord, request_hash: str | None) -> None:
    """A key seen before must come with the same request."""
    if earlier.request_hash and request_hash != earlier.request_hash:
        raise SpecError(
            f"the Idempotency-Key was already used for job {earlier.id} with a different "
            "request; use a new key for a new job"
        )


def submit_group(
    orch: Orchestrator,
    jobs: list[tuple[JobSpec, bytes | None]],
    admin: bool,
    idempotency_key: str | None,
    request_hash: str | None,
) -> tuple[list[JobRecord], bool]:
    """The group's jobs in the order given, and whether they were made now (False: the
    key made them before)."""
    if not jobs:
        raise SpecError("jobs must hold at least one job")
    user = jobs[0][0].user
    if idempotency_key is not None:
        earlier = _earlier(orch, user, idempotency_key, request_hash, len(jobs))
        if earlier is not None:
            return earlier, False
    order = check_group([spec for spec, _ in jobs])
    ids: dict[str, str] = {}
    made: dict[int, tuple[JobRecord, set[str]]] = {}
    for n in order:
        spec, package = jobs[n]
        key = None if idempotency_key is None else f"{idempotency_key}#{n}"
        try:
            made[n] = orch.new_record(spec, package, None, key, request_hash, admin, group=ids)
        except (SpecError, Forbidden) as err:
            raise type(err)(f"jobs[{n}] ({spec.name}): {err}") from None
        ids[spec.name] = made[n][0].id
    try:
        orch.store.create_jobs([(made[n][0], jobs[n][1]) for n in range(len(jobs))])
    except DuplicateSubmission:  # the same key, at the same moment
        earlier = _earlier(orch, user, str(idempotency_key), request_hash, len(jobs))
        assert earlier is not None
        return earlier, False
    for n in order:
        orch.enqueue(made[n][0], made[n][1])
    return [made[n][0] for n in range(len(jobs))], True


def _earlier(
    orch: Orchestrator, user: str, key: str, request_hash: str | None, size: int
) -> list[JobRecord] | None:
    first = orch.store.find_by_idempotency_key(user, f"{key}#0")
    if first is None:
        return None
    check_replay(first, request_hash)
    found = [orch.store.find_by_idempotency_key(user, f"{key}#{n}") for n in range(size)]
    if any(job is None for job in found):
        raise SpecError(
            "the Idempotency-Key was already used for a group of another size; use a new key"
        )
    return [job for job in found if job is not None]
