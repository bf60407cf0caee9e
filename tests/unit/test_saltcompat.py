"""salt_engine_lib.saltcompat: one test (or more) per Salt-version difference it handles.

Runs on whatever Salt is installed (CI runs it on each Salt of the matrix in
.ci/run); tests of a difference another Salt has are skipped. The bus tests use Salt's
real master event publisher, started in a child process with a short socket dir.
"""

import asyncio
import os
import pathlib
import shutil
import socket
import tempfile
import threading
import time

import pytest

from salt_engine_lib import saltcompat
from salt_engine_lib.bus import BusReader

ASYNCIO = saltcompat.asyncio_transport()


# -- a real master event publisher -------------------------------------------


class Publisher:
    """Salt's own master event publisher (the one engines read), for one sock_dir."""

    def __init__(self, root):
        import salt.config

        self.opts = salt.config.apply_master_config(
            {
                "id": "compat_master",
                "root_dir": str(root),
                "sock_dir": str(root / "s"),
                "cachedir": str(root / "c"),
                "pki_dir": str(root / "p"),
                "interface": "127.0.0.1",
                "user": None,
            },
            salt.config.DEFAULT_MASTER_OPTS.copy(),
        )
        for key in ("sock_dir", "cachedir", "pki_dir"):
            os.makedirs(self.opts[key], exist_ok=True)
        self._stop = None

    def start(self):
        import salt.channel.server
        import salt.utils.event
        import salt.utils.process

        if hasattr(salt.channel.server, "MasterPubServerChannel"):  # 3007+
            manager = salt.utils.process.ProcessManager(wait_for_kill=5)
            channel = salt.channel.server.MasterPubServerChannel.factory(self.opts)
            channel.pre_fork(manager)
            assert channel.transport.started.wait(30), "publisher did not start"

            def stop():
                manager.kill_children()
                channel.close()

            self._stop = stop
        else:  # 3006
            process = salt.utils.event.EventPublisher(self.opts)
            process.start()
            pub = pathlib.Path(self.opts["sock_dir"], "master_event_pub.ipc")
            deadline = time.monotonic() + 30
            while not pub.exists() and time.monotonic() < deadline:
                time.sleep(0.05)

            def stop():
                process.terminate()
                process.join(10)

            self._stop = stop
        return self

    def stop(self):
        if self._stop is not None:
            self._stop()
            self._stop = None

    def fire(self, count, prefix):
        import salt.utils.event

        with salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=False) as bus:
            for i in range(count):
                assert bus.fire_event({"i": i}, f"{prefix}/{i}") is not False
                if i % 100 == 99:
                    time.sleep(0.01)


@pytest.fixture
def short_root():
    root = pathlib.Path(tempfile.mkdtemp(prefix="sc-", dir="/tmp"))  # AF_UNIX path limit
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def publisher(short_root):
    pub = Publisher(short_root).start()
    yield pub
    pub.stop()


@pytest.fixture
def reader_for():
    started = []

    def make(opts, **kwargs):
        reader = BusReader(opts, poll_seconds=0.2, **kwargs)
        reader.start()
        started.append(reader)
        return reader

    yield make
    for reader in started:
        reader.stop()
        reader.join(10)


def drain(reader, count, prefix, timeout=30):
    tags = []
    deadline = time.monotonic() + timeout
    while len(tags) < count and time.monotonic() < deadline:
        try:
            tag, _ = reader.events.get(timeout=0.2)
        except Exception:  # queue.Empty
            continue
        if tag.startswith(prefix):
            tags.append(tag)
    return tags


# -- difference 1: the loop kind ----------------------------------------------


def test_subscription_kind_follows_the_transport():
    import salt.transport

    subscription = saltcompat.master_bus_subscription({"sock_dir": "/nonexistent"})
    assert subscription.kind == ("asyncio" if hasattr(salt.transport, "ipc_publish_client") else "tornado")
    if not ASYNCIO:
        import salt.ext.tornado.ioloop  # noqa: F401  # 3006 vendors the Tornado its subscriber needs


def test_reader_captures_every_event_from_salts_publisher(publisher, reader_for):
    """Differences 1-3 together: real publisher, real subscriber, this Salt's loop."""
    reader = reader_for(publisher.opts)
    assert reader.ready.wait(30), reader.failure
    publisher.fire(500, "compat/all")
    tags = drain(reader, 500, "compat/all")
    assert tags == [f"compat/all/{i}" for i in range(500)]
    assert reader.failure is None and reader.disconnects == 0


def test_stop_ends_the_reader_quietly(publisher, reader_for):
    reader = reader_for(publisher.opts)
    assert reader.ready.wait(30)
    time.sleep(0.5)  # several idle polls
    started = time.monotonic()
    reader.stop()
    reader.join(5)
    assert not reader.is_alive()
    assert time.monotonic() - started < 3
    assert reader.failure is None
    assert reader.disconnects == 0  # our own close is not a drop


