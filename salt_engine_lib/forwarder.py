"""The engine's journal: every batch goes to disk first, then to its sink.

The engine loop only encodes a batch and appends it to the journal (a
:mod:`journal` on local disk, microseconds, never blocked by the broker or
the database). This thread forwards journaled batches in order to the sink (the
broker, or the store in the embedded mode) and forgets them only once the
sink confirmed. So:

* a broker or database outage only makes the journal grow; it is replayed
  in order when the sink is back;
* a killed or restarted engine (or master) loses nothing that reached the
  journal: the next engine forwards what is left (possibly once more; the
  store's writes are idempotent);
* the journal is bounded (``journal_max_bytes``): beyond it a batch is
  dropped, counted and logged at CRITICAL, never silently.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Optional, Union

from salt_engine_lib import codec, ingest, message
from salt_engine_lib.backoff import Backoff
from salt_engine_lib.errors import JournalFull
from salt_engine_lib.journal import JournalReader, JournalWriter

if TYPE_CHECKING:
    import pathlib

    from salt_engine_lib.broker import Publisher
    from salt_engine_lib.deadletters import DeadLetterFile
    from salt_engine_lib.store import Store

log = logging.getLogger(__name__)


class BrokerSink:
    """Publishes each journaled batch as one persistent, confirmed message."""

    records_per_send = 1  # one message per batch: a failure never re-sends others

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.sent_events = 0

    def send(self, bodies: list[bytes]) -> None:
        for body in bodies:
            message_id, count = message.peek(body)
            self.publisher.publish(body, message_id)
            self.sent_events += count

    def close(self) -> None:
        self.publisher.close()


class StoreSink:
    """The embedded mode: journaled batches straight into the store (:mod:`ingest`), several per transaction.

    Events that cannot be stored are dead-lettered to ``dead_letters`` with the reason.
    """

    records_per_send = 20

    def __init__(self, store: Store, dead_letters: Optional[DeadLetterFile] = None) -> None:
        self.store = store
        self.dead_letters = dead_letters
        self.sent_events = 0
        self.rejected = 0

    def refused(self, event: ingest.Event, reason: str, _error: Optional[Exception] = None) -> None:
        self.rejected += 1
        log.error("relay: event %r not stored: %s", str(event.tag)[:200], reason)
        if self.dead_letters is not None:
            self.dead_letters.add({"tag": event.tag, "data": event.data, "master_id": event.master_id}, reason)

    def send(self, bodies: list[bytes]) -> None:
        events = []
        for body in bodies:
            events += ingest.events_of(message.decode(body))
        self.write(events)
        self.sent_events += len(events)

    def write(self, events: list[ingest.Event]) -> None:
        """Store ``events`` (:class:`ingest.Event`); StoreError if the database is unreachable."""
        ingest.store_events(self.store, events, self.refused)

    def close(self) -> None:
        pass


class Forwarder(threading.Thread):
    """The journal's writer side (:meth:`submit`) and its forwarding thread.

    ``returns_from_job_cache`` is stamped on every message: the master's job
    cache is relay, so jobs and returns reach the store through its records.
    So is ``namespace``, the master's job namespace (its cluster id), where
    it is not the master id.
    """

    def __init__(
        self,
        directory: Union[str, pathlib.Path],
        sink: Union[BrokerSink, StoreSink],
        max_bytes: int,
        max_message_bytes: int = 64 << 20,
        idle_seconds: float = 0.5,
        returns_from_job_cache: bool = False,
        namespace: Optional[str] = None,
    ) -> None:
        super().__init__(name="relay-forwarder", daemon=True)
        self.returns_from_job_cache = returns_from_job_cache
        self.namespace = namespace
        # The engine loop and the outbox drainer both submit.
        self._submit_lock = threading.Lock()
        self.writer = JournalWriter(directory)
        self.reader = JournalReader(directory)
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

    def pending_bytes(self, fresh: bool = False) -> int:
        """Bytes journaled and not yet forwarded (re-measured at most twice a second)."""
        now = time.monotonic()
        if fresh or now - self._pending_checked_at >= 0.5:
            self._pending_bytes = self.reader.pending_bytes()
            self._pending_checked_at = now
        return self._pending_bytes

    def unforwarded(self) -> dict[str, Any]:
        """{batches, bytes, oldest_created}: what the journal holds that its sink has not confirmed."""
        batches, size, first = self.reader.backlog()
        return {"batches": batches, "bytes": size, "oldest_created": message.created_at(first) if first else None}

    def submit(self, events: list[tuple[str, Any]], master_id: Optional[str], keep_on_full: bool = False) -> None:
        """Journal one batch; JournalFull if the bound is reached.

        The events are then lost (counted, logged at CRITICAL), unless the
        caller still holds them (``keep_on_full``: the outbox drainer).
        """
        with self._submit_lock:
            self._submit(events, master_id, keep_on_full)

    def _submit(self, events, master_id, keep_on_full):
        try:
            _, body = message.encode(events, master_id, returns_from_job_cache=self.returns_from_job_cache, namespace=self.namespace)
        except Exception as err:  # whatever an event holds that cannot be encoded: keep the others
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
                "relay: journal is full (%d bytes pending, relay:journal_max_bytes=%d): %d events LOST "
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

    def run(self) -> None:
        retries = Backoff()
        while True:
            try:
                moved = self.forward_once()
                retries.reset()
            except Exception as err:  # a sink's failure of any kind: the batches stay journaled
                self.failures += 1
                self.last_error = f"{type(err).__name__}: {err}"
                delay = retries.next_delay()
                log.error("relay: forwarding failed, batches stay in the journal and are retried in %.1fs: %s", delay, self.last_error)
                if self.stopping.wait(delay):
                    return
                continue
            if not moved:
                if self.stopping.is_set():
                    return
                self.wake.wait(self.idle_seconds)
                self.wake.clear()

    def forward_once(self) -> int:
        bodies, positions = self.reader.read(self.sink.records_per_send)
        if bodies:
            self.sink.send([_unwrapped(body) for body in bodies])
        if positions:
            self.reader.commit(positions)
        return len(bodies)

    def stop(self, timeout: float = 10.0) -> None:
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


def _unwrapped(body):
    """A journaled message body; journals left by earlier salt-relay builds hold each one wrapped as a msgpack bin."""
    if body[:1] in (b"\xc4", b"\xc5", b"\xc6"):  # a body itself is a map (0x8_, 0xde, 0xdf)
        return codec.unpack(body)
    return body
