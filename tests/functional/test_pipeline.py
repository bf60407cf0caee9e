"""Engine -> broker -> worker -> SQL on real RabbitMQ and Redis.

Every test runs once per broker (RabbitMQ, Redis) on its own queue names.
"""

import pytest
import sqlalchemy as sa

from salt_engine_lib import broker, engine, message
from salt_engine_lib.store import Store, queries
from salt_engine_lib.store.schema import events
from salt_engine_lib.worker import REASON_HEADER
from tests.pipeline_helpers import WorkerThread, job_events, proxied, publish_batches, queue_depth, relay_config, take_all
from tests.waiting import wait_for
from tests.fake_bus import FakeReader, feed


@pytest.fixture
def sqlite_store(tmp_path):
    return Store(f"sqlite:///{tmp_path / 'relay.db'}")


def jobs_and_returns(store):
    counts = store.read(queries.counts)
    return counts["jobs"], counts["returns"]


def test_batches_are_stored_once_and_acked(broker_url, queue_name, sqlite_store):
    cfg = relay_config(broker_url, queue_name)
    events = job_events(500)
    publish_batches(cfg, events, per_message=100)
    publish_batches(cfg, events[:100], per_message=100)  # a redelivered batch: must not double rows
    with WorkerThread(cfg, sqlite_store) as worker:
        assert wait_for(lambda: jobs_and_returns(sqlite_store) == (500, 500) and worker.counts["messages_stored"] == 11, timeout=60)
    assert sqlite_store.read(queries.counts)["events"] == 1000
    assert queue_depth(broker_url, queue_name) == 0
    assert queue_depth(broker_url, f"{queue_name}.dlq") == 0
    assert worker.counts["events_stored"] == 1100


def test_poison_messages_are_dead_lettered_with_the_reason(broker_url, queue_name, sqlite_store):
    cfg = relay_config(broker_url, queue_name)
    producer = broker.Publisher(cfg)
    producer.publish(b"\x93not a batch", "garbage-1")
    _, future = message.encode([("t", {})], "m")
    import msgpack

    producer.publish(msgpack.packb({"v": 7, "events": []}), "future-1")
    producer.publish(future[:-5], "truncated-1")
    producer.close()
    publish_batches(cfg, job_events(10), per_message=10)
    with WorkerThread(cfg, sqlite_store) as worker:
        assert wait_for(
            lambda: jobs_and_returns(sqlite_store) == (10, 10) and sum(worker.counts["dead_lettered"].values()) == 3, timeout=60
        )
    letters = take_all(broker_url, f"{queue_name}.dlq")
    reasons = {headers["x-relay-original-message-id"]: headers[REASON_HEADER] for headers, _ in letters}
    assert set(reasons) == {"garbage-1", "future-1", "truncated-1"}
    assert "not a salt-relay batch" in reasons["garbage-1"] or "not a msgpack document" in reasons["garbage-1"]
    assert "schema version 7 is not supported" in reasons["future-1"]
    assert "not a msgpack document" in reasons["truncated-1"]
    assert {body for _, body in letters} >= {b"\x93not a batch"}  # the original bytes, for inspection
    assert queue_depth(broker_url, queue_name) == 0


@pytest.mark.parametrize("database_url", [pytest.param("postgresql", marks=pytest.mark.postgresql)], indirect=True)
def test_an_event_the_database_refuses_is_dead_lettered_alone(broker_url, queue_name, database_url):
    # PostgreSQL cannot store NUL characters in text/JSONB: a real refusal
    # while the database itself is up.
    cfg = relay_config(broker_url, queue_name, worker_max_attempts=2)
    store = Store(database_url)
    events = job_events(5)
    events.append(
        (
            "salt/job/20261125139999999999/ret/m1",
            {"fun": "cmd.run", "id": "m1", "jid": "20261125139999999999", "return": "nul \x00 here", "retcode": 0},
        )
    )
    publish_batches(cfg, events, per_message=100)
    with WorkerThread(cfg, store) as worker:
        assert wait_for(lambda: sum(worker.counts["dead_lettered"].values()) == 1, timeout=60)
        assert wait_for(lambda: jobs_and_returns(store) == (5, 5), timeout=30)
    letters = take_all(broker_url, f"{queue_name}.dlq")
    assert len(letters) == 1
    headers, body = letters[0]
    assert "refused" in headers[REASON_HEADER]
    assert [tag for tag, _ in message.decode(body).events] == ["salt/job/20261125139999999999/ret/m1"]
    assert queue_depth(broker_url, queue_name) == 0


def test_engine_journals_while_the_broker_is_cut_off_and_replays_in_order(broker_url, queue_name, sqlite_store, tmp_path):
    proxy, proxied_url = proxied(broker_url)
    cfg = relay_config(proxied_url, queue_name, batch_size=50)
    relay = engine.RelayEngine({"cachedir": str(tmp_path), "id": "master-1"}, cfg, reader=FakeReader())
    relay.forwarder.start()
    try:
        feed(relay, job_events(100, start=0))
        assert wait_for(lambda: relay.forwarder.pending_bytes(fresh=True) == 0 and relay.forwarder.sink.sent_events == 200, timeout=30)
        proxy.cut()
        feed(relay, job_events(100, start=100))
        assert wait_for(lambda: relay.forwarder.failures > 0, timeout=30)
        assert relay.forwarder.pending_bytes(fresh=True) > 0, "batches must wait in the journal while the broker is away"
        assert relay.stats()["last_error"]
        proxy.restore()
        feed(relay, job_events(100, start=200))
        assert wait_for(lambda: relay.forwarder.pending_bytes(fresh=True) == 0 and relay.forwarder.sink.sent_events == 600, timeout=60)
    finally:
        relay.stop()
        proxy.close()
    worker_cfg = relay_config(broker_url, queue_name)
    with WorkerThread(worker_cfg, sqlite_store):
        assert wait_for(lambda: jobs_and_returns(sqlite_store) == (300, 300), timeout=60)
    assert queue_depth(broker_url, queue_name) == 0
    # In order: the journaled batches reached the queue before the ones accepted after the outage.
    with sqlite_store.connect() as conn:
        tags = [row.tag for row in conn.execute(sa.select(events.c.tag).order_by(events.c.id))]
    published = [tag for tag in tags if tag.endswith("/new")]
    assert published == sorted(published) and len(published) == 300
