"""The engine's side of the returner's write-behind (see :mod:`outbox`): outbox -> journal."""

import logging
import threading

from salt_engine_lib import deadletters, paths, records
from salt_engine_lib.backoff import Backoff
from salt_engine_lib.errors import JournalFull, RecordError, StoreError
from salt_engine_lib.forwarder import StoreSink
from salt_engine_lib.spool import SpoolReader

log = logging.getLogger(__name__)


def journal_events_of(item):
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
            if tag.startswith(records.JOB_CACHE_TAG_PREFIX):
                raise RecordError(f"tag {tag[:200]!r} is reserved for salt-relay's own records")
            events.append((tag, event.get("data")))
        return events
    raise RecordError(f"unknown record kind {kind!r}")


class OutboxDrainer(threading.Thread):
    """Engine thread: outbox -> the engine's journal (:class:`forwarder.Forwarder`).

    A record that makes no sense is dead-lettered to ``dead-letters/`` with
    the reason instead of blocking the records after it. Publish loads kept
    while the database was down are written to the database directly: they
    replace what the bus copy wrote, and ``get_load`` serves them from disk
    until then.
    """

    def __init__(self, opts, store, forwarder, batch_size=1000, idle_seconds=0.05, dead_letters=None):
        super().__init__(name="relay-outbox-drainer", daemon=True)
        self.opts = opts
        self.store = store
        self.forwarder = forwarder
        self.reader = SpoolReader(paths.outbox(opts))
        self.batch_size = batch_size
        self.idle_seconds = idle_seconds
        self.dead_letters = dead_letters or deadletters.DeadLetterFile(paths.dead_letters(opts))
        # Only when the journal is full: the embedded mode's way into the store.
        self.direct_sink = StoreSink(store, self.dead_letters)
        self.moved = 0
        self.written_directly = 0
        self.failures = 0
        self.stopping = threading.Event()

    def run(self):
        retries = Backoff()
        while not self.stopping.is_set():
            try:
                moved = self.drain_once()
                retries.reset()
            except Exception as err:  # pylint: disable=broad-except
                self.failures += 1
                delay = retries.next_delay()
                log.error(
                    "relay: moving outbox records failed, retrying in %.1fs (records are kept): %s: %s", delay, type(err).__name__, err
                )
                self.stopping.wait(delay)
                continue
            if not moved:
                self.stopping.wait(self.idle_seconds)

    def drain_once(self):
        items, positions = self.reader.read(self.batch_size)
        if not positions:
            return 0
        by_master, refused = {}, 0
        for item in items:
            if isinstance(item, dict) and "publish" in item:
                refused += not self._store_kept_load(item)
                continue
            try:
                events = journal_events_of(item)
            except Exception as err:  # pylint: disable=broad-except  # RecordError, or a record the code cannot read
                refused += 1
                self.dead_letters.add(item, f"rejected: {type(err).__name__}: {err}")
                continue
            by_master.setdefault(item.get("m"), []).extend(events)
        try:
            for master_id, events in by_master.items():
                self.forwarder.submit(events, master_id, keep_on_full=True)
        except JournalFull:
            # The broker has been unreachable long enough to fill the journal:
            # the job cache must not wait for it. (Raises if the DB is down too.)
            self._store_directly(by_master)
        self.reader.commit(positions)
        self.moved += len(items) - refused
        return len(items)

    def _store_kept_load(self, item):
        """Write a load kept while the database was down; False if the database refused it."""
        try:
            self.store.write_batch(
                jobs=[records.job_row(item["jid"], item["load"], item.get("minions"), item.get("m"))],
                authoritative_jobs=bool(item["publish"]),
            )
        except RecordError as err:
            self.dead_letters.add(item, f"rejected: {err}")
            return False
        except StoreError as err:
            if not self.store.reachable():
                raise
            # It stays in pending-loads/: get_load keeps serving it.
            self.dead_letters.add(item, f"the database refused it: {err}")
            return False
        paths.pending_load(self.opts, item["jid"]).unlink(missing_ok=True)
        return True

    def _store_directly(self, by_master):
        events = [((tag, data, master_id), True) for master_id, pairs in by_master.items() for tag, data in pairs]
        self.direct_sink.write(events)
        self.written_directly += len(events)

    def stop(self):
        self.stopping.set()