# -- difference 2: one subscriber, one connect (3007+) -------------------------


class FakeClient:
    """Stands in for 3007/3008's tcp.PublishClient."""

    instances = []

    def __init__(self, frames=()):
        self.frames = list(frames)
        self.connects = 0
        self.disconnect_callback = None
        self.closed = False
        FakeClient.instances.append(self)

    async def connect(self, timeout=None):
        self.connects += 1

    async def recv(self, timeout=None):
        # 3007's recv(timeout>0) would close and reconnect the stream on timeout (difference 3).
        assert timeout is None, f"recv called with timeout={timeout!r}"
        if self.frames:
            return self.frames.pop(0)
        await asyncio.sleep(3600)

    def close(self):
        self.closed = True


@pytest.mark.skipif(not ASYNCIO, reason="3006 has no ipc_publish_client")
def test_asyncio_subscription_makes_one_subscriber_and_awaits_its_connect(monkeypatch):
    import salt.transport
    import salt.utils.event

    frame = salt.utils.event.SaltEvent.pack("compat/one", {"x": 1})
    FakeClient.instances = []
    monkeypatch.setattr(salt.transport, "ipc_publish_client", lambda node, opts, io_loop: FakeClient([frame]))
    subscription = saltcompat.master_bus_subscription({"sock_dir": "/nonexistent"})
    seen = {}

    async def main():
        await subscription.connect(5)
        seen["subscriber"] = subscription.bus.subscriber
        seen["unpacked"] = subscription.unpack(await subscription.recv())
        seen["cpub"] = subscription.bus.cpub

    subscription.run(main)
    assert len(FakeClient.instances) == 1
    client = FakeClient.instances[0]
    assert seen["subscriber"] is client and client.connects == 1
    assert seen["cpub"] is True
    assert seen["unpacked"] == ("compat/one", {"x": 1})
    assert client.closed  # run() destroyed the bus


@pytest.mark.skipif(not ASYNCIO, reason="3007+ only")
def test_asyncio_request_stop_cancels_a_waiting_recv(monkeypatch):
    import salt.transport

    monkeypatch.setattr(salt.transport, "ipc_publish_client", lambda node, opts, io_loop: FakeClient())
    subscription = saltcompat.master_bus_subscription({"sock_dir": "/nonexistent"})
    waiting = threading.Event()

    async def main():
        await subscription.connect(5)
        waiting.set()
        await subscription.recv()  # blocks "forever"

    threading.Timer(0.3, subscription.request_stop).start()
    started = time.monotonic()
    subscription.run(main)  # returns normally: the stop was asked for
    assert waiting.is_set() and time.monotonic() - started < 3


# -- difference 4: being told of a drop ---------------------------------------


def test_disconnect_notifier_works_called_or_awaited():
    counted = []
    closing = []
    notifier = saltcompat.DisconnectNotifier(lambda: counted.append(1), lambda: bool(closing))
    notifier()  # 3007: called, result ignored
    asyncio.new_event_loop().run_until_complete(_await(notifier))  # 3008: awaited
    assert len(counted) == 2
    closing.append(True)
    notifier()
    assert len(counted) == 2  # our own close is not a drop


async def _await(notifier):
    await notifier()


def test_publisher_restart_is_counted_and_reading_resumes(short_root, reader_for):
    publisher = Publisher(short_root).start()
    try:
        reader = reader_for(publisher.opts)
        assert reader.ready.wait(30), reader.failure
        publisher.fire(10, "compat/before")
        assert len(drain(reader, 10, "compat/before")) == 10
        publisher.stop()
        deadline = time.monotonic() + 15
        while reader.disconnects == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert reader.disconnects >= 1
        publisher.start()
        # Salt's subscriber reconnects by itself (backoff ~1 s); fire until it is back.
        got = []
        deadline = time.monotonic() + 30
        n = 0
        while not got and time.monotonic() < deadline:
            publisher.fire(1, f"compat/after{n}")
            got = drain(reader, 1, "compat/after", timeout=1)
            n += 1
        assert got, "the reader did not resume after the publisher came back"
        assert reader.failure is None and reader.is_alive()
    finally:
        publisher.stop()


# -- the reader records why it ended -------------------------------------------


def test_connect_failure_is_recorded(short_root, reader_for):
    opts = {"sock_dir": str(short_root), "id": "compat_master"}  # no publisher there
    reader = reader_for(opts, connect_timeout=1)
    reader.join(20)
    assert not reader.is_alive()
    assert not reader.ready.is_set()
    assert reader.failure is not None


def test_an_unexpected_error_ends_the_reader_with_failure(publisher, reader_for, monkeypatch):
    def broken(self, raw):
        raise RuntimeError("boom")

    monkeypatch.setattr(saltcompat.BusSubscription, "unpack", broken)
    reader = reader_for(publisher.opts)
    assert reader.ready.wait(30)
    publisher.fire(1, "compat/boom")
    reader.join(10)
    assert not reader.is_alive()
    assert isinstance(reader.failure, RuntimeError)


