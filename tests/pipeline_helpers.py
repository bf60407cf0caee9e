"""Helpers for the broker pipeline tests: configs, worker threads and processes, a proxy in front of a server.

Queue reads live in :mod:`tests.support.brokers` (``queue_depth`` and
``take_all`` are imported here too, for the tests that take them from here).
"""

import contextlib
import pathlib
import signal
import threading
import urllib.parse

from salt_engine_lib import broker, config, message
from salt_engine_lib.worker import Worker
from tests.support import processes
from tests.support.brokers import queue_depth, take_all  # noqa: F401  (tests/functional imports them from here)
from tests.support.salt_daemons import SALT_RELAY
from tests.tcp_proxy import TcpProxy


def relay_config(broker_url, queue_name, **extra):
    return config.load(
        {
            "broker_url": broker_url,
            "queue": queue_name,
            "dead_letter_queue": f"{queue_name}.dlq",
            "batch_max_wait": 0.05,
            **extra,
        }
    )


def job_events(count, start=0, payload=None):
    events = []
    for index in range(start, start + count):
        jid = f"2026112513{index:010d}"
        events.append((f"salt/job/{jid}/new", {"fun": "test.ping", "tgt": "*", "minions": ["m1"], "arg": [], "jid": jid}))
        ret = {
            "fun": "test.ping",
            "id": "m1",
            "jid": jid,
            "return": payload if payload is not None else True,
            "retcode": 0,
            "success": True,
        }
        events.append((f"salt/job/{jid}/ret/m1", ret))
    return events


def publish_batches(cfg, events, per_message):
    publisher = broker.Publisher(cfg)
    try:
        for start in range(0, len(events), per_message):
            message_id, body = message.encode(events[start : start + per_message], "master-1")
            publisher.publish(body, message_id)
    finally:
        publisher.close()


class WorkerThread:
    """A real Worker consuming in a thread of the test process."""

    def __init__(self, cfg, store, **kwargs):
        self.worker = Worker(cfg, store, **kwargs)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.worker

    def __exit__(self, *exc):
        self.worker.stopping.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "worker did not stop within 30 s"


def proxied(url):
    """(TcpProxy, the URL through it) for a broker or database URL on loopback."""
    parts = urllib.parse.urlsplit(url)
    proxy = TcpProxy(parts.hostname, parts.port)
    return proxy, url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}", 1)


@contextlib.contextmanager
def worker_process(args, log_path):
    """``salt-relay <args>`` (a worker) logging to ``log_path``; SIGTERM at the end must exit 0."""
    proc = processes.spawn([SALT_RELAY, *args], log_path)
    yield proc
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, pathlib.Path(log_path).read_text()[-3000:]
