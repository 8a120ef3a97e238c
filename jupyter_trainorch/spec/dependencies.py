"""Dependency conditions and the order of a group of jobs: pure logic, no I/O.

A job waits on each of its dependencies until that one ends; the condition says which
ends let it run: ``ok`` (succeeded; the ``--after`` of today), ``any`` (ended in any
way) or ``notok`` (failed or was cancelled). When a dependency ends the other way, the
waiting job can never run and is ended with one sentence saying why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .errors import SpecError

OK, ANY, NOTOK = "ok", "any", "notok"
CONDITIONS = (OK, ANY, NOTOK)
# The CLI and %%train flag of each condition, for messages that point at what the user typed.
FLAGS = {OK: "--after", ANY: "--after-any", NOTOK: "--after-notok"}
# What a dependency's state means for the job waiting on it.
WAIT, MET, NEVER = "wait", "met", "never"
_ENDED = ("succeeded", "failed", "cancelled")


def verdict(when: str, state: str) -> str:
    """``WAIT`` while the dependency has not ended, else ``MET`` or ``NEVER`` by ``when``."""
    if state not in _ENDED:
        return WAIT
    if when == ANY:
        return MET
    return MET if (state == "succeeded") == (when == OK) else NEVER


def never_reason(when: str, dep_id: str, state: str) -> str:
    """Why a job whose dependency ended the other way will not run, in one sentence."""
    if when == NOTOK:
        return f"it was to run only if dependency {dep_id} failed or was cancelled, and it {state}"
    return f"dependency {dep_id} {state}"


def waiting_text(when: str) -> str:
    """What a pending job waits for its dependency to do."""
    return {OK: "succeed", ANY: "end", NOTOK: "fail or be cancelled"}[when]


def conditional(after_any: Iterable[str], after_notok: Iterable[str]) -> list[dict[str, str]]:
    """``--after-any`` and ``--after-notok`` references as ``dependencies`` entries."""
    return [{"job": ref, "when": ANY} for ref in after_any] + [
        {"job": ref, "when": NOTOK} for ref in after_notok
    ]


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle among ``edges`` (job -> the jobs it waits on, only those of the group), as
    the path ``[a, b, a]``; None when there is none. Iterative: a long chain cannot
    overflow the stack."""
    color = dict.fromkeys(edges, 0)  # 0 unseen, 1 on the current path, 2 done
    for start in edges:
        if color[start]:
            continue
        path, stack = [start], [iter(edges[start])]
        color[start] = 1
        while stack:
            node = next((n for n in stack[-1] if n in color), None)
            if node is None:
                color[path.pop()] = 2
                stack.pop()
            elif color[node] == 1:
                return [*path[path.index(node) :], node]
            elif color[node] == 0:
                color[node] = 1
                path.append(node)
                stack.append(iter(edges[node]))
    return None


def group_order(edges: Mapping[str, Iterable[str]]) -> list[str]:
    """The jobs of a group, each after the jobs it waits on (ties in the given order), or
    a SpecError naming the jobs of a cycle."""
    cycle = find_cycle(edges)
    if cycle is not None:
        raise SpecError(f"the jobs' dependencies form a cycle: {' -> '.join(cycle)}")
    done: dict[str, None] = {}

    def visit(job: str) -> None:
        # Depth is bounded by the group's size (MAX_GROUP_JOBS), so recursion is safe here.
        if job in done:
            return
        for dep in edges[job]:
            if dep in edges:
                visit(dep)
        done[job] = None

    for job in edges:
        visit(job)
    return list(done)
