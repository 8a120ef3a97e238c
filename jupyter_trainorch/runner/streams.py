"""A child's output: split into lines, masked, capped, batched into sequenced events.

Dask keeps only the last 1,000 events per topic and drops events while no client
listens, so lines travel in batches (about 100 lines or 250 ms) with sequence
numbers, and every line is also appended to a durable file on the worker from
which the orchestrator fills any gap. Secret values are masked before a line goes
anywhere; past the attempt's cap, lines are counted out but no longer kept.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .masking import SecretMask

MAX_BATCH_LINES = 100
FLUSH_INTERVAL = 0.25
MAX_LINE_CHARS = 8192
MAX_POINTS_PER_BATCH = 1000
# Bytes of one line held while waiting for its end: a job that writes without newlines
# must not fill the worker's memory. Far more than the MAX_LINE_CHARS that are kept.
MAX_PENDING_BYTES = 1 << 20
STREAM = "output"
TRUNCATED = (
    "[trainorch] output truncated: this attempt wrote more than {mb:g} MB; "
    "further output is discarded"
)

_LINE_END = re.compile(rb"([\r\n])")
_SCALE = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_TQDM = re.compile(
    r"^(?:(?P<desc>.*?):\s*)?(?:\s*\d+%\|.*?\|\s*)?"
    r"(?P<n>\d+(?:\.\d+)?)(?P<ns>[kMGT]?)(?:/(?P<total>\d+(?:\.\d+)?)(?P<ts>[kMGT]?))?"
    r"(?:[a-zA-Z/]*)?\s*\[\d[\d:]*(?:<[\d:?]+)?,"
)


def parse_tqdm(text: str) -> dict[str, Any] | None:
    """Progress from a tqdm bar such as ``epoch:  40%|####  | 4/10 [00:01<00:01, 3it/s]``."""
    match = _TQDM.search(text.strip())
    if match is None:
        return None
    step = float(match.group("n")) * _SCALE[match.group("ns")]
    total = None
    if match.group("total") is not None:
        total = float(match.group("total")) * _SCALE[match.group("ts")]
    desc = (match.group("desc") or "").strip() or None
    as_int = lambda v: int(v) if v is not None and float(v).is_integer() else v  # noqa: E731
    return {"step": as_int(step), "total": as_int(total), "message": desc, "metrics": {}}


def read_lines(fd: int, line: Callable[[str], None], bar: Callable[[dict[str, Any]], None]) -> None:
    """Read ``fd`` until it closes, calling ``line`` for each line and ``bar`` for each
    tqdm bar. A segment ended by ``\\r`` is a redrawn bar, not a line."""
    pending = b""
    skipping = False  # the rest of an over-long line
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        parts = _LINE_END.split(pending + chunk)  # segment, end, segment, end, …, rest
        pending = parts.pop()
        for segment, end in zip(parts[::2], parts[1::2], strict=True):
            if skipping:
                skipping = False
                continue
            text = segment.decode("utf-8", "replace")
            parsed = parse_tqdm(text)
            if parsed is not None:
                bar(parsed)
            if end == b"\n":
                line(text)
        if len(pending) > MAX_PENDING_BYTES:
            if not skipping:
                line(pending.decode("utf-8", "replace"))
            pending, skipping = b"", True
    if pending and not skipping:
        line(pending.decode("utf-8", "replace"))


class LineBatcher:
    """Collects lines and progress; ``send`` receives ``{"lines": [...], "progress": ...}``.

    ``mask`` hides secret values in lines and progress messages; after ``max_bytes``
    of lines (0: no cap) one last line says so and later lines are dropped. Rank ``rank``
    of ``ranks`` (a multi-node attempt) numbers its n-th line ``n * ranks + rank``, so that
    the ranks' lines never share a number in the attempt's log, and marks them ``[rank r]``.
    """

    def __init__(
        self,
        send: Callable[[dict[str, Any]], None],
        log_path: Path,
        mask: SecretMask | None = None,
        max_bytes: int = 0,
        rank: int = 0,
        ranks: int = 1,
    ) -> None:
        self._send = send
        self._rank, self._ranks = rank, max(ranks, 1)
        self._prefix = f"[rank {rank}] " if rank else ""
        self._mask = mask or SecretMask(())
        self.max_bytes = max_bytes
        self.bytes = 0
        self.truncated = False
        self._lines: list[list[Any]] = []
        self._progress: dict[str, Any] | None = None
        # Every metric point is kept (for the experiment's history); progress only the latest.
        self._points: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._file = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.count = 0
        self._closed = threading.Event()
        self._timer = threading.Thread(target=self._tick, daemon=True)
        self._timer.start()

    def add(self, text: str, stream: str = STREAM) -> None:
        # Masked before it is cut, so that no secret's beginning is left at the cut.
        text = self._mask(text)
        if len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + " …[line truncated]"
        size = len(text.encode("utf-8", "replace")) + 1
        with self._lock:
            if self.truncated:
                return
            if self.max_bytes and self.bytes + size > self.max_bytes:
                self.truncated = True
                text = TRUNCATED.format(mb=self.max_bytes / 1e6)
            else:
                self.bytes += size
            self.count += 1
            seq = self.count * self._ranks + self._rank
            record = [seq, stream, self._prefix + text, time.time()]
            self._file.write(json.dumps(record) + "\n")
            self._lines.append(record)
            full = len(self._lines) >= MAX_BATCH_LINES
        if full:
            self.flush()

    def progress(self, record: dict[str, Any]) -> None:
        if self._mask:
            # A message, or a metric that is text, may quote a secret too.
            hide = lambda v: self._mask(v) if isinstance(v, str) else v  # noqa: E731
            metrics = {k: hide(v) for k, v in (record.get("metrics") or {}).items()}
            record = {**record, "message": hide(record.get("message")), "metrics": metrics}
        with self._lock:
            self._progress = record
            if record.get("metrics") and len(self._points) < MAX_POINTS_PER_BATCH:
                self._points.append(
                    {"step": record.get("step"), "metrics": record["metrics"], "time": time.time()}
                )

    def metrics_point(self, metrics: dict[str, float], step: int) -> None:
        """A metrics sample that is not the job's progress (system metrics)."""
        with self._lock:
            if len(self._points) < MAX_POINTS_PER_BATCH:
                self._points.append({"step": step, "metrics": metrics, "time": time.time()})

    def flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
            progress, self._progress = self._progress, None
            points, self._points = self._points, []
            self._file.flush()
        if lines or progress or points:
            self._send({"lines": lines, "progress": progress, "metrics": points})

    def _tick(self) -> None:
        while not self._closed.wait(FLUSH_INTERVAL):
            self.flush()

    def close(self) -> None:
        self._closed.set()
        self._timer.join(timeout=2)
        self.flush()
        self._file.close()
