"""One rank of a multi-node attempt, on its worker: meeting rank 0, and the environment
``torch.distributed`` (``init_process_group`` with ``env://``) and torchrun-style scripts
expect.

Rank 0's supervisor chooses a free port on its host and publishes it in a Dask
``Variable`` named by the attempt (``GangRole.rendezvous``); the other ranks' supervisors
wait for it before they start their child, so every child starts knowing
``MASTER_ADDR:MASTER_PORT``. The orchestrator deletes the variable when the attempt ends.
"""

from __future__ import annotations

import socket
import threading
import time

from .protocol import GangRole

# How long a rank waits for rank 0's port: rank 0's task may itself wait for its worker.
RENDEZVOUS_TIMEOUT = 120.0


def free_port() -> int:
    """A TCP port free on this host now (rank 0's child binds it moments later)."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def meet_rank_zero(
    role: GangRole, cancelled: threading.Event, timeout: float = RENDEZVOUS_TIMEOUT
) -> int:
    """Rank 0: choose and publish the port. Other ranks: wait for it. Returns it."""
    from distributed import Variable

    variable = Variable(role["rendezvous"])
    if role["rank"] == 0:
        port = free_port()
        variable.set(port)
        return port
    deadline = time.monotonic() + timeout
    while not cancelled.is_set():
        try:
            return int(variable.get(timeout=1))
        except TimeoutError:
            if time.monotonic() > deadline:
                break
    why = "it was cancelled" if cancelled.is_set() else f"none came in {timeout:g}s"
    raise RuntimeError(f"rank {role['rank']} waited for rank 0's address and {why}")


def gang_environment(role: GangRole, master_port: int) -> dict[str, str]:
    """The variables torchrun would set for this rank."""
    return {
        "MASTER_ADDR": role["master_addr"],
        "MASTER_PORT": str(master_port),
        "RANK": str(role["rank"]),
        "WORLD_SIZE": str(role["world_size"]),
        "LOCAL_RANK": str(role["local_rank"]),
        "LOCAL_WORLD_SIZE": str(role["local_world_size"]),
        "NODE_RANK": str(role["node_rank"]),
        "GROUP_RANK": str(role["node_rank"]),
    }
