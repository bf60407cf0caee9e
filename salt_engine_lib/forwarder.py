"""The engine's journal: every batch goes to disk first, then to its sink.

The engine loop only encodes a batch and appends it to the journal (a
:mod:`spool` on local disk, microseconds, never blocked by the broker or the
database). This thread forwards journaled batches in order to the sink (the
broker, or the store in the embedded mode) and forgets them only once the
sink confirmed. So:

* a broker or database outage only makes the journal grow; it is replayed
  in order when the sink is back;
* a killed or restarted engine (or master) loses nothing that reached the
  journal: the next engine forwards what is left (possibly once more; the
  store's writes are idempotent);
* the journal is bounded (``spool_max_bytes``): beyond it a batch is
  dropped, counted and logged at CRITICAL, never silently.
"""

import logging
import threading
import time

from salt_engine_lib import deadletters, message, records
from salt_engine_lib.backoff import Backoff
from salt_engine_lib.errors import JournalFull
from salt_engine_lib.spool import SpoolReader, SpoolWriter

log = logging.getLogger(__name__)


class BrokerSink:
    """Publishes each journaled batch as one persistent, confirmed message."""

    records_per_send = 1  # one message per batch: a failure never re-sends others

    def __init__(self, publisher):
        self.publisher = publisher
        self.sent_events = 0

    def send(self, bodies):
        for body in bodies:
            message_id, count = message.peek(body)
            self.publisher.publish(body, message_id)
            self.sent_events += count

    def close(self):
        self.publisher.close()


class StoreSink:
    """The embedded mode: journaled batches straight into the store, several per transaction.

    Events the database refuses (while it answers) are isolated and
    dead-lettered to ``dead_letters`` with the reason; the rest is stored.
    """

    records_per_send = 20

    def __init__(self, store, dead_letters=None):
        self.store = store
        self.dead_letters = dead_letters
        self.sent_events = 0
        self.rejected = 0

    def _refused(self, item, reason):
        self.rejected += 1
        tag, data, master_id = item
        log.error("relay: event %r not stored: %s", str(tag)[:200], reason)
        if self.dead_letters is not None:
            self.dead_letters.add({"tag": tag, "data": data, "master_id": master_id}, reason)

    def send(self, bodies):
        events, count = [], 0
        for body in bodies:
            batch = message.decode(body)
            count += len(batch.events)
            job_returns = not batch.returns_from_job_cache
            events += [((tag, data, batch.master_id), job_returns) for tag, data in batch.events]
        self.write(events)
        self.sent_events += count

    def write(self, events):
        """Store ``[((tag, data, master_id), job_returns), ...]`` in one transaction if it can.

        Events that make no rows, or that the database refuses while it
        answers, are dead-lettered once each; StoreError if it is unreachable.
        """
        prepared = []
        for item, job_returns in events:
            tag, data, master_id = item
            try:
                prepared.append((item, records.rows_from_event(tag, data, master_id, job_returns=job_returns)))
            except Exception as err:  # pylint: disable=broad-except  # RecordError or data the code cannot read
                self._refused(item, f"rejected: {type(err).__name__}: {err}")
        if prepared:
            deadletters.write_isolating(self.store, prepared, deadletters.merge_rows, lambda entry, reason: self._refused(entry[0], reason))

    def close(self):
        pass


