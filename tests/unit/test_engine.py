"""The engine loop and its journal with a fake bus reader and a real SQLite store."""


import pytest

from salt_engine_lib import config, engine, forwarder, message
from salt_engine_lib.store import Store, queries
from tests.fake_bus import FakeReader

JID = "20261125120000000001"


class FlakySink(forwarder.StoreSink):
    """Fails the first sends, as a database that is down would (cannot be produced
    deterministically inside a unit test; the integration suite cuts real servers)."""

    def __init__(self, store, failures):
        super().__init__(store)
        self.failures = failures

    def send(self, bodies):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database down")
        super().send(bodies)


@pytest.fixture
def store(tmp_path):
    return Store(f"sqlite:///{tmp_path / 'relay.db'}")


def make_engine(tmp_path, store, events=(), sink=None, **relay):
    return engine.RelayEngine(
        {"cachedir": str(tmp_path), "id": "master-1"},
        config.load(relay),
        reader=FakeReader(events),
        sink=sink or forwarder.StoreSink(store),
    )


def run_until_empty(relay):
    while not relay.reader.events.empty():
        relay.step()
    relay.flush()
    while relay.forwarder.forward_once():
        pass


def job_events(count, start=0):
    for index in range(start, start + count):
        jid = f"2026112512{index:010d}"
        yield (f"salt/job/{jid}/new", {"fun": "test.ping", "tgt": "*", "minions": ["m1"], "arg": [], "jid": jid})


def test_engine_stores_kept_events_in_batches_and_counts_drops(tmp_path, store):
    bus = [
        (f"salt/job/{JID}/new", {"fun": "test.ping", "tgt": "*", "minions": ["m1"], "arg": []}),
        (f"salt/job/{JID}/ret/m1", {"fun": "test.ping", "id": "m1", "jid": JID, "return": True, "retcode": 0, "success": True}),
        ("salt/auth", {"id": "m1"}),
        (f"salt/job/{JID}/ret/m1", {"fun": "test.ping", "id": "m1", "jid": JID, "return": True}),
    ]
    relay = make_engine(tmp_path, store, bus, batch_size=2)
    run_until_empty(relay)
    assert store.read(queries.get_load, JID)["Minions"] == ["m1"]
    assert store.read(queries.get_jid, JID) == {"m1": {"return": True, "retcode": 0, "success": True}}
    assert store.read(queries.counts) == {"jobs": 1, "returns": 1, "events": 2}
    stats = relay.stats()
    assert stats["dropped"] == {"excluded_tag": 1, "duplicate": 1}
    assert stats["journaled"] == stats["forwarded"] == 2
    assert stats["spool_pending_bytes"] == 0
    relay.write_stats()
    assert engine.stats_path({"cachedir": str(tmp_path)}).exists()


def test_failed_forward_keeps_batches_in_the_journal_and_replays_them_in_order(tmp_path, store):
    relay = make_engine(tmp_path, store, list(job_events(30)), sink=FlakySink(store, failures=3), batch_size=10)
    while not relay.reader.events.empty():
        relay.step()
    for _ in range(3):
        with pytest.raises(ConnectionError):
            relay.forwarder.forward_once()
    assert relay.forwarder.pending_bytes(fresh=True) > 0
    assert store.read(queries.counts)["jobs"] == 0
    run_until_empty(relay)
    assert store.read(queries.counts)["jobs"] == 30


def test_journal_survives_an_engine_that_died_before_forwarding(tmp_path, store):
    first = make_engine(tmp_path, store, list(job_events(25)), batch_size=10)
    while not first.reader.events.empty():
        first.step()
    first.flush()  # journaled, never forwarded: the engine is "killed" here
    assert store.read(queries.counts)["jobs"] == 0
    second = make_engine(tmp_path, store)
    run_until_empty(second)
    assert store.read(queries.counts)["jobs"] == 25
    assert second.forwarder.pending_bytes(fresh=True) == 0


def test_stop_flushes_the_open_batch_and_leaves_an_empty_journal(tmp_path, store):
    relay = make_engine(tmp_path, store, list(job_events(5)), batch_size=100, batch_max_wait=60)
    relay.forwarder.start()
    while not relay.reader.events.empty():
        relay.step()
    relay.stop()
    assert store.read(queries.counts)["jobs"] == 5
    assert not list((tmp_path / "relay" / "spool").iterdir())


def test_full_journal_loses_loudly_and_counts(tmp_path, store, caplog):
    relay = make_engine(tmp_path, store, list(job_events(50)), sink=FlakySink(store, failures=100), batch_size=10, spool_max_bytes=2000)
    while not relay.reader.events.empty():
        relay.step()
    relay.flush()
    stats = relay.stats()
    assert stats["spool_lost_events"] > 0
    assert stats["journaled"] + stats["spool_lost_events"] == 50
    assert "spool is full" in caplog.text and "LOST" in caplog.text


def test_batch_over_the_message_limit_is_split(tmp_path, store):
    big = [(f"salt/job/2026112512{i:010d}/new", {"fun": "test.ping", "minions": ["m1"], "pad": "x" * 3000}) for i in range(8)]
    relay = make_engine(tmp_path, store, big, batch_size=8, max_message_bytes=7000)
    run_until_empty(relay)
    bodies, _ = relay.forwarder.reader.read(100)
    assert store.read(queries.counts)["jobs"] == 8
    assert relay.forwarder.journaled == 8
    assert not bodies


def test_journal_records_are_broker_messages(tmp_path, store):
    relay = make_engine(tmp_path, store, list(job_events(3)), batch_size=3)
    while not relay.reader.events.empty():
        relay.step()
    bodies, _ = relay.forwarder.reader.read(10)
    batch = message.decode(bodies[0])
    assert batch.master_id == "master-1" and len(batch.events) == 3


def test_bad_config_names_the_key():
    with pytest.raises(Exception, match="relay:batch_size must be a positive integer"):
        engine.load_config({"id": "m"}, {"batch_size": "abc"})
