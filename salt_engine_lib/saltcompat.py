"""Every difference between Salt releases that salt-relay depends on (3006, 3007, 3008).

The rest of salt-relay never checks a Salt version: it calls what is here.
Each difference is detected by a feature, not by a version number; the
numbers below say where each behaviour was seen (3006.30, 3007.17, 3008.3,
``salt/...`` paths are inside the ``salt`` package).

1. The event loop of the asynchronous bus subscriber.
   3006: ``SaltEvent(io_loop=...)`` builds a ``salt.transport.ipc.IPCMessageSubscriber``
   on Salt's vendored Tornado 4.5 (``salt.ext.tornado``), whose connect calls
   ``io_loop.make_current()`` (``salt/transport/ipc.py:328`` ->
   ``salt/utils/asynchronous.py:28``): given an asyncio loop it fails with
   ``AttributeError: ... no attribute 'make_current'``, inside a Future no one
   awaits (logged once as "Future exception was never retrieved").
   3007 and 3008 run Salt's transports on asyncio (``salt.transport.ipc_publish_client``).
   Detected by: ``salt.transport.ipc_publish_client`` exists (3007+).
   Here: :class:`TornadoBusSubscription` runs on a vendored-Tornado IOLoop,
   :class:`AsyncioBusSubscription` on an asyncio loop. Either runs the
   reader's one coroutine for the reader's whole life (one ``run_sync`` /
   ``run_until_complete``, never one per event).

2. Connecting the subscriber (3007+). ``SaltEvent(listen=True)`` and
   ``connect_pub()`` schedule the connect themselves: 3007 with
   ``io_loop.spawn_callback(...)`` (``salt/utils/event.py:393``), which an
   asyncio loop does not have (``AttributeError``, raised in the reader
   thread, so nothing reached the master log); 3008 with
   ``io_loop.create_task`` kept in the private ``_connect_task``. Here the
   subscriber is made exactly as ``connect_pub()`` makes it
   (``salt.transport.ipc_publish_client(node, opts, io_loop)``) and handed to
   the ``SaltEvent`` first, so ``connect_pub()`` only marks it connected;
   the reader awaits that one connect (a second one would open a second
   stream that nobody reads, which the publisher then drops as slow).
   3006: ``connect_pub()`` only creates the subscriber; its ``connect(timeout=)``
   is awaited.

3. Waiting for the next event without losing any.
   3006: ``IPCMessageSubscriber.read(timeout)`` keeps its pending read across
   a timeout (``FutureWithTimeout``): polled with the reader's poll interval.
   3007: ``PublishClient.recv(timeout>0)`` cancels its read on timeout, then
   ``close()``s and reconnects the stream (``salt/transport/tcp.py:427-437``):
   every idle poll would reconnect and lose what is published meanwhile;
   ``recv(timeout=0)`` decides by a ``select()`` on the kernel socket
   (``salt/transport/tcp.py:398-400``) and so misses frames Tornado already
   moved into its own buffer (see 5). 3008's ``recv(timeout)`` loses nothing.
   Here (3007+): ``recv()`` without a timeout, which returns frames already
   buffered without a trip through the loop; :meth:`AsyncioBusSubscription.request_stop`
   cancels it from the stopping thread.

4. Being told that the publisher dropped the subscription. The master's
   publisher closes a subscriber that falls behind; Salt reconnects silently.
   3006: no callback; ``IPCMessageSubscriber.read`` returns None and the
   subscriber is no longer ``connected()``. 3007 calls
   ``PublishClient.disconnect_callback()`` plainly (``salt/transport/tcp.py:415,457``);
   3008 awaits it (``salt/transport/tcp.py:514``). Here the callback does its
   work when called and returns an awaitable that does nothing, right for both.

5. The ``salt`` CLI's event polling (3007 only), see
   :func:`fix_publish_client_poll`. ``LocalClient`` polls the bus with
   ``recv(timeout=0)``; its ``select()`` peek sees nothing once Tornado has
   read the waiting bytes into its buffer, so a CLI that starts polling after
   the minions' returns already arrived (because its job cache's first
   ``get_load`` took longer than the minions) waits for its whole
   ``--timeout`` and a ``saltutil.find_job`` round. 3008 fixed it
   (``PublishClient._ensure_read_task``, ``salt/transport/tcp.py:535-541``).
   Detected by: ``PublishClient`` has no ``_ensure_read_task`` and its
   ``recv`` uses ``selectors``.

6. Job retention. 3006 and 3007 still honour the deprecated ``keep_jobs``
   (hours) when ``keep_jobs_seconds`` is left at its default; 3008 removed
   ``keep_jobs``. Every release has ``salt.utils.job.get_keep_jobs_seconds``,
   which answers as that release's own job cache does: :func:`keep_jobs_seconds`
   asks it, so relay's retention never deletes jobs earlier than local_cache would.

7. ``master_async_mworker`` (3008 only: returns stored from a thread pool).
   Detected by: the option is in ``salt.config.VALID_OPTS``
   (:func:`has_async_mworker`).

8. The request channel of the headline benchmark's return driver. 3007+:
   ``AsyncReqChannel`` on Tornado 6 over asyncio, closed with ``close_async()``
   (3008) or ``close()`` (3007). 3006's channel runs on the vendored Tornado
   4.5 and cannot share the driver's asyncio loop: :func:`async_request_channel`
   says so (the benchmark runs on 3007+).

The same on every release (so not here): ``get_jids_filter(count,
filter_find_job=True)``; the callable ``salt.loader`` entry point
(``salt/loader/__init__.py: _module_dirs``); the engine's ``start(**kwargs)``
with ``__opts__`` and ``__runners__``.
"""

