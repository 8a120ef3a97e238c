"""Shared pieces of the CLI: exit codes, the transport, table and log printing."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

PROG = "trainorch"

# Exit codes: a job command that failed because of the user's input or the server's
# answer is 2, like an argparse usage error; 1 is kept for "the job itself failed".
EXIT_OK, EXIT_JOB_FAILED, EXIT_ERROR = 0, 1, 2


# -- helpers ---------------------------------------------------------------------------------


def _transport() -> Any:
    from ..client.transport import connect

    return connect()


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def _when(stamp: str | None) -> str:
    """An ISO UTC time from the job JSON, shown in local time to the second."""
    if not stamp:
        return "-"
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _percent(progress: dict[str, Any] | None) -> str:
    fraction = (progress or {}).get("fraction")
    return "-" if fraction is None else f"{fraction * 100:.0f}%"


def _priority(job: dict[str, Any]) -> str:
    return str(job.get("priority_class") or job.get("priority"))


def _attempts(job: dict[str, Any]) -> str:
    from ..client.job import attempts_text

    return attempts_text(job)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    # Names from the store may predate the checks on submit: never echo terminal controls.
    rows = [[_CONTROL.sub("?", cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _print_logs(lines: list[dict[str, Any]], shown: list[int | None], per_attempt: bool) -> None:
    """Print log lines, marking where a new attempt starts when all attempts are shown."""
    for line in lines:
        if per_attempt and line["attempt"] != shown[0]:
            if shown[0] is not None:
                print(f"--- attempt {line['attempt']} ---")
            shown[0] = line["attempt"]
        print(line["text"])
    sys.stdout.flush()


# -- commands --------------------------------------------------------------------------------