class Forwarder(threading.Thread):
    """The journal's writer side (:meth:`submit`) and its forwarding thread.

    ``returns_from_job_cache`` is stamped on every message: the master's job
    cache is relay, so minion returns reach the store through its records.
    """

    def __init__(self, directory, sink, max_bytes, max_message_bytes=64 << 20, idle_seconds=0.5, returns_from_job_cache=False):
        super().__init__(name="relay-forwarder", daemon=True)
        self.returns_from_job_cache = returns_from_job_cache
        # The engine loop and the outbox drainer both submit.
        self._submit_lock = threading.Lock()
        self.writer = SpoolWriter(directory)
        self.reader = SpoolReader(directory)
        self.sink = sink
        self.max_bytes = max_bytes
        self.max_message_bytes = max_message_bytes
        self.idle_seconds = idle_seconds
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.journaled = 0
        self.dropped_events = 0
        self.failures = 0
        self.unencodable = 0
        self.last_error = None
        self._pending_bytes = self.reader.pending_bytes()
        self._pending_checked_at = time.monotonic()

    # -- the engine loop's side -------------------------------------------

    def pending_bytes(self, fresh=False):
        """Bytes journaled and not yet forwarded (re-measured at most twice a second)."""
        now = time.monotonic()
        if fresh or now - self._pending_checked_at >= 0.5:
            self._pending_bytes = self.reader.pending_bytes()
            self._pending_checked_at = now
        return self._pending_bytes

    def unforwarded(self):
        """{batches, bytes, oldest_created}: what the journal holds that its sink has not confirmed."""
        batches, size, first = self.reader.backlog()
        return {"batches": batches, "bytes": size, "oldest_created": message.created_at(first) if first else None}

    def submit(self, events, master_id, keep_on_full=False):
        """Journal one batch; JournalFull if the bound is reached.

        The events are then lost (counted, logged at CRITICAL), unless the
        caller still holds them (``keep_on_full``: the outbox drainer).
        """
        with self._submit_lock:
            self._submit(events, master_id, keep_on_full)

    def _submit(self, events, master_id, keep_on_full):
        try:
            _, body = message.encode(events, master_id, returns_from_job_cache=self.returns_from_job_cache)
        except Exception as err:  # pylint: disable=broad-except
            if len(events) == 1:
                self.unencodable += 1
                log.error("relay: event %r cannot be encoded, dropped: %s: %s", str(events[0][0])[:200], type(err).__name__, err)
                return
            for event in events:  # keep every event that can be encoded
                self._submit([event], master_id, keep_on_full)
            return
        if len(body) > self.max_message_bytes and len(events) > 1:
            # Keep messages under the workers' limit; a single event over it is
            # sent alone and dead-lettered by the worker with the reason.
            half = len(events) // 2
            self._submit(events[:half], master_id, keep_on_full)
            self._submit(events[half:], master_id, keep_on_full)
            return
        if self.pending_bytes() + len(body) > self.max_bytes:
            if keep_on_full:
                raise JournalFull()
            self.dropped_events += len(events)
            log.critical(
                "relay: spool is full (%d bytes pending, relay:spool_max_bytes=%d): %d events LOST "
                "(%d lost so far); the broker or database has been unreachable for too long: %s",
                self._pending_bytes,
                self.max_bytes,
                len(events),
                self.dropped_events,
                self.last_error,
            )
            raise JournalFull()
        self.writer.append(body)
        self._pending_bytes += len(body) + 4
        self.journaled += len(events)
        self.wake.set()

    # -- the forwarding thread --------------------------------------------

    def run(self):
        retries = Backoff()
        while True:
            try:
                moved = self.forward_once()
                retries.reset()
            except Exception as err:  # pylint: disable=broad-except
                self.failures += 1
                self.last_error = f"{type(err).__name__}: {err}"
                delay = retries.next_delay()
                log.error("relay: forwarding failed, batches stay in the spool and are retried in %.1fs: %s", delay, self.last_error)
                if self.stopping.wait(delay):
                    return
                continue
            if not moved:
                if self.stopping.is_set():
                    return
                self.wake.wait(self.idle_seconds)
                self.wake.clear()

    def forward_once(self):
        bodies, positions = self.reader.read(self.sink.records_per_send)
        if bodies:
            self.sink.send(bodies)
        if positions:
            self.reader.commit(positions)
        return len(bodies)

    def stop(self, timeout=10.0):
        """Forward what is left (up to ``timeout``), then seal the journal.

        Whatever could not be forwarded stays on disk for the next engine.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.is_alive():
            if self.reader.pending_bytes() == 0:
                break
            self.wake.set()
            time.sleep(0.05)
        self.stopping.set()
        self.wake.set()
        if self.is_alive():
            self.join(timeout=max(0.1, deadline - time.monotonic()))
        self.writer.close()
        if not self.is_alive():
            # Delete the sealed segments that are fully forwarded, so the next
            # engine does not send them again; keep anything unread.
            bodies, positions = self.reader.read(1)
            if not bodies:
                self.reader.commit(positions)
        self.sink.close()