from __future__ import annotations

import inspect
import logging
import threading
from typing import Any, Awaitable, Callable, Optional

# Salt is imported inside the functions that use it: some of its modules exist
# on some releases only (salt.ext.tornado on 3006), and importing this module
# does not import Salt.

log = logging.getLogger(__name__)


def salt_version() -> str:
    """Salt's version string, for messages only."""
    try:
        import salt.version

        return salt.version.__version__
    except Exception:  # for messages only: whatever fails is "unknown"
        return "unknown"


def asyncio_transport() -> bool:
    """True where Salt's transports run on asyncio (3007+), False on 3006 (difference 1)."""
    import salt.transport

    return hasattr(salt.transport, "ipc_publish_client")


def master_bus_subscription(opts: dict, poll_seconds: float = 1.0) -> BusSubscription:
    """A subscription to the master's event bus, for one thread (see :class:`BusSubscription`)."""
    if asyncio_transport():
        return AsyncioBusSubscription(opts, poll_seconds)
    return TornadoBusSubscription(opts, poll_seconds)


class _Done:
    """An awaitable that is already finished."""

    def __await__(self):
        return iter(())


class DisconnectNotifier:
    """``disconnect_callback`` for 3007 (called) and 3008 (called, then awaited): difference 4."""

    def __init__(self, callback: Callable[[], None], closing: Callable[[], bool]) -> None:
        self.callback = callback
        self.closing = closing

    def __call__(self, *args, **kwargs):
        if not self.closing():
            self.callback()
        return _Done()


class BusSubscription:
    """What the bus reader uses; one instance per thread.

    ``run(main)`` runs the coroutine function ``main`` in a new event loop of
    the kind this Salt needs, in the calling thread, until it returns; it
    raises what ``main`` raised, and closes the bus and the loop in any case.
    Inside ``main``: ``await connect(timeout)``, ``watch_disconnects(cb)``,
    then ``await recv()`` repeatedly (a raw frame, or None when there is
    nothing to hand over), ``unpack(raw)`` -> ``(tag, data)`` and
    ``await sleep(seconds)``. ``request_stop()`` may be called from any
    thread: ``recv()`` then returns None (or ``main`` is cancelled) within
    ``poll_seconds``.
    """

    kind = "?"

    def __init__(self, opts: dict, poll_seconds: float = 1.0) -> None:
        self.opts = opts
        self.poll_seconds = poll_seconds
        self.bus = None
        self._stop_requested = threading.Event()
        self._closing = False

    def stop_requested(self) -> bool:
        return self._stop_requested.is_set()

    def unpack(self, raw: Any) -> tuple[str, Any]:
        return self.bus.unpack(raw)

    def _close_bus(self):
        self._closing = True
        bus, self.bus = self.bus, None
        if bus is not None:
            bus.destroy()

    def _new_bus(self, io_loop):
        import salt.utils.event

        # listen=False: on 3007/3008 listen=True would schedule the connect itself (difference 2).
        return salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=False, io_loop=io_loop)


