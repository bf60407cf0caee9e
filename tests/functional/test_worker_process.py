"""``salt-relay worker`` as a real process: competing consumers, SIGTERM, SIGKILL."""

import os
import pathlib
import re
import signal
import subprocess
import sys

import pytest

from salt_engine_lib import broker
from salt_engine_lib.store import Store, queries
from tests.pipeline_helpers import job_events, publish_batches, queue_depth, relay_config
from tests.waiting import wait_for

SALT_RELAY = str(pathlib.Path(sys.executable).parent / "salt-relay")


def start_worker(tmp_path, broker_url, queue_name, database_url, *args, log_name="worker.log"):
    env = {
        **os.environ,
        "SALT_RELAY_BROKER_URL": broker_url,
        "SALT_RELAY_DATABASE_URL": database_url,
        "SALT_RELAY_QUEUE": queue_name,
        "SALT_RELAY_DEAD_LETTER_QUEUE": f"{queue_name}.dlq",
        "SALT_RELAY_BATCH_MAX_WAIT": "0.05",
        # Redis hands a dead worker's unacked messages to others after this many seconds.
        "SALT_RELAY_BROKER_TRANSPORT_OPTIONS": "{visibility_timeout: 5}",
    }
    log = open(tmp_path / log_name, "ab")
    return subprocess.Popen(
        [SALT_RELAY, "-c", str(tmp_path), "-l", "info", "worker", *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def counts(store):
    try:
        found = store.read(queries.counts)
    except Exception:  # schema not created yet
        return (0, 0, 0)
    return found["jobs"], found["returns"], found["events"]


def test_worker_processes_share_the_queue_and_stop_on_sigterm(tmp_path, broker_url, queue_name):
    database_url = f"sqlite:///{tmp_path / 'relay.db'}"
    proc = start_worker(tmp_path, broker_url, queue_name, database_url, "--concurrency", "2", "--prefetch", "1")
    store = Store(database_url)
    try:
        # Both consumers wait on the queue before anything arrives, so neither drains it alone.
        assert wait_for(lambda: (tmp_path / "worker.log").read_text().count("consuming") == 2, timeout=60)
        publish_batches(relay_config(broker_url, queue_name), job_events(400), per_message=20)
        assert wait_for(lambda: counts(store) == (400, 400, 800), timeout=90), (tmp_path / "worker.log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    log = (tmp_path / "worker.log").read_text()
    stored = [int(n) for n in re.findall(r"stopped: \{.*?'messages_stored': (\d+)", log)]
    assert len(stored) == 2, log
    assert sum(stored) == 40 and min(stored) > 0, stored  # 800 events in messages of 20
    assert queue_depth(broker_url, queue_name) == 0


@pytest.mark.parametrize("database_url", [pytest.param("mysql", marks=pytest.mark.mysql)], indirect=True)
def test_worker_killed_mid_batch_loses_and_doubles_nothing(tmp_path, broker_url, queue_name, database_url):
    store = Store(database_url)
    store.write_batch()  # schema first, so the two workers do not race to create it
    publish_batches(relay_config(broker_url, queue_name), job_events(3000, payload={"pad": "x" * 2000}), per_message=100)
    first = start_worker(tmp_path, broker_url, queue_name, database_url, "--prefetch", "4")
    try:
        assert wait_for(lambda: counts(store)[1] >= 300, timeout=90, interval=0.05), (tmp_path / "worker.log").read_text()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    at_kill = counts(store)
    assert at_kill[1] < 3000, "the worker finished before it could be killed: make the load bigger"
    second = start_worker(tmp_path, broker_url, queue_name, database_url)
    # Kombu's Redis transport takes a message with BRPOP and records it as
    # unacked in a second command: a worker killed between the two loses that
    # one message (50 jobs here), a window RabbitMQ does not have. Allow
    # exactly that on Redis (documented in the README); nothing else.
    complete = (3000, 3000, 6000)
    allowed = {complete} if not broker.is_redis(broker_url) else {complete, (2950, 2950, 5900)}
    try:
        wait_for(lambda: counts(store) == complete, timeout=120 if not broker.is_redis(broker_url) else 40)
        assert counts(store) in allowed, (counts(store), (tmp_path / "worker.log").read_text()[-3000:])
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0
    assert queue_depth(broker_url, queue_name) == 0
    assert queue_depth(broker_url, f"{queue_name}.dlq") == 0
