"""Finding what the database refuses, and keeping it aside with the reason.

A batch the database refuses while it answers other queries holds at least
one item it will never take (a NUL character on PostgreSQL, JSON nested
deeper than MariaDB allows). :func:`write_isolating` splits the batch until
the refused items are alone, stores everything else, and hands each refused
item to a dead-letter sink. The broker worker dead-letters to a queue; the
engine (embedded mode, returner outbox) appends to ``dead-letters/*.jsonl``
under the relay cache dir, which ``salt-relay status`` counts.
"""

import datetime
import logging
import os
import pathlib
import threading

from salt_engine_lib import jsonsafe, records
from salt_engine_lib.errors import StoreError

log = logging.getLogger(__name__)


def merge_rows(entries):
    """The :class:`records.Rows` of ``[(item, rows), ...]``, for one write."""
    return records.Rows.merge(rows for _item, rows in entries)


def write_isolating(store, items, rows_of, refused):
    """Store ``items`` (one transaction if the database takes them all).

    ``rows_of(items)`` gives the :class:`records.Rows` to write;
    ``refused(item, reason)`` receives every item the database refuses alone.
    Raises StoreError when the database is unreachable (nothing is dropped).
    """
    try:
        store.write_rows(rows_of(items))
        return
    except StoreError as err:
        if not store.reachable():
            raise
        if len(items) == 1:
            refused(items[0], f"the database refused it: {err}")
            return
    half = len(items) // 2
    write_isolating(store, items[:half], rows_of, refused)
    write_isolating(store, items[half:], rows_of, refused)


class DeadLetterFile:
    """Append-only JSON lines, one file per day: ``{"failed_at", "reason", "item"}``."""

    def __init__(self, directory):
        self.directory = pathlib.Path(directory)
        self.count = 0
        self._lock = threading.Lock()

    def add(self, item, reason):
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


def count_dead_letters(directory):
    """Lines in every ``*.jsonl`` of ``directory`` (0 if there is none)."""
    total = 0
    for path in pathlib.Path(directory).glob("*.jsonl"):
        with open(path, "rb") as handle:
            total += sum(1 for _ in handle)
    return total
