"""Gangs: a multi-node job (``nodes`` = K > 1) runs as K ranks on K distinct workers.

All or nothing: :func:`~.placement.plan` starts a gang only when K unreserved workers each
fit one node's demand now (best fit per node, as for single jobs); otherwise it holds K
workers that could each hold a node (most free first), and nothing later starts there
except a job proven to end before the held worker frees up (backfill). When fewer than K
workers are left unreserved, the gang waits and holds nothing: what is held for jobs ahead
starts first. Gangs themselves never backfill and never preempt: stopping jobs on K
workers for one job is a decision left to people. Pure, like the rest of the policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

from .wording import Shape, demand_text, names_text, plural


def pick(candidates: Iterator[int], nodes: int) -> list[int] | None:
    """The first ``nodes`` of ``candidates`` (distinct workers, in preference order), or
    None when there are fewer: a gang takes all of its workers or none."""
    chosen = list(islice(candidates, nodes))
    return chosen if len(chosen) == nodes else None


def node_text(nodes: int, shape: Shape) -> str:
    return f"{plural(nodes, 'node')} of {demand_text(shape)} each, on distinct workers"


def gang_waits_text(nodes: int, shape: Shape, held: list[str]) -> str:
    """A gang that holds workers for itself."""
    return (
        f"needs {node_text(nodes, shape)}, which are not all free now; "
        f"{names_text(held)} {'is' if len(held) == 1 else 'are'} held for it "
        "and it starts there next"
    )


def gang_held_text(nodes: int, shape: Shape, ahead: list[str]) -> str:
    """A gang that could run on the cluster but finds too few workers not held for others."""
    if ahead:
        return (
            f"needs {node_text(nodes, shape)}; too few of the workers that could hold a "
            f"node are free or unheld (held for jobs ahead of it: {names_text(ahead)})"
        )
    return f"needs {node_text(nodes, shape)}, which are not all free now"


def gang_shortfall(nodes: int, shape: Shape, holders: int, workers: int) -> str:
    """A gang larger than the cluster: fewer workers than nodes could ever hold a node."""
    return (
        f"the job asks for {node_text(nodes, shape)} but only {holders} of the cluster's "
        f"{plural(workers, 'worker')} could hold one node (--nodes at most {holders})"
    )
