"""``service.json``: where a user's running service listens, and its token.

Written by the service once it is ready, in the data folder, readable by its user only:
holding the token is what makes a caller that user.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..files import write_private
from ..processes import pid_alive

RUNTIME_FILE = "service.json"


@dataclass
class ServiceInfo:
    url: str
    token: str
    pid: int
    host: str = field(default_factory=socket.gethostname)
    started: float = field(default_factory=time.time)

    def alive(self) -> bool:
        """The process still exists (it may be elsewhere: then only a request can tell)."""
        return self.host != socket.gethostname() or pid_alive(self.pid)


def runtime_path(data_dir: Path) -> Path:
    return Path(data_dir) / RUNTIME_FILE


def read_runtime(data_dir: Path) -> ServiceInfo | None:
    try:
        data = json.loads(runtime_path(data_dir).read_text())
        return ServiceInfo(**data)
    except (FileNotFoundError, ValueError, TypeError):
        return None


def write_runtime(data_dir: Path, info: ServiceInfo) -> None:
    path = runtime_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, json.dumps(asdict(info)))


def remove_runtime(data_dir: Path, pid: int) -> None:
    """Remove the file if it still describes the service ``pid`` (not a newer one)."""
    info = read_runtime(data_dir)
    if info is not None and info.pid == pid:
        runtime_path(data_dir).unlink(missing_ok=True)
