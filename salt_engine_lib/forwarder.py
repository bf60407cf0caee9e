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

from salt_engine_lib import message, records
from salt_engine_lib.spool import SpoolReader, SpoolWriter

log = logging.getLogger(__name__)


class JournalFull(Exception):
    pass


class BrokerSink:
    """Publishes each journaled batch as one persistent, confirmed message."""

    records_per_send = 1  # one message per batch: a failure never re-sends others

    def __init__(self, publisher):
        self.publisher = publisher
        self.sent_events = 0

    def send(self, bodies):
        for body in bodies:
            batch = message.decode(body)
            self.publisher.publish(body, batch.id)
            self.sent_events += len(batch.events)

    def close(self):
        self.publisher.close()


class StoreSink:
    """The embedded mode: journaled batches straight into the store, several per transaction."""

    records_per_send = 20

    def __init__(self, store):
        self.store = store
        self.sent_events = 0
        self.rejected = 0

    def send(self, bodies):
        jobs, returns, events, count = [], [], [], 0
        for body in bodies:
            batch = message.decode(body)
            for tag, data in batch.events:
                try:
                    new_jobs, new_returns, new_events = records.rows_from_event(tag, data, batch.master_id)
                except records.RecordError as err:
                    self.rejected += 1
                    log.error("relay: event %r rejected: %s", str(tag)[:200], err)
                    continue
                jobs += new_jobs
                returns += new_returns
                events += new_events
            count += len(batch.events)
        self.store.write_batch(jobs, returns, events)
        self.sent_events += count

    def close(self):
        pass


class Forwarder(threading.Thread):
    def __init__(self, directory, sink, max_bytes, max_message_bytes=64 << 20, idle_seconds=0.5):
        super().__init__(name="relay-forwarder", daemon=True)
        self.writer = SpoolWriter(directory)
        self.reader = SpoolReader(directory)
        self.sink = sink
        self.max_bytes = max_bytes
        self.max_message_bytes = max_message_bytes
        self.idle_seconds = idle_seconds
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.journaled = 0
        self.dropped_batches = 0
        self.dropped_events = 0
        self.failures = 0
        self.backlog = False
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

    def submit(self, events, master_id):
        """Journal one batch; JournalFull if the bound is reached (counted, logged)."""
        _, body = message.encode(events, master_id)
        if len(body) > self.max_message_bytes and len(events) > 1:
            # Keep messages under the workers' limit; a single event over it is
            # sent alone and dead-lettered by the worker with the reason.
            half = len(events) // 2
            self.submit(events[:half], master_id)
            self.submit(events[half:], master_id)
            return
        if self.pending_bytes() + len(body) > self.max_bytes:
            self.dropped_batches += 1
            self.dropped_events += len(events)
            log.critical(
                "relay: spool is full (%d bytes pending, relay:spool_max_bytes=%d): %d events LOST "
                "(%d lost so far); the broker or database has been unreachable for too long: %s",
                self._pending_bytes, self.max_bytes, len(events), self.dropped_events, self.last_error,
            )
            raise JournalFull()
        self.writer.append(body)
        self._pending_bytes += len(body) + 4
        self.journaled += len(events)
        self.wake.set()

    # -- the forwarding thread --------------------------------------------

    def run(self):
        delay = 0.5
        while True:
            try:
                moved = self.forward_once()
                delay = 0.5
            except Exception as err:  # pylint: disable=broad-except
                self.failures += 1
                self.backlog = True
                self.last_error = f"{type(err).__name__}: {err}"
                log.error("relay: forwarding failed, batches stay in the spool and are retried in %.1fs: %s", delay, self.last_error)
                if self.stopping.wait(delay):
                    return
                delay = min(delay * 2, 5)
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
        self.backlog = bool(bodies)
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
