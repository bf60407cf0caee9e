"""Helpers for the broker pipeline tests: configs, worker threads and processes, queue reads."""

import contextlib
import pathlib
import signal
import subprocess
import sys
import threading
import urllib.parse

import kombu

from salt_engine_lib import broker, config, message
from salt_engine_lib.worker import Worker
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


def queue_depth(url, name):
    with kombu.Connection(url, connect_timeout=5) as conn:
        try:
            _, count, _ = broker.queue(name).bind(conn.channel()).queue_declare(passive=True)
        except conn.channel_errors:
            if broker.is_redis(url):
                return 0  # Redis deletes an emptied list: the queue is empty
            raise
        return count


def take_all(url, name):
    """Every message of a queue (acked, so removed): [(headers, body)]."""
    taken = []
    with kombu.Connection(url, connect_timeout=5) as conn:
        bound = broker.queue(name).bind(conn.channel())
        while True:
            msg = bound.get(no_ack=True)
            if msg is None:
                return taken
            taken.append((dict(msg.headers or {}), msg.body))


def proxied(url):
    """(TcpProxy, the URL through it) for a broker or database URL on loopback."""
    parts = urllib.parse.urlsplit(url)
    proxy = TcpProxy(parts.hostname, parts.port)
    return proxy, url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}", 1)


SALT_RELAY = str(pathlib.Path(sys.executable).parent / "salt-relay")


@contextlib.contextmanager
def worker_process(args, log_path):
    """``salt-relay <args>`` (a worker) logging to ``log_path``; SIGTERM at the end must exit 0."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([SALT_RELAY, *args], stdout=log, stderr=subprocess.STDOUT)
    yield proc
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, pathlib.Path(log_path).read_text()[-3000:]
