"""The engine's side of the returner's write-behind (see :mod:`outbox`): outbox -> journal."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from salt_engine_lib import codec, ingest, paths, records
from salt_engine_lib.backoff import Backoff
from salt_engine_lib.errors import JournalFull, RecordError
from salt_engine_lib.journal import JournalReader

if TYPE_CHECKING:
    from salt_engine_lib.forwarder import Forwarder, StoreSink

log = logging.getLogger(__name__)


def journal_events_of(item: Any) -> list[tuple[str, Any]]:
    """The ``(tag, data)`` events that carry one outbox record; RecordError if it makes no sense."""
    kind = item.get("k") if isinstance(item, dict) else None
    if kind == "ret":
        ret = item.get("ret")
        records.return_row(ret)  # cheap: refuse what the store would refuse, here and with the reason
        return [(records.JOB_CACHE_RETURN_TAG, ret)]
    if kind == "load":
        records.job_row(item.get("jid"), item.get("load"), item.get("minions"))
        return [(records.JOB_CACHE_LOAD_TAG, {"jid": item["jid"], "load": item.get("load"), "minions": item.get("minions")})]
    if kind == "events":
        events = []
        for event in item.get("events") or ():
            tag = event.get("tag") if isinstance(event, dict) else None
            if not isinstance(tag, str) or not tag:
                raise RecordError(f"an event_return event needs a tag: {str(event)[:200]!r}")
            if tag.startswith(records.RESERVED_TAG_PREFIX):
                raise RecordError(f"tag {tag[:200]!r} is reserved for salt-relay's own records")
            events.append((tag, event.get("data")))
        return events
    raise RecordError(f"unknown record kind {kind!r}")


class OutboxDrainer(threading.Thread):
    """Engine thread: outbox -> the engine's journal (:class:`forwarder.Forwarder`).

    A record that makes no sense is dead-lettered with the reason instead of
    blocking the records after it. Publish loads kept while the database was
    down are written to the database directly: they replace what the bus copy
    wrote, and ``get_load`` serves them from disk until then. ``store_sink``
    (the engine's :class:`forwarder.StoreSink`) stores them, and everything
    else when the journal is full, and dead-letters what the database refuses.
    """

    def __init__(self, opts: dict, forwarder: Forwarder, store_sink: StoreSink, batch_size: int = 1000, idle_seconds: float = 0.05) -> None:
        super().__init__(name="relay-outbox-drainer", daemon=True)
        self.opts = opts
        self.forwarder = forwarder
        self.store_sink = store_sink
        self.reader = JournalReader(paths.outbox(opts))
        self.batch_size = batch_size
        self.idle_seconds = idle_seconds
        self.moved = 0
        self.written_directly = 0
        self.failures = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        retries = Backoff()
        while not self.stopping.is_set():
            try:
                moved = self.drain_once()
                retries.reset()
            except Exception as err:  # the database or the disk failing: the records stay in the outbox
                self.failures += 1
                delay = retries.next_delay()
                log.error(
                    "relay: moving outbox records failed, retrying in %.1fs (records are kept): %s: %s", delay, type(err).__name__, err
                )
                self.stopping.wait(delay)
                continue
            if not moved:
                self.stopping.wait(self.idle_seconds)

    def drain_once(self) -> int:
        frames, positions = self.reader.read(self.batch_size)
        if not positions:
            return 0
        by_master, kept_loads, refused = {}, [], 0
        for frame in frames:
            try:
                item = codec.unpack(frame)
            except Exception as err:  # msgpack raises several unrelated types
                refused += 1
                self._refused({"undecodable_record": frame}, f"not a msgpack record: {ingest.reason_of(err)}")
                continue
            if isinstance(item, dict) and "publish" in item:
                kept_loads.append(item)
                continue
            try:
                events = journal_events_of(item)
            except Exception as err:  # RecordError, or a record the code cannot read
                refused += 1
                self._refused(item, ingest.reason_of(err))
                continue
            by_master.setdefault(item.get("m"), []).extend(events)
        refused += self._store_kept_loads(kept_loads)
        try:
            for master_id, events in by_master.items():
                self.forwarder.submit(events, master_id, keep_on_full=True)
        except JournalFull:
            # The broker has been unreachable long enough to fill the journal:
            # the job cache must not wait for it. (Raises if the DB is down too.)
            self._store_directly(by_master)
        self.reader.commit(positions)
        self.moved += len(frames) - refused
        return len(frames)

    def _refused(self, item, reason):
        log.error("relay: outbox record not stored: %s", reason[:500])
        self.store_sink.dead_letters.add(item, reason)

    def _store_kept_loads(self, items):
        """Write the loads kept while the database was down, forget each one stored; how many were refused."""
        refused = set()

        def note(event, reason, _error):
            refused.add(id(event))
            self._refused(event.origin, reason)

        events = [
            ingest.Event(
                records.JOB_CACHE_LOAD_TAG,
                {"jid": item.get("jid"), "load": item.get("load"), "minions": item.get("minions"), "publish": bool(item["publish"])},
                item.get("m"),
                origin=item,
                namespace=self.forwarder.namespace,
            )
            for item in items
        ]
        # Refused: it stays in pending-loads/, so get_load keeps serving it.
        ingest.store_events(self.store_sink.store, events, note)
        for event in events:
            if id(event) not in refused:
                paths.pending_load(self.opts, event.origin["jid"]).unlink(missing_ok=True)
        return len(refused)

    def _store_directly(self, by_master):
        events = [
            ingest.Event(tag, data, master_id, namespace=self.forwarder.namespace)
            for master_id, pairs in by_master.items()
            for tag, data in pairs
        ]
        self.store_sink.write(events)
        self.written_directly += len(events)

    def stop(self) -> None:
        self.stopping.set()
