"""What the engine could not store, kept aside with the reason: ``dead-letters/*.jsonl``.

:mod:`ingest` finds the events the database refuses (or that make no rows);
the broker worker dead-letters them to a queue, the engine (embedded mode,
returner outbox) appends them here, under the relay cache dir, where
``salt-relay status`` counts them.
"""

from __future__ import annotations

import datetime
import logging
import os
import pathlib
import threading
from typing import Any, Union

from salt_engine_lib import jsonsafe

log = logging.getLogger(__name__)


class DeadLetterFile:
    """Append-only JSON lines, one file per day: ``{"failed_at", "reason", "item"}``."""

    def __init__(self, directory: Union[str, pathlib.Path]) -> None:
        self.directory = pathlib.Path(directory)
        self.count = 0
        self._lock = threading.Lock()

    def add(self, item: Any, reason: object) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        line = jsonsafe.dumps({"failed_at": now.isoformat(), "reason": str(reason)[:2000], "item": item}) + "\n"
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{now:%Y%m%d}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line.encode("utf-8", "surrogatepass"))
            finally:
                os.close(fd)
            self.count += 1
        log.error("relay: dead-lettered to %s: %s", self.directory, str(reason)[:500])


def count_dead_letters(directory: Union[str, pathlib.Path]) -> int:
    """Lines in every ``*.jsonl`` of ``directory`` (0 if there is none)."""
    total = 0
    for path in pathlib.Path(directory).glob("*.jsonl"):
        with open(path, "rb") as handle:
            total += sum(1 for _ in handle)
    return total
