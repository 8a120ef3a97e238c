"""A child's output: split into lines, masked, capped, batched into sequenced events.

Dask keeps only the last 1,000 events per topic and drops events while no client
listens, so lines travel in batches (up to 2,000 lines, 256 KB or 250 ms) with sequence
numbers, and every line is also appended to a durable file on the worker (a JSON array
of lines per read) from which the orchestrator fills any gap. Secret values are masked
before a line goes anywhere; past the attempt's cap, lines are counted out but no longer
kept.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from ..log_batches import pack_json
from .masking import SecretMask

# A batch is one Dask event: the scheduler keeps the last 1,000 of a topic in its memory.
MAX_BATCH_LINES = 2000
MAX_BATCH_CHARS = 256 * 1024
FLUSH_INTERVAL = 0.25
MAX_LINE_CHARS = 8192
MAX_POINTS_PER_BATCH = 1000
# Bytes of one line held while waiting for its end: a job that writes without newlines
# must not fill the worker's memory. Far more than the MAX_LINE_CHARS that are kept.
MAX_PENDING_BYTES = 1 << 20
READ_BYTES = 1 << 16
# A pipe read returns as soon as any byte is there: a job printing fast would wake the
# reader for every few lines, and the reader's work per read would take the CPU the job
# prints with. After a read that did not fill its buffer the reader waits this long, so
# that the next read takes thousands of lines at once. A line can arrive this much later.
READ_PAUSE = 0.002
STREAM = "output"
TRUNCATED = (
    "[trainorch] output truncated: this attempt wrote more than {mb:g} MB; "
    "further output is discarded"
)

_LINE_END_TEXT = re.compile("([\r\n])")
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


def read_lines(
    fd: int, lines: Callable[[list[str]], None], bar: Callable[[dict[str, Any]], None]
) -> None:
    """Read ``fd`` until it closes, calling ``lines`` with the lines each read completed
    and ``bar`` for each tqdm bar. A segment ended by ``\\r`` is a redrawn bar, not a line.
    Whole reads are split at once: a job printing fast must not wait on us line by line."""
    pending = b""
    skipping = False  # the rest of an over-long line
    drained = False
    while True:
        if drained:
            time.sleep(READ_PAUSE)  # the last read's lines have gone on: let more gather
        chunk = os.read(fd, READ_BYTES)
        if not chunk:
            break
        drained = len(chunk) < READ_BYTES
        data = pending + chunk
        if skipping:
            ends = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
            if not ends:
                pending = b""
                continue
            data, skipping = data[min(ends) + 1 :], False
        cut = max(data.rfind(b"\n"), data.rfind(b"\r"))
        if cut >= 0:
            pending = data[cut + 1 :]
            done = _segments(data[: cut + 1].decode("utf-8", "replace"), bar)
            if done:
                lines(done)
        else:
            pending = data
        if len(pending) > MAX_PENDING_BYTES:
            if not skipping:
                lines([pending.decode("utf-8", "replace")])
            pending, skipping = b"", True
    if pending and not skipping:
        lines([pending.decode("utf-8", "replace")])


def _segments(text: str, bar: Callable[[dict[str, Any]], None]) -> list[str]:
    """The lines of ``text`` (which ends with a line end); bars go to ``bar``."""
    if "\r" not in text:
        found = text[:-1].split("\n")
        for segment in found:
            if "[" in segment:  # a bar's elapsed time: cheaper than the full pattern
                parsed = parse_tqdm(segment)
                if parsed is not None:
                    bar(parsed)
        return found
    found = []
    parts = _LINE_END_TEXT.split(text)  # segment, end, …, segment, end, ""
    for segment, end in zip(parts[:-1:2], parts[1::2], strict=True):
        if "[" in segment:
            parsed = parse_tqdm(segment)
            if parsed is not None:
                bar(parsed)
        if end == "\n":
            found.append(segment)
    return found


class LineBatcher:
    """Collects lines and progress; ``send`` receives ``{"lines": …, "seqs": [first, last,
    count], "progress": …, "metrics": […]}``, the lines packed as the store keeps them
    (``log_batches``), at most ``MAX_BATCH_LINES`` of them.

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
        # The JSON arrays of the pending lines, as written to the durable file.
        self._encoded: list[bytes] = []
        self._first_seq = self._last_seq = 0
        self._pending_lines = 0
        self._pending_bytes = 0
        self._progress: dict[str, Any] | None = None
        # Every metric point is kept (for the experiment's history); progress only the latest.
        self._points: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()  # taken before ``_lock``, never after
        self._file = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.count = 0
        self._closed = threading.Event()
        self._timer = threading.Thread(target=self._tick, daemon=True)
        self._timer.start()

    def add(self, texts: list[str], stream: str = STREAM) -> None:
        """Lines the job wrote, in order: masked, cut, numbered, kept on disk and batched."""
        # Masked before it is cut, so that no secret's beginning is left at the cut.
        if self._mask:
            texts = [self._mask(text) for text in texts]
        now = time.time()
        while texts:
            with self._lock:
                if self.truncated:
                    return
                # A batch holds at most MAX_BATCH_LINES, however much one read brought.
                room = MAX_BATCH_LINES - self._pending_lines
                part, texts = texts[:room], texts[room:]
                records = self._fast_records(part, stream, now)
                if records is None:
                    records = self._records(part, stream, now)
                if not records:
                    return
                # One JSON array per part: encoding each line alone costs more than the line.
                encoded = orjson.dumps(records)
                self._file.write(encoded.decode() + "\n")
                if not self._encoded:
                    self._first_seq = records[0][0]
                self._last_seq = records[-1][0]
                self._encoded.append(encoded)
                self._pending_lines += len(records)
                self._pending_bytes += len(encoded)
                full = (
                    self._pending_lines >= MAX_BATCH_LINES or self._pending_bytes >= MAX_BATCH_CHARS
                )
            if full:
                self.flush()

    def _fast_records(self, texts: list[str], stream: str, now: float) -> list[list[Any]] | None:
        """The common case in bulk: short ASCII lines well within the cap."""
        if not all(map(str.isascii, texts)) or max(map(len, texts), default=0) > MAX_LINE_CHARS:
            return None
        size = sum(map(len, texts)) + len(texts)
        if self.max_bytes and self.bytes + size > self.max_bytes:
            return None
        first, ranks, rank, prefix = self.count + 1, self._ranks, self._rank, self._prefix
        self.bytes += size
        self.count += len(texts)
        return [[n * ranks + rank, stream, prefix + text, now]
                for n, text in enumerate(texts, first)]  # fmt: skip

    def _records(self, texts: list[str], stream: str, now: float) -> list[list[Any]]:
        """Line by line: cut long lines, count UTF-8 bytes, stop at the cap."""
        records = []
        for text in texts:
            if len(text) > MAX_LINE_CHARS:
                text = text[:MAX_LINE_CHARS] + " …[line truncated]"
            size = (len(text) if text.isascii() else len(text.encode("utf-8", "replace"))) + 1
            if self.max_bytes and self.bytes + size > self.max_bytes:
                self.truncated = True
                text = TRUNCATED.format(mb=self.max_bytes / 1e6)
            else:
                self.bytes += size
            self.count += 1
            seq = self.count * self._ranks + self._rank
            records.append([seq, stream, self._prefix + text, now])
            if self.truncated:
                break
        return records

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
        # The reader (a full batch) and the timer both flush: a batch taken first must be
        # sent first, or the service would store it after the next one.
        with self._send_lock:
            with self._lock:
                encoded, self._encoded = self._encoded, []
                seqs = [self._first_seq, self._last_seq, self._pending_lines]
                self._pending_lines = self._pending_bytes = 0
                progress, self._progress = self._progress, None
                points, self._points = self._points, []
                self._file.flush()
            message: dict[str, Any] = {"progress": progress, "metrics": points}
            if encoded:
                joined = b"[" + b",".join(part[1:-1] for part in encoded) + b"]"
                message["lines"] = pack_json(joined)
                message["seqs"] = seqs
            if encoded or progress or points:
                self._send(message)

    def _tick(self) -> None:
        while not self._closed.wait(FLUSH_INTERVAL):
            self.flush()

    def close(self) -> None:
        self._closed.set()
        self._timer.join(timeout=2)
        self.flush()
        self._file.close()
