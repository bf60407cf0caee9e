"""The journal: a durable on-disk FIFO of byte records, many writer processes, one reader.

Two journals run on a master, in this one format: the engine's (every batch
the engine accepted, as a broker message body, until its sink confirmed it:
:mod:`forwarder`) and the outbox (what the returner hands the engine from
the MWorkers: :mod:`outbox`).

Writers append length-prefixed frames to a segment file of their own with
one ``write()`` each: ~10 us and no database round trip on the master's hot
path, and a record is on disk (in the page cache) before the call returns,
so a killed process loses nothing it acknowledged. Segments are named
``<pid>-<ns>.open`` while written and renamed ``.seg`` when full or old.

The reader (a thread of the engine) tails every segment from its last
offset, hands the records out in batches and, after the caller committed
them, advances its offsets and deletes segments that are sealed (or whose
writer is dead) and fully read. Reading again after a crash starts at 0:
records may be delivered twice, never lost; the store's writes are
idempotent.
"""

from __future__ import annotations

import logging
import os
import pathlib
import struct
import threading
import time
from typing import Optional, Union

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
OPEN_SUFFIX = ".open"
SEALED_SUFFIX = ".seg"


class JournalWriter:
    def __init__(self, directory: Union[str, pathlib.Path], max_segment_bytes: int = 4 << 20, max_segment_age: float = 30.0) -> None:
        self.directory = pathlib.Path(directory)
        self.max_segment_bytes = max_segment_bytes
        self.max_segment_age = max_segment_age
        self._lock = threading.Lock()
        self._pid = None
        self._fd = None
        self._path = None
        self._size = 0
        self._opened_at = 0.0

    def append(self, record: bytes) -> None:
        """Append one record; returns when it is in the file."""
        data = _HEADER.pack(len(record)) + record
        with self._lock:
            if self._fd is None or self._pid != os.getpid():
                self._open_segment()
            elif self._size >= self.max_segment_bytes or time.monotonic() - self._opened_at >= self.max_segment_age:
                self._seal()
                self._open_segment()
            os.write(self._fd, data)
            self._size += len(data)

    def _open_segment(self):
        # After a fork the inherited descriptor belongs to the parent's segment.
        self._pid = os.getpid()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._path = self.directory / f"{self._pid}-{time.time_ns()}{OPEN_SUFFIX}"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = 0
        self._opened_at = time.monotonic()

    def _seal(self):
        os.close(self._fd)
        os.replace(self._path, self._path.with_suffix(SEALED_SUFFIX))
        self._fd = None

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self._pid == os.getpid():
                self._seal()


def _writer_alive(path):
    try:
        pid = int(path.name.split("-", 1)[0])
    except ValueError:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JournalReader:
    def __init__(self, directory: Union[str, pathlib.Path]) -> None:
        self.directory = pathlib.Path(directory)
        self._offsets = {}

    def segments(self) -> list[pathlib.Path]:
        try:
            paths = [p for p in self.directory.iterdir() if p.suffix in (OPEN_SUFFIX, SEALED_SUFFIX)]
        except FileNotFoundError:
            return []
        return sorted(paths, key=lambda p: p.stem.split("-", 1)[-1])

    def pending_bytes(self) -> int:
        total = 0
        for path in self.segments():
            try:
                total += path.stat().st_size - self._offsets.get(path.stem, 0)
            except FileNotFoundError:
                continue
        return total

    def backlog(self) -> tuple[int, int, Optional[bytes]]:
        """(records, bytes, first record) not yet committed; walks frame headers only."""
        count, size, first = 0, 0, None
        for path in self.segments():
            offset = self._offsets.get(path.stem, 0)
            try:
                with open(path, "rb") as handle:
                    end = os.fstat(handle.fileno()).st_size
                    position = offset
                    while position + _HEADER.size <= end:
                        handle.seek(position)
                        (length,) = _HEADER.unpack(handle.read(_HEADER.size))
                        if position + _HEADER.size + length > end:
                            break  # the writer is mid-append
                        if first is None:
                            first = handle.read(length)
                        count += 1
                        position += _HEADER.size + length
                    size += end - offset
            except FileNotFoundError:
                continue
        return count, size, first

    def read(self, max_records: int) -> tuple[list[bytes], dict[pathlib.Path, int]]:
        """Up to ``max_records`` records and a token for :meth:`commit`."""
        records, positions = [], {}
        for path in self.segments():
            if len(records) >= max_records:
                break
            offset = self._offsets.get(path.stem, 0)
            try:
                with open(path, "rb") as handle:
                    handle.seek(offset)
                    data = handle.read()
            except FileNotFoundError:  # sealed (renamed) under us: next pass reads it
                continue
            position = 0
            while len(records) < max_records and position + _HEADER.size <= len(data):
                (length,) = _HEADER.unpack_from(data, position)
                end = position + _HEADER.size + length
                if end > len(data):
                    break  # the writer is mid-append
                records.append(data[position + _HEADER.size : end])
                position = end
            if position < len(data) and len(records) < max_records and path.suffix == OPEN_SUFFIX and not _writer_alive(path):
                # A writer killed mid-append: its call never returned, the tail was never accepted.
                log.warning("relay journal: dropping %d bytes of an unfinished record in %s", len(data) - position, path.name)
                position = len(data)
            positions[path] = offset + position
        return records, positions

    def commit(self, positions: dict[pathlib.Path, int]) -> None:
        """The records of ``positions`` are stored: forget them, delete finished segments."""
        for path, offset in positions.items():
            self._offsets[path.stem] = offset
            try:
                size = path.stat().st_size if path.exists() else path.with_suffix(SEALED_SUFFIX).stat().st_size
            except FileNotFoundError:
                continue
            finished = offset >= size
            sealed = path.suffix == SEALED_SUFFIX or not _writer_alive(path)
            if finished and sealed:
                for candidate in (path, path.with_suffix(SEALED_SUFFIX)):
                    try:
                        candidate.unlink()
                    except FileNotFoundError:
                        pass
                self._offsets.pop(path.stem, None)
