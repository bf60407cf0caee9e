"""The engine loop with a fake bus reader and a real SQLite store."""

import queue

import pytest

from salt_engine_lib import config, engine
from salt_engine_lib.store import Store, queries

JID = "20261125120000000001"


class FakeReader:
    def __init__(self, events):
        self.events = queue.Queue()
        for event in events:
            self.events.put(event)
        self.overflowed = 0

    def start(self):
        pass

    def stop(self):
        pass


class FlakySink(engine.StoreSink):
    """Fails the first writes, as a database that is down would (cannot be produced
    deterministically inside a unit test; the integration suite stops real servers)."""

    def __init__(self, store, failures):
        super().__init__(store, "master-1")
        self.failures = failures

    def write(self, batch):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database down")
        super().write(batch)


@pytest.fixture
def store(tmp_path):
    return Store(f"sqlite:///{tmp_path / 'relay.db'}")


def run_until_empty(relay):
    while not relay.reader.events.empty():
        relay.step()
    relay.flush()


def test_engine_stores_kept_events_in_batches_and_counts_drops(tmp_path, store):
    bus = [
        (f"salt/job/{JID}/new", {"fun": "test.ping", "tgt": "*", "minions": ["m1"], "arg": []}),
        (f"salt/job/{JID}/ret/m1", {"fun": "test.ping", "id": "m1", "jid": JID, "return": True, "retcode": 0, "success": True}),
        ("salt/auth", {"id": "m1"}),
        (f"salt/job/{JID}/ret/m1", {"fun": "test.ping", "id": "m1", "jid": JID, "return": True}),
    ]
    relay = engine.RelayEngine(
        {"cachedir": str(tmp_path), "id": "master-1"},
        config.load({"batch_size": 2}),
        reader=FakeReader(bus),
        sink=engine.StoreSink(store, "master-1"),
    )
    run_until_empty(relay)
    assert store.read(queries.get_load, JID)["Minions"] == ["m1"]
    assert store.read(queries.get_jid, JID) == {"m1": {"return": True, "retcode": 0, "success": True}}
    assert store.read(queries.counts) == {"jobs": 1, "returns": 1, "events": 2}
    stats = relay.stats()
    assert stats["dropped"] == {"excluded_tag": 1, "duplicate": 1}
    assert stats["stored"] == 2
    relay.write_stats()
    assert engine.stats_path({"cachedir": str(tmp_path)}).exists()


def test_failed_write_keeps_the_batch_and_retries(tmp_path, store, monkeypatch):
    monkeypatch.setattr(engine.threading.Event, "wait", lambda self, timeout=None: False)
    relay = engine.RelayEngine(
        {"cachedir": str(tmp_path), "id": "master-1"},
        config.load({}),
        reader=FakeReader([(f"salt/job/{JID}/new", {"fun": "test.ping", "minions": ["m1"]})]),
        sink=FlakySink(store, failures=3),
    )
    run_until_empty(relay)
    assert store.read(queries.get_load, JID)["fun"] == "test.ping"


def test_bad_config_names_the_key():
    with pytest.raises(Exception, match="relay:batch_size must be a positive integer"):
        engine.load_config({"id": "m"}, {"batch_size": "abc"})
