"""Log lines in the job store: a row per batch of lines, as they arrived, compressed.

A job printing fast sends its lines in batches of up to a few thousand; a row per line
cost more to write, read and keep than the line itself. Each batch is one row holding
zlib-compressed JSON, and each line still has an id that only grows, which readers use as
their cursor (``read_logs(after=…)``): the batch's id times ``LINE_ID_STRIDE`` plus the
line's place in it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.engine import Engine

from ..log_batches import Line, pack, unpack
from .models import LogLine, iso
from .orm import LogBatchRow

MAX_BATCH_LINES = 2048
LINE_ID_STRIDE = 4096  # more than MAX_BATCH_LINES: ids of two batches never meet


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
                stored = {line[0] for row in overlapping for line in unpack(row.data)}
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
                        last_seq=max(seqs), lines=len(part), data=pack(part),
                    )
                )  # fmt: skip
        return len(fresh)

    def append_log_batch(
        self, job_id: str, attempt: int, data: bytes, first_seq: int, last_seq: int, count: int
    ) -> int:
        """Store a batch as a worker packed it (``log_batches.pack``: lines ``first_seq``
        to ``last_seq``, ``count`` of them), as it came when it overlaps no stored lines."""
        if not 0 < count <= MAX_BATCH_LINES or first_seq > last_seq:
            return self.append_logs(job_id, attempt, unpack(data))
        batch = {"job_id": job_id, "attempt": attempt, "first_seq": first_seq,
                 "last_seq": last_seq, "lines": count, "data": data}  # fmt: skip
        # Statements built once, on a plain connection: a job printing fast sends a
        # hundred batches a second, and building the statements cost 15x the writing.
        with self.engine.begin() as connection:
            if connection.scalar(_OVERLAPPING_BATCH, batch) is None:
                connection.execute(_INSERT_BATCH, batch)
                return count
        return self.append_logs(job_id, attempt, unpack(data))

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
        return {line[0] for row in rows for line in unpack(row.data)}

    def read_logs(
        self, job_id: str, attempt: int | None = None, after: int = 0, limit: int = 10_000
    ) -> list[LogLine]:
        """Lines with an id greater than ``after`` (ids only grow: a cursor), in order."""
        return [
            LogLine(base + index, job_id, n, seq, stream, text, time)
            for base, n, lines, start in self._log_batches(job_id, attempt, after, limit)
            for index, (seq, stream, text, time) in enumerate(lines, start)
        ]

    def read_log_page(
        self, job_id: str, attempt: int | None = None, after: int = 0, limit: int = 10_000
    ) -> list[dict[str, Any]]:
        """``read_logs`` as the REST API sends lines (``LogLine.to_dict``), built straight
        from the stored batches: a page of 10,000 lines is read at the speed a job prints."""
        page: list[dict[str, Any]] = []
        stamps: dict[float, str | None] = {}  # the lines of one read of a pipe share a time
        for base, n, lines, start in self._log_batches(job_id, attempt, after, limit):
            for time in {line[3] for line in lines}.difference(stamps):
                stamps[time] = iso(time)
            numbered = enumerate(lines, base + start)
            page.extend([{"id": line_id, "attempt": n, "seq": seq, "stream": stream,
                          "text": text, "time": stamps[time]}
                         for line_id, (seq, stream, text, time) in numbered])  # fmt: skip
        return page

    def _log_batches(
        self, job_id: str, attempt: int | None, after: int, limit: int
    ) -> Iterator[tuple[int, int, list[list[Any]], int]]:
        """``(first line id, attempt, lines, index of the first)``: the lines after the
        cursor, at most ``limit`` of them, batch by batch."""
        # Batches whose last line is past the cursor; the first may hold the cursor.
        query = _batches(job_id, attempt).where(
            LogBatchRow.id >= after // LINE_ID_STRIDE,
            LogBatchRow.id * LINE_ID_STRIDE + LogBatchRow.lines > after + 1,
        )
        left = limit
        with self._session() as session:
            for row in session.execute(query).yield_per(16):
                base = row.id * LINE_ID_STRIDE
                start = max(after - base + 1, 0)
                lines = unpack(row.data)[start : start + left]
                yield base, row.attempt, lines, start
                left -= len(lines)
                if left <= 0:
                    return


_OVERLAPPING_BATCH = (
    select(LogBatchRow.id)
    .where(
        LogBatchRow.job_id == bindparam("job_id"),
        LogBatchRow.attempt == bindparam("attempt"),
        LogBatchRow.first_seq <= bindparam("last_seq"),
        LogBatchRow.last_seq >= bindparam("first_seq"),
    )
    .limit(1)
)
_INSERT_BATCH = insert(LogBatchRow)


def _batches(job_id: str, attempt: int | None) -> Any:
    query = select(LogBatchRow.id, LogBatchRow.attempt, LogBatchRow.data).where(
        LogBatchRow.job_id == job_id
    )
    if attempt is not None:
        query = query.where(LogBatchRow.attempt == attempt)
    return query.order_by(LogBatchRow.id)
