"""Reads the master event bus in its own thread, into a bounded queue.

Reading must never wait on filtering, storing or publishing: a listener that
blocks between reads loses events when the master's publisher overflows
(measured: 23-37 % lost at ~5k events/s). This thread only reads and hands
off; the engine loop does everything else.

It reads with Salt's asynchronous subscriber, in an event loop of its own
(the loop kind and every other Salt-version difference: :mod:`saltcompat`).
The synchronous ``get_event()`` runs a whole ``IOLoop.run_sync()`` per event,
and Tornado's ``run_sync`` defines a ``TypedDict`` class on every call: that
was more than half of the engine's CPU time under load (py-spy). The
asynchronous subscriber returns events already buffered without a trip
through the loop, and reconnects by itself as the synchronous one does.

If the subscription cannot be made, or the reader's loop dies, the thread
ends with the exception in :attr:`BusReader.failure` (``is_alive()`` is then
False): the engine must not go on as if it were capturing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from salt_engine_lib import saltcompat

log = logging.getLogger(__name__)


class BusReader(threading.Thread):
    def __init__(self, opts: dict, maxsize: int = 100_000, poll_seconds: float = 1.0, connect_timeout: float = 30.0) -> None:
        super().__init__(name="relay-bus-reader", daemon=True)
        self.opts = opts
        self.events = queue.Queue(maxsize=maxsize)
        self.poll_seconds = poll_seconds
        self.connect_timeout = connect_timeout
        self.overflowed = 0
        self.disconnects = 0
        # False where this Salt cannot tell the reader that it was dropped.
        self.counts_disconnects = False
        # The exception that ended the reader (None while it runs, or after a requested stop).
        self.failure = None
        self._stopping = threading.Event()  # not _stop: Thread.join() calls self._stop()
        self._subscription = None
        self.ready = threading.Event()
        self.subscribed_at = None  # time.time() once subscribed

    def start_once(self) -> None:
        """Start the thread unless it already runs (the engine starts it before its configuration)."""
        if self.ident is None:
            self.start()

    def stop(self) -> None:
        self._stopping.set()
        subscription = self._subscription
        if subscription is not None:
            subscription.request_stop()

    def _dropped(self):
        self.disconnects += 1
        log.warning(
            "relay: the master's event publisher closed the engine's subscription (%d times so far); "
            "events published until it reconnects are LOST to the engine. The master drops a "
            "subscriber that falls pub_server_write_queue_size events behind (default 10000): "
            "raise it on busy masters",
            self.disconnects,
        )

    def run(self) -> None:
        try:
            subscription = saltcompat.master_bus_subscription(self.opts, poll_seconds=self.poll_seconds)
            self._subscription = subscription
            if self._stopping.is_set():
                return
            subscription.run(lambda: self._read_until_stopped(subscription))
        except BaseException as err:  # whatever ended the thread is the answer
            if self._stopping.is_set() and self.ready.is_set():
                log.warning("relay: the bus reader failed while stopping: %s: %s", type(err).__name__, err)
                return
            self.failure = err
            log.error(
                "relay: the bus reader stopped, NO events are captured any more (Salt %s): %s: %s",
                saltcompat.salt_version(),
                type(err).__name__,
                err,
                exc_info=True,
            )

    async def _read_until_stopped(self, subscription):
        from salt.exceptions import SaltDeserializationError  # here: importing this module does not import Salt

        await subscription.connect(self.connect_timeout)
        self.subscribed_at = time.time()
        self.counts_disconnects = subscription.watch_disconnects(self._dropped)
        if not self.counts_disconnects:
            log.info("relay: this Salt's event subscriber cannot report drops by the publisher; they cannot be counted")
        self.ready.set()
        while not self._stopping.is_set():
            try:
                raw = await subscription.recv()
            except Exception as err:
                log.error("relay: reading the event bus failed, retrying: %s: %s", type(err).__name__, err)
                await subscription.sleep(0.5)
                continue
            if raw is None:
                continue
            try:
                tag, data = subscription.unpack(raw)
            except SaltDeserializationError:
                continue  # a malformed frame (Salt logs it); get_event skips them too
            self._hand_off(tag, data)

    def _hand_off(self, tag, data):
        try:
            self.events.put_nowait((tag, data))
        except queue.Full:
            # Counted and logged, never blocks the bus.
            self.overflowed += 1
            if self.overflowed % 1000 == 1:
                log.error("relay: in-memory event queue full, %d events dropped so far", self.overflowed)
