"""The worker on Kombu's in-memory transport and a real SQLite store.

``memory://`` is Kombu's own broker for tests: real queues, acks and
redelivery inside this process, so the worker's loop (Kombu's
ConsumerProducerMixin), its batching, storing and dead-lettering run as in
production. The broker's own behaviour (RabbitMQ, Redis) is covered by
tests/functional and tests/faults on the real servers.
"""

import dataclasses
import threading
import uuid

import kombu
import pytest

from salt_engine_lib import broker, config, message
from salt_engine_lib.errors import StoreError
from salt_engine_lib.store import Store, queries
from salt_engine_lib.worker import REASON_HEADER, Worker
from tests.waiting import wait_for

JID = "20261125120000000001"


def memory_config(**extra):
    name = f"relay-unit-{uuid.uuid4().hex[:8]}"
    settings = {"queue": name, "dead_letter_queue": f"{name}.dlq", "batch_max_wait": 0.05, **extra}
    # memory:// is not a scheme users may configure; the test sets it past validation.
    return dataclasses.replace(config.load(settings), broker_url="memory://")


def publish(cfg, *bodies):
    """Publish as the engine does: the AMQP message id is the batch's own id (``m-<n>`` for a body that has none)."""
    publisher = broker.Publisher(cfg)
    try:
        for index, body in enumerate(bodies):
            try:
                message_id = message.peek(body)[0]
            except Exception:  # not a batch at all
                message_id = f"m-{index}"
            publisher.publish(body, message_id)
    finally:
        publisher.close()


def take_all(cfg, name):
    """[(headers, body)] of every message in ``name``, acked."""
    taken = []
    with kombu.Connection("memory://") as conn:
        queue = conn.SimpleQueue(name)
        while True:
            try:
                msg = queue.get(timeout=0.2)
            except queue.Empty:
                break
            taken.append((msg.headers, msg.body))
            msg.ack()
        queue.close()
    return taken


def returns_of(count, start=0):
    return [
        (f"salt/job/{JID}/ret/m{index}", {"fun": "test.ping", "id": f"m{index}", "jid": JID, "return": True, "retcode": 0})
        for index in range(start, start + count)
    ]


class Running:
    """The worker's run() in a thread, stopped (and joined) on exit."""

    def __init__(self, worker):
        self.worker = worker
        self.thread = threading.Thread(target=worker.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.worker

    def __exit__(self, *exc):
        self.worker.stopping.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@pytest.fixture
def store(tmp_path):
    return Store(f"sqlite:///{tmp_path / 'relay.db'}")


def test_messages_are_stored_in_one_batch_and_acked(store):
    cfg = memory_config(worker_prefetch=4)
    publish(cfg, *(message.encode(returns_of(2, start), "master-1")[1] for start in (0, 2, 4)))
    with Running(Worker(cfg, store)) as worker:
        assert wait_for(lambda: worker.counts["messages_stored"] == 3, timeout=10)
    assert store.read(queries.get_jid, JID).keys() == {f"m{i}" for i in range(6)}
    assert worker.counts["events_stored"] == 6 and worker.counts["dead_lettered"] == {}
    assert take_all(cfg, cfg.queue) == []  # acked: nothing comes back
    assert worker.stats()["lag_seconds_p50"] is not None


def test_a_body_that_is_not_a_batch_is_dead_lettered_whole_with_the_reason(store):
    cfg = memory_config()
    publish(cfg, b"\x93not a batch", message.encode(returns_of(1), "master-1")[1])
    with Running(Worker(cfg, store)) as worker:
        assert wait_for(lambda: worker.counts["messages_stored"] == 1 and worker.counts["dead_lettered"], timeout=10)
    [(headers, body)] = take_all(cfg, cfg.dead_letter_queue)
    assert body == b"\x93not a batch" and "not a msgpack document" in headers[REASON_HEADER]
    assert headers["x-relay-original-message-id"] == "m-0"


def test_an_event_that_makes_no_row_is_dead_lettered_alone_and_the_rest_is_stored(store):
    cfg = memory_config()
    nobody = (f"salt/job/{JID}/ret/nobody", {"fun": "test.ping", "jid": JID, "return": True})
    message_id, body = message.encode([*returns_of(2), nobody], "master-1")
    publish(cfg, body)
    with Running(Worker(cfg, store)) as worker:
        assert wait_for(lambda: worker.counts["messages_stored"] == 1, timeout=10)
    assert store.read(queries.get_jid, JID).keys() == {"m0", "m1"}
    [(headers, dead)] = take_all(cfg, cfg.dead_letter_queue)
    assert headers[REASON_HEADER].startswith(f"event {nobody[0]!r} rejected: missing id")
    assert message.decode(dead).events == [nobody] and headers["x-relay-original-message-id"] == message_id


class RefusingStore(Store):
    """Refuses any batch holding minion ``m-bad`` while answering queries, as a database refuses
    data it cannot hold (a NUL on PostgreSQL; produced for real in tests/faults/test_bad_input.py)."""

    def write_rows(self, rows):
        if any(row["minion_id"] == "m-bad" for row in rows.returns):
            raise StoreError("refused: m-bad")
        return super().write_rows(rows)


def test_a_refused_event_is_isolated_after_the_attempts_and_dead_lettered(tmp_path):
    store = RefusingStore(f"sqlite:///{tmp_path / 'relay.db'}")
    cfg = memory_config(worker_max_attempts=2, worker_prefetch=1)  # one message per batch
    bad = (f"salt/job/{JID}/ret/m-bad", {"fun": "test.ping", "id": "m-bad", "jid": JID, "return": True})
    publish(cfg, message.encode([*returns_of(3), bad], "master-1")[1], message.encode([bad], "master-1")[1])
    with Running(Worker(cfg, store)) as worker:
        assert wait_for(lambda: worker.counts["messages_stored"] == 1 and sum(worker.counts["dead_lettered"].values()) == 2, timeout=20)
    assert store.read(queries.get_jid, JID).keys() == {"m0", "m1", "m2"}
    reasons = sorted(headers[REASON_HEADER] for headers, _ in take_all(cfg, cfg.dead_letter_queue))
    assert len(reasons) == 2
    assert any(r.startswith(f"event {bad[0]!r} rejected: the database refused it: refused: m-bad") for r in reasons), reasons
    assert any(r.startswith("the database refused the batch 2 times: refused: m-bad") for r in reasons), reasons
    assert worker.counts["store_retries"] >= 1


def test_stopping_stores_what_is_pending_first(store):
    cfg = memory_config(worker_prefetch=100, batch_max_wait=60)  # never due on its own
    publish(cfg, message.encode(returns_of(3), "master-1")[1])
    worker = Worker(cfg, store)
    with Running(worker):
        assert wait_for(lambda: len(worker.batcher) == 1, timeout=10)
    assert worker.counts["messages_stored"] == 1
    assert store.read(queries.get_jid, JID).keys() == {"m0", "m1", "m2"}
