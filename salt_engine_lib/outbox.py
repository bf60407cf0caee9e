"""Write-behind for the returner: keep database round trips off the master.

``returner()`` and ``event_return()`` run in the master's MWorkers and
EventReturn process. When the relay engine is running on this master, they
append to the outbox (a :mod:`journal`, ~10 us per call) and the engine's
:class:`outbox_drainer.OutboxDrainer` hands the records to the engine's journal, as events
with the ``salt-relay/job-cache/*`` tags: they reach the database the way
bus events do (through the broker and a worker, or the embedded store), so
the master's process tree does no SQL for them. Only if the journal is full
(the broker has been down for long) does the drainer write them to the
database itself. Without a live engine the returner writes directly.

``save_load`` stays synchronous (the ``salt`` CLI reads the load right after
publishing); if the database is down the load is kept in ``pending-loads/``,
which ``get_load`` also reads, and goes through the outbox when it is back.

This module is the MWorkers' side and imports nothing of the engine's; the
engine's side is :mod:`outbox_drainer`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Iterable, Optional

from salt_engine_lib import codec, paths
from salt_engine_lib.journal import JournalWriter

log = logging.getLogger(__name__)

# Job ids remembered per process (see Outbox.note_job).
KNOWN_JOBS = 10000


class Outbox:
    """The writer side, one per process (see :func:`for_opts`)."""

    def __init__(self, opts: dict) -> None:
        self.opts = opts
        self.directory = paths.outbox(opts)
        self.writer = JournalWriter(self.directory)
        self._stats_file = paths.engine_stats(opts)
        self._alive_checked_at = 0.0
        self._alive = False
        # Jobs this process already recorded: Salt calls save_load with the
        # return load for every minion return, and only the first can matter.
        self._known_jobs = collections.OrderedDict()
        self._known_lock = threading.Lock()

    def engine_alive(self) -> bool:
        now = time.monotonic()
        if now - self._alive_checked_at >= 1.0:
            try:
                self._alive = time.time() - self._stats_file.stat().st_mtime < paths.HEARTBEAT_STALE_SECONDS
            except OSError:
                self._alive = False
            self._alive_checked_at = now
        return self._alive

    def put_return(self, ret: dict, master_id: Optional[str]) -> None:
        self.writer.append(codec.pack({"k": "ret", "ret": ret, "m": master_id}))

    def put_events(self, events: Iterable[Any], master_id: Optional[str]) -> None:
        self.writer.append(codec.pack({"k": "events", "events": list(events), "m": master_id}))

    def put_load(self, jid: str, load: dict, master_id: Optional[str]) -> None:
        self.writer.append(codec.pack({"k": "load", "jid": jid, "load": load, "minions": None, "m": master_id}))
        self.note_job(jid)

    def knows_job(self, jid: str) -> bool:
        return jid in self._known_jobs

    def note_job(self, jid: str) -> None:
        # master_async_mworker runs store_job in a thread pool.
        with self._known_lock:
            self._known_jobs[jid] = None
            if len(self._known_jobs) > KNOWN_JOBS:
                self._known_jobs.popitem(last=False)

    def keep_load(self, jid: str, load: dict, minions: Optional[list], master_id: Optional[str]) -> None:
        """The database refused a publish load: keep it readable and queued."""
        record = {"k": "load", "jid": jid, "load": load, "minions": minions, "m": master_id, "publish": "return" not in load}
        path = paths.pending_load(self.opts, jid)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        frame = codec.pack(record)
        tmp.write_bytes(frame)
        tmp.replace(path)
        self.writer.append(frame)


_outboxes = {}
_lock = threading.Lock()


def for_opts(opts: dict) -> Outbox:
    # Keyed by the opts object (it runs once per minion return on the master);
    # the Outbox holds opts, so the id cannot be reused by another object.
    outbox = _outboxes.get(id(opts))
    if outbox is None or outbox.opts is not opts:
        with _lock:
            outbox = _outboxes[id(opts)] = Outbox(opts)
    return outbox


def pending_load(opts: dict, jid: str) -> Optional[dict]:
    """The load kept while the database was down, or None."""
    try:
        record = codec.unpack(paths.pending_load(opts, jid).read_bytes())
    except (OSError, ValueError):
        return None
    load = dict(record.get("load") or {})
    if record.get("minions") is not None:
        load["Minions"] = sorted(record["minions"])
    return load
