"""Reads the master event bus in its own thread, into a bounded queue.

Reading must never wait on filtering, storing or publishing: a listener that
blocks between reads loses events when the master's publisher overflows
(measured: 23-37 % lost at ~5k events/s). This thread only reads and hands
off; the engine loop does everything else.

It reads with Salt's asynchronous subscriber (``get_master_event(...,
io_loop=loop)``) in an asyncio loop of its own. The synchronous
``get_event()`` runs a whole ``IOLoop.run_sync()`` per event, and Tornado's
``run_sync`` defines a ``TypedDict`` class on every call: that was more than
half of the engine's CPU time under load (py-spy). The asynchronous
subscriber returns events already buffered without a trip through the loop,
and reconnects by itself as the synchronous one does.
"""

import asyncio
import logging
import queue
import threading

log = logging.getLogger(__name__)


class BusReader(threading.Thread):
    def __init__(self, opts, maxsize=100_000, poll_seconds=1.0):
        super().__init__(name="relay-bus-reader", daemon=True)
        self.opts = opts
        self.events = queue.Queue(maxsize=maxsize)
        self.poll_seconds = poll_seconds
        self.overflowed = 0
        self.disconnects = 0
        self._stop = threading.Event()
        self.ready = threading.Event()

    def stop(self):
        self._stop.set()

    def _dropped(self):
        self.disconnects += 1
        log.warning(
            "relay: the master's event publisher closed the engine's subscription (%d times so far); "
            "events published until it reconnects are LOST to the engine. The master drops a "
            "subscriber that falls pub_server_write_queue_size events behind (default 10000): "
            "raise it on busy masters",
            self.disconnects,
        )

    def _watch_disconnects(self, bus):
        """Be told when the master's publisher drops us.

        Salt's subscriber reconnects by itself, silently (3008: TCP/IPC
        PublishClient); its ``disconnect_callback`` is the one place to see it.
        """
        client = getattr(bus.subscriber, "obj", bus.subscriber)
        if client is None or not hasattr(client, "disconnect_callback"):
            log.info("relay: this Salt's event subscriber has no disconnect_callback; drops by the publisher cannot be counted")
            return

        async def dropped():
            self._dropped()

        client.disconnect_callback = dropped

    def run(self):
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._read_until_stopped(loop))
        finally:
            loop.close()

    async def _read_until_stopped(self, loop):
        import salt.utils.event  # pylint: disable=import-outside-toplevel
        from salt.exceptions import SaltDeserializationError  # pylint: disable=import-outside-toplevel

        bus = salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=True, io_loop=loop)
        try:
            bus.connect_pub()  # asynchronous: creates the subscriber and schedules its connect
            client = bus.subscriber
            connecting = getattr(bus, "_connect_task", None)
            # Await that very connect: a second one would open a second stream
            # that nobody reads (and the publisher would drop it as slow).
            await (connecting if connecting is not None else client.connect())
            self._watch_disconnects(bus)
            self.ready.set()
            while not self._stop.is_set():
                try:
                    raw = await client.recv(timeout=self.poll_seconds)
                except Exception as err:  # pylint: disable=broad-except
                    log.error("relay: reading the event bus failed, retrying: %s: %s", type(err).__name__, err)
                    await asyncio.sleep(0.5)
                    continue
                if raw is None:
                    continue
                try:
                    tag, data = bus.unpack(raw)
                except SaltDeserializationError:
                    continue  # a malformed frame (Salt logs it); get_event skips them too
                self._hand_off(tag, data)
        finally:
            bus.destroy()

    def _hand_off(self, tag, data):
        try:
            self.events.put_nowait((tag, data))
        except queue.Full:
            # Counted and logged, never blocks the bus.
            self.overflowed += 1
            if self.overflowed % 1000 == 1:
                log.error("relay: in-memory event queue full, %d events dropped so far", self.overflowed)