class AsyncioBusSubscription(BusSubscription):
    """3007+: Salt's ``PublishClient`` on an asyncio loop of the reader's own."""

    kind = "asyncio"

    def __init__(self, opts: dict, poll_seconds: float = 1.0) -> None:
        super().__init__(opts, poll_seconds)
        self.client = None
        self._loop = None
        self._main = None

    def run(self, main: Callable[[], Awaitable[Any]]) -> None:
        import asyncio

        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._main = loop.create_task(main())
            if self.stop_requested():
                self._main.cancel()
            try:
                loop.run_until_complete(self._main)
            except asyncio.CancelledError:
                if not self.stop_requested():
                    raise  # cancelled by something else than request_stop: a failure
        finally:
            try:
                self._close_bus()
            finally:
                _cancel_pending_tasks(loop)
                loop.close()

    def request_stop(self) -> None:
        self._stop_requested.set()
        loop, main = self._loop, self._main
        if loop is not None and main is not None:
            try:
                loop.call_soon_threadsafe(main.cancel)
            except RuntimeError:
                pass  # the loop is already closed: nothing to stop

    async def connect(self, timeout: float) -> None:
        import asyncio

        import salt.transport

        loop = asyncio.get_running_loop()
        self.bus = self._new_bus(loop)
        # The subscriber connect_pub() would make, without the connect it
        # would schedule (difference 2); connect_pub() then only marks it.
        self.client = salt.transport.ipc_publish_client(self.bus.node, self.bus.opts, io_loop=loop)
        self.bus.subscriber = self.client
        self.bus.connect_pub()
        # Without a timeout, connect() retries until it has a stream.
        await asyncio.wait_for(self.client.connect(), timeout)

    def watch_disconnects(self, callback: Callable[[], None]) -> bool:
        if not hasattr(self.client, "disconnect_callback"):
            return False
        self.client.disconnect_callback = DisconnectNotifier(callback, lambda: self._closing or self.stop_requested())
        return True

    async def recv(self) -> Any:
        # No timeout (difference 3): stopping cancels this instead.
        return await self.client.recv()

    async def sleep(self, seconds: float) -> None:
        import asyncio

        await asyncio.sleep(seconds)


def _cancel_pending_tasks(loop):
    import asyncio

    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())


class TornadoBusSubscription(BusSubscription):
    """3006: ``IPCMessageSubscriber`` on a vendored-Tornado IOLoop of the reader's own."""

    kind = "tornado"

    def __init__(self, opts: dict, poll_seconds: float = 1.0) -> None:
        super().__init__(opts, poll_seconds)
        self.subscriber = None
        self._io_loop = None
        self._on_drop = None
        self._down = False

    def run(self, main: Callable[[], Awaitable[Any]]) -> None:
        import salt.ext.tornado.ioloop

        io_loop = salt.ext.tornado.ioloop.IOLoop()
        self._io_loop = io_loop
        try:
            io_loop.run_sync(main)
        finally:
            try:
                self._close_bus()
            finally:
                io_loop.close()

    def request_stop(self) -> None:
        self._stop_requested.set()  # recv() looks at it after each poll

    async def connect(self, timeout: float) -> None:
        self.bus = self._new_bus(self._io_loop)
        self.bus.connect_pub()  # 3006: creates the subscriber, connects nothing
        self.subscriber = self.bus.subscriber
        await self.subscriber.connect(timeout=timeout)

    def watch_disconnects(self, callback: Callable[[], None]) -> bool:
        self._on_drop = callback
        return True

    async def recv(self) -> Any:
        subscriber = self.subscriber
        while not self.stop_requested():
            if not subscriber.connected():
                # read() would reconnect by itself, but retries forever without
                # looking at our stop: reconnect here, one poll at a time.
                try:
                    await subscriber.connect(timeout=self.poll_seconds)
                except Exception:  # the publisher is not back yet
                    await self.sleep(self.poll_seconds)
                continue
            # A timeout keeps the pending read (FutureWithTimeout): nothing is lost.
            raw = await subscriber.read(self.poll_seconds)
            if raw is not None:
                self._down = False
                return raw
            if subscriber.connected():
                self._down = False
            elif not self._down and not self._closing and not self.stop_requested():
                self._down = True  # counted once per drop (difference 4)
                if self._on_drop is not None:
                    self._on_drop()
        return None

    async def sleep(self, seconds: float) -> None:
        import salt.ext.tornado.gen

        await salt.ext.tornado.gen.sleep(seconds)


