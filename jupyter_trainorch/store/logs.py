"""Log lines in the job store: a row per batch of lines, as they arrived, compressed.

A job printing fast sends its lines in batches of up to a few thousand; a row per line
cost more to write, read and keep than the line itself. Each batch is one row holding
zlib-compressed JSON, and each line still has an id that only grows, which readers use as
their cursor (``read_logs(after=…)``): the batch's id times ``LINE_ID_STRIDE`` plus the
line's place in it.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine

from .models import LogLine
from .orm import LogBatchRow

MAX_BATCH_LINES = 2048
LINE_ID_STRIDE = 4096  # more than MAX_BATCH_LINES: ids of two batches never meet
# Fast and still 3-10x on program output; level 6 costs 3x the CPU for a few % more.
COMPRESSION_LEVEL = 1

Line = tuple[int, str, str, float]  # (seq, stream, text, time)


class LogStore:
    """The log part of ``JobStore`` (which provides ``engine`` and ``_session``)."""

    engine: Engine
    _session: Any

    def append_logs(self, job_id: str, attempt: int, lines: Sequence[Line]) -> int:
        """Store ``(seq, stream, text, time)`` lines; a line already stored is skipped
        (a batch sent again, a gap filled from the worker's file). The number stored."""
        if not lines:
            return 0
        low, high = min(line[0] for line in lines), max(line[0] for line in lines)
        with self._session.begin() as session:
            # The lines of one attempt arrive from one place at a time (its worker, or
            # the service reading the worker's file), under the attempt's lock here.
            overlapping = session.execute(
                _batches(job_id, attempt).where(
                    LogBatchRow.first_seq <= high, LogBatchRow.last_seq >= low
                )
            ).all()
            if overlapping:
                stored = {line[0] for row in overlapping for line in _unpack(row.data)}
                lines = [line for line in lines if line[0] not in stored]
            unique: dict[int, Line] = {}
            for line in lines:
                unique.setdefault(line[0], tuple(line))  # type: ignore[arg-type]
            fresh = list(unique.values())
            for start in range(0, len(fresh), MAX_BATCH_LINES):
                part = fresh[start : start + MAX_BATCH_LINES]
                seqs = [line[0] for line in part]
                session.execute(
                    insert(LogBatchRow).values(
                        job_id=job_id, attempt=attempt, first_seq=min(seqs),
                        last_seq=max(seqs), lines=len(part), data=_pack(part),
                    )
                )  # fmt: skip
        return len(fresh)

    def max_log_seq(self, job_id: str, attempt: int) -> int:
        """The highest stored line number of an attempt (0 when it has none)."""
        with self._session() as session:
            highest = session.scalar(
                select(func.max(LogBatchRow.last_seq)).where(
                    LogBatchRow.job_id == job_id, LogBatchRow.attempt == attempt
                )
            )
        return int(highest or 0)

    def log_seqs(self, job_id: str, attempt: int) -> set[int]:
        with self._session() as session:
            rows = session.execute(_batches(job_id, attempt)).all()
        return {line[0] for row in rows for line in _unpack(row.data)}

    def read_logs(
        self, job_id: str, attempt: int | None = None, after: int = 0, limit: int = 10_000
    ) -> list[LogLine]:
        """Lines with an id greater than ``after`` (ids only grow: a cursor), in order."""
        query = _batches(job_id, attempt).where(LogBatchRow.id >= after // LINE_ID_STRIDE)
        found: list[LogLine] = []
        with self._session() as session:
            for row in session.execute(query).yield_per(16):
                base = row.id * LINE_ID_STRIDE
                found.extend(
                    LogLine(base + index, job_id, row.attempt, seq, stream, text, time)
                    for index, (seq, stream, text, time) in enumerate(_unpack(row.data))
                    if base + index > after
                )
                if len(found) >= limit:
                    break
        return found[:limit]


def _batches(job_id: str, attempt: int | None) -> Any:
    query = select(LogBatchRow.id, LogBatchRow.attempt, LogBatchRow.data).where(
        LogBatchRow.job_id == job_id
    )
    if attempt is not None:
        query = query.where(LogBatchRow.attempt == attempt)
    return query.order_by(LogBatchRow.id)


def _pack(lines: Sequence[Line]) -> bytes:
    return zlib.compress(json.dumps(lines).encode(), COMPRESSION_LEVEL)  # tuples as arrays


def _unpack(data: bytes) -> list[list[Any]]:
    return json.loads(zlib.decompress(data))