# -- difference 5: the salt CLI's polling (3007) ------------------------------


class BufferedStream:
    """A Tornado IOStream whose bytes were already read off the socket into its buffer."""

    def __init__(self, data):
        self.socket, self._peer = socket.socketpair()  # nothing left in the kernel socket
        self.data = data
        self._read_buffer_size = len(data)

    async def read_bytes(self, count, partial=False):
        chunk, self.data = self.data[:count], self.data[count:]
        self._read_buffer_size = len(self.data)
        return chunk

    def close(self):
        self.socket.close()
        self._peer.close()


def _publish_client():
    import salt.transport.tcp

    return getattr(salt.transport.tcp, "PublishClient", None)


@pytest.mark.skipif(
    not saltcompat._publish_client_poll_misses_buffered_frames(_publish_client()), reason="this Salt's recv(timeout=0) has no select() peek"
)
def test_cli_poll_sees_frames_tornado_already_buffered(monkeypatch):
    import salt.transport.frame

    cls = _publish_client()
    # Salt's own recv, even where a returner loaded earlier in this process
    # already put the fix in place; restored after the test.
    monkeypatch.setattr(cls, "recv", getattr(cls.recv, "__wrapped__", cls.recv))
    frame = salt.transport.frame.frame_msg_ipc(b"payload", raw_body=True)

    def poll_once():
        client = cls({"sock_dir": "/nonexistent"}, None, path="/nonexistent")
        client._stream = BufferedStream(frame)
        try:
            return asyncio.new_event_loop().run_until_complete(client.recv(timeout=0))
        finally:
            client._stream.close()

    assert poll_once() is None  # Salt's own: the frame waits, unseen
    assert saltcompat.fix_publish_client_poll() is True
    assert saltcompat.fix_publish_client_poll() is True  # idempotent
    assert poll_once() == b"payload"


@pytest.mark.skipif(saltcompat._publish_client_poll_misses_buffered_frames(_publish_client()), reason="3007: needs the fix")
def test_cli_poll_fix_is_not_applied_where_salt_is_right():
    cls = _publish_client()
    before = cls.recv if cls is not None else None
    assert saltcompat.fix_publish_client_poll() is False
    assert (cls.recv if cls is not None else None) is before


# -- difference 6: job retention ------------------------------------------------


def test_retention_follows_this_salts_own_reading_of_keep_jobs():
    import salt.config

    hours_still_count = "keep_jobs" in salt.config.VALID_OPTS  # 3006/3007; 3008 removed the option
    two_days = {"keep_jobs": 48, "keep_jobs_seconds": 86400}
    assert saltcompat.keep_jobs_seconds(two_days) == (48 * 3600 if hours_still_count else 86400)
    assert saltcompat.keep_jobs_seconds({"keep_jobs": 24, "keep_jobs_seconds": 600}) == 600
    assert saltcompat.keep_jobs_seconds({"keep_jobs_seconds": 0}) == 0  # keep forever


# -- difference 7: master_async_mworker -----------------------------------------


def test_async_mworker_is_detected_by_salts_own_options():
    import salt.config

    assert saltcompat.has_async_mworker() == ("master_async_mworker" in salt.config.DEFAULT_MASTER_OPTS)


# -- difference 8: the benchmark's request channel -------------------------------


def test_request_channel_is_made_on_the_running_loop_or_refused_with_a_reason(tmp_path):
    import salt.config

    (tmp_path / "pki").mkdir()
    opts = salt.config.minion_config(None)
    opts.update(
        {
            "id": "compat-minion",
            "pki_dir": str(tmp_path / "pki"),
            "cachedir": str(tmp_path / "c"),
            "master_uri": "tcp://127.0.0.1:4506",
            "master_ip": "127.0.0.1",
            "master_port": 4506,
        }
    )

    async def make_and_close():
        channel = saltcompat.async_request_channel(opts)
        await saltcompat.close_request_channel(channel)
        return channel

    if not ASYNCIO:
        with pytest.raises(RuntimeError, match="needs Salt 3007 or newer"):
            asyncio.run(make_and_close())
        return
    channel = asyncio.run(make_and_close())
    assert type(channel).__name__ == "AsyncReqChannel"


def test_get_jids_filter_takes_the_same_arguments_as_salts_local_cache():
    import inspect

    import salt.returners.local_cache

    from salt_engine_lib import returner

    salts = inspect.signature(salt.returners.local_cache.get_jids_filter)
    ours = inspect.signature(returner.get_jids_filter)
    assert list(salts.parameters) == ["count", "filter_find_job"]
    assert list(ours.parameters)[2:] == list(salts.parameters)  # ours takes the store and the settings first
    assert ours.parameters["filter_find_job"].default == salts.parameters["filter_find_job"].default
