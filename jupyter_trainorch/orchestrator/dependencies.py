"""Dependencies between jobs: resolving references, releasing or ending the jobs that wait
when one ends, waiting again after a restart, and checking a group submitted together.

The conditions themselves (``ok``, ``any``, ``notok``) and cycle checks are pure logic in
``spec.dependencies``; this module applies them to the store and the queue. A job's
conditions live in its stored spec (``dependencies``, by id), so a restarted service
honours them without a column of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..spec import JobSpec, SpecError
from ..spec.dependencies import (
    FLAGS,
    MET,
    NEVER,
    NOTOK,
    OK,
    WAIT,
    group_order,
    never_reason,
    verdict,
    waiting_text,
)
from ..spec.model import Dependency
from ..store import CANCELLED, FAILED, PENDING, QUEUED, JobRecord, JobStore
from .access import Forbidden
from .data_inputs import check_data, release_problem

if TYPE_CHECKING:
    from .outcomes import JobOutcomes
    from .service import Orchestrator


def resolve(
    store: JobStore, spec: JobSpec, admin: bool, group: Mapping[str, str] | None = None
) -> set[str]:
    """Turn the spec's references into job ids, in place, and return the ids it must still
    wait on. A reference is a job id, the name of a job of the same ``group`` (a batch:
    name -> its new id), or else the name of the user's newest job of that name. A
    dependency that has already ended the other way, or another user's job (unless
    ``admin``), is refused with one sentence."""
    group = group or {}
    resolved: dict[str, Dependency] = {}
    refs: dict[str, str] = {}  # each reference as written -> its job id
    unfinished: set[str] = set()
    for dep in spec.conditions():
        flag = FLAGS[dep.when]
        if dep.job in group:
            dep_id = group[dep.job]
            unfinished.add(dep_id)  # created with this job: it has not run yet
        else:
            job = _find(store, dep.job, spec.user, flag)
            if job.user != spec.user and not admin:
                raise Forbidden(
                    f"{flag}: job {job.id} belongs to {job.user}; a job may wait only on jobs "
                    "of the same user"
                )
            state = verdict(dep.when, job.state)
            if state == NEVER:
                tail = "" if dep.when == OK else ", so this job would never run"
                raise SpecError(f"{flag}: job {job.id} ({job.name}) has already {job.state}{tail}")
            if state == WAIT:
                unfinished.add(job.id)
            dep_id = job.id
        resolved[dep_id] = Dependency(job=dep_id, when=dep.when)
        refs[dep.job] = dep_id
    spec.dependencies = list(resolved.values())
    spec.depends_on = list(resolved)
    if spec.data:
        check_data(store, spec, refs, unfinished, group)
    return unfinished


def _find(store: JobStore, ref: str, user: str, flag: str) -> JobRecord:
    job = store.get_job(ref)
    if job is not None:
        return job
    named = [j for j in store.list_jobs(text=ref, user=user or None, limit=1000) if j.name == ref]
    if not named:
        raise SpecError(f"{flag}: there is no job with id or name {ref!r}")
    return named[0]  # the newest


def check_group(specs: list[JobSpec]) -> list[int]:
    """The positions of a group's specs, each after the specs it waits on; a SpecError when
    two share a name or their dependencies form a cycle (naming the jobs)."""
    names: dict[str, int] = {}
    for n, spec in enumerate(specs):
        if spec.name in names:
            raise SpecError(
                f"jobs[{n}].name {spec.name!r} is also the name of jobs[{names[spec.name]}]; "
                "names in a group must be unique"
            )
        names[spec.name] = n
    edges = {spec.name: [d.job for d in spec.conditions() if d.job in names] for spec in specs}
    return [names[name] for name in group_order(edges)]


def dependency_reason(job: JobRecord, states: Mapping[str, str]) -> str:
    """Why a pending job waits, in one sentence (``states``: the current state of each
    dependency that still exists)."""
    for dep_id, when in job.conditions.items():
        state = states.get(dep_id, "gone")
        if verdict(when, state) != MET:
            return f"waiting for dependency {dep_id} ({state}) to {waiting_text(when)}"
    return "its dependencies ended as it needs; it is being queued"


def check_retry(store: JobStore, job: JobRecord) -> str | None:
    """Why ``job`` cannot be retried now because of its dependencies, or None."""
    for dep_id, when in job.conditions.items():
        dep = store.get_job(dep_id)
        if dep is None or verdict(when, dep.state) != MET:
            state = "gone" if dep is None else dep.state
            return f"job {job.id} depends on {dep_id}, which has {state}"
    return None


def settle_dependents(outcomes: JobOutcomes, job_id: str, state: str) -> None:
    """``job_id`` ended in ``state``: queue the jobs that waited only on it, end those that
    can now never run."""
    for dependent in outcomes.queue.take_dependents(job_id):
        waiting = outcomes.store.get_job(dependent)
        if waiting is None or waiting.state != PENDING:
            outcomes.queue.forget(dependent)
            continue
        when = waiting.conditions.get(job_id, OK)
        if verdict(when, state) == NEVER:
            _never(outcomes, dependent, job_id, when, state)
        elif outcomes.queue.dependency_met(dependent, job_id):
            problem = release_problem(waiting, outcomes.store)
            if problem:  # before it is queued, so before it holds a GPU
                outcomes.queue.forget(dependent)
                outcomes.end_job(dependent, FAILED, error=problem)
                continue
            outcomes.store.update_job(dependent, state=QUEUED)
            queued = outcomes.store.get_job(dependent)
            assert queued is not None
            outcomes.queue.add(queued)
            outcomes.publish(queued, QUEUED)


def _never(outcomes: JobOutcomes, job_id: str, dep_id: str, when: str, state: str) -> None:
    outcomes.queue.forget(job_id)
    # Not running because the other branch was taken is no failure of the job's own.
    ending = CANCELLED if when == NOTOK else FAILED
    outcomes.end_job(job_id, ending, error=never_reason(when, dep_id, state))


def wait_again(orch: Orchestrator, job: JobRecord) -> None:
    """After a restart: wait on the dependencies still running, end the job if one ended
    the other way (or is gone), queue it if all ended as it needed."""
    waiting = set()
    for dep_id, when in job.conditions.items():
        dep = orch.store.get_job(dep_id)
        if dep is None:
            orch.outcomes.end_job(job.id, FAILED, error=f"dependency {dep_id} was lost")
            return
        state = verdict(when, dep.state)
        if state == NEVER:
            _never(orch.outcomes, job.id, dep_id, when, dep.state)
            return
        if state == WAIT:
            waiting.add(dep_id)
    if waiting:
        orch.queue.wait_for(job.id, waiting)
    else:
        orch.outcomes.requeue(job)  # its dependencies ended while nobody listened