# -- difference 5: the salt CLI's event polling on 3007 -----------------------


def _publish_client_poll_misses_buffered_frames(cls):
    if cls is None or hasattr(cls, "_ensure_read_task"):
        return False
    try:
        source = inspect.getsource(cls.recv)
    except (OSError, TypeError):
        return False
    return "selectors" in source and "timeout == 0" in source


def fix_publish_client_poll() -> bool:
    """Make 3007's ``PublishClient.recv(timeout=0)`` see frames Tornado already buffered.

    For processes that poll the bus like the ``salt`` CLI does (its job
    cache's returner is loaded in that process). Returns True if this Salt
    needed it (and it is in place), False if it does not. Idempotent.
    """
    if not asyncio_transport():
        return False  # 3006: the CLI polls IPCMessageSubscriber; importing tcp would only cost time (0.19 s)
    try:
        import salt.transport.tcp as tcp
    except ImportError:
        return False
    cls = getattr(tcp, "PublishClient", None)
    if cls is None:
        return False
    if getattr(cls.recv, "_salt_relay_poll_fix", False):
        return True
    if not _publish_client_poll_misses_buffered_frames(cls):
        return False
    original = cls.recv

    async def recv(self, timeout=None):
        stream = self._stream
        if timeout == 0 and stream is not None and not self._closing and getattr(stream, "_read_buffer_size", 0) > 0:
            try:
                async with self._read_in_progress:
                    # Served from Tornado's buffer at once; the kernel socket is empty.
                    self.unpacker.feed(await stream.read_bytes(4096, partial=True))
            except Exception:  # then Salt's own code decides
                log.debug("relay: reading Tornado's buffered event bytes failed", exc_info=True)
        return await original(self, timeout)

    recv._salt_relay_poll_fix = True
    recv.__wrapped__ = original
    cls.recv = recv
    log.debug("relay: Salt %s: PublishClient.recv(timeout=0) now sees buffered frames", salt_version())
    return True


# -- difference 6: job retention ----------------------------------------------


def keep_jobs_seconds(opts: dict) -> int:
    """Salt's job retention in seconds, as this release's own job cache reads it (0: keep forever)."""
    import salt.utils.job

    return int(salt.utils.job.get_keep_jobs_seconds(opts) or 0)


# -- difference 7: master_async_mworker ----------------------------------------


def has_async_mworker() -> bool:
    """True where the master has ``master_async_mworker`` (3008+)."""
    import salt.config

    return "master_async_mworker" in salt.config.VALID_OPTS


# -- difference 8: the benchmark's request channel -----------------------------


def async_request_channel(opts: dict) -> Any:
    """A minion's ``AsyncReqChannel`` on the running asyncio loop (3007+)."""
    if not asyncio_transport():
        raise RuntimeError(
            f"Salt {salt_version()}: its request channel runs on the vendored Tornado 4.5, "
            "not on an asyncio loop; the benchmark's return driver needs Salt 3007 or newer"
        )
    import salt.channel.client
    import tornado.ioloop

    return salt.channel.client.AsyncReqChannel.factory(opts, crypt="aes", io_loop=tornado.ioloop.IOLoop.current())


async def close_request_channel(channel: Any) -> None:
    close_async = getattr(channel, "close_async", None)
    if close_async is not None:
        await close_async()  # 3008
    else:
        channel.close()  # 3007


# -- difference 9: the master cluster ------------------------------------------


def cluster_id(opts: dict) -> Optional[str]:
    """The master cluster this master belongs to (3007+ ``cluster_id``); None outside a cluster and on 3006."""
    value = opts.get("cluster_id")
    return value if isinstance(value, str) and value else None
