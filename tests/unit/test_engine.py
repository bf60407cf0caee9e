"""The engine loop and its journal with a fake bus reader and a real SQLite store."""

import json

import pytest
import sqlalchemy as sa

from salt_engine_lib import config, engine, forwarder, message, paths, records
from salt_engine_lib import returner as relay_returner
from salt_engine_lib.errors import CaptureStopped
from salt_engine_lib.store import Store, queries
from salt_engine_lib.store.schema import events
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
    assert stats["journal_pending_bytes"] == 0
    relay.write_stats()
    assert paths.engine_stats({"cachedir": str(tmp_path)}).exists()


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
    assert not list(paths.journal({"cachedir": str(tmp_path)}).iterdir())


def test_full_journal_loses_loudly_and_counts(tmp_path, store, caplog):
    relay = make_engine(tmp_path, store, list(job_events(50)), sink=FlakySink(store, failures=100), batch_size=10, journal_max_bytes=2000)
    while not relay.reader.events.empty():
        relay.step()
    relay.flush()
    stats = relay.stats()
    assert stats["journal_lost_events"] > 0
    assert stats["journaled"] + stats["journal_lost_events"] == 50
    assert "journal is full" in caplog.text and "LOST" in caplog.text


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


# --- relay as the master's job cache: the returner's records travel through the journal ---


def job_cache_engine(tmp_path, store, bus, **relay):
    opts = {"cachedir": str(tmp_path), "id": "master-1", "__role": "master", "master_job_cache": "relay", "job_cache": True}
    relay = dict(relay, database_url=store.database_url)  # the engine's own store is the test's
    relay_engine = engine.RelayEngine(opts, config.load(relay), reader=FakeReader(bus), sink=forwarder.StoreSink(store))
    relay_engine.write_stats()  # what the returner checks to know the engine is alive
    return relay_engine, opts


def test_returns_come_from_the_job_cache_once_and_a_forged_bus_copy_is_only_an_event(tmp_path, store):
    real = {
        "fun": "state.apply",
        "id": "m1",
        "jid": JID,
        "return": {"full": "x" * 100},
        "retcode": 0,
        "success": True,
        "_stamp": "2026-11-25T12:00:00.000001",
    }
    trimmed = dict(real, **{"return": "VALUE_TRIMMED"})  # Salt trims big values on the bus
    forged = {"fun": "cmd.run", "id": "m2", "jid": JID, "return": "pwned", "retcode": 0, "_stamp": "2026-11-25T12:00:00.000002"}
    bus = [
        (f"salt/job/{JID}/ret/m1", trimmed),
        (f"salt/job/{JID}/ret/m2", forged),
        (f"{records.JOB_CACHE_RETURN_TAG}", dict(forged, id="m3")),
    ]  # a forged job-cache record on the bus
    relay, opts = job_cache_engine(tmp_path, store, bus)
    relay_returner.save_load(store, relay.settings, JID, {"jid": JID, "fun": "state.apply", "tgt": "*"}, ["m1", "m2"], opts)
    relay_returner.save_load(store, relay.settings, JID, dict(real), None, opts)  # Salt repeats it per return...
    relay_returner.save_load(store, relay.settings, JID, dict(real, id="m9"), None, opts)  # ...once per job is kept
    relay_returner.returner(store, relay.settings, real, opts)  # write-behind: one outbox append
    assert store.read(queries.get_jid, JID) == {}
    assert relay.drainer.drain_once() == 1  # the return only: save_load was remembered
    run_until_empty(relay)
    assert store.read(queries.get_jid, JID) == {"m1": {"return": {"full": "x" * 100}, "retcode": 0, "success": True}}
    counts = store.read(queries.counts)
    assert counts == {"jobs": 1, "returns": 1, "events": 2}  # the two bus copies are events, not results
    with store.connect() as conn:
        data = dict(conn.execute(sa.select(events.c.tag, events.c.data)).all())
    # The value is stored once, in returns.ret; the event keeps the rest.
    assert data[f"salt/job/{JID}/ret/m1"] == {k: v for k, v in trimmed.items() if k != "return"}
    stats = relay.stats()
    assert stats["dropped"] == {"reserved_tag": 1} and stats["outbox_moved"] == 1
    bodies_left, _ = relay.forwarder.reader.read(10)
    assert not bodies_left


def test_without_relay_as_job_cache_the_bus_copy_makes_the_returns_row(tmp_path, store):
    ret = {"fun": "test.ping", "id": "m1", "jid": JID, "return": True, "retcode": 0}
    relay = make_engine(tmp_path, store, [(f"salt/job/{JID}/ret/m1", ret)])
    run_until_empty(relay)
    assert store.read(queries.get_jid, JID) == {"m1": {"return": True, "retcode": 0}}


def test_a_full_journal_sends_the_outbox_straight_to_the_database(tmp_path, store):
    relay, opts = job_cache_engine(tmp_path, store, [], journal_max_bytes=10)
    relay_returner.returner(store, relay.settings, {"fun": "test.ping", "id": "m1", "jid": JID, "return": True}, opts)
    relay_returner.event_return(
        store, relay.settings, [{"tag": "custom/1", "data": {"a": 1}}, {"tag": records.JOB_CACHE_RETURN_TAG, "data": {}}], opts
    )
    relay.drainer.drain_once()
    assert store.read(queries.get_jid, JID) == {"m1": {"return": True}}
    assert store.read(queries.counts)["events"] == 0  # the whole event_return record was refused: it holds a reserved tag
    assert relay.stats()["outbox_written_directly"] == 1 and relay.stats()["dead_lettered"] == 1
    assert relay.stats()["journal_lost_events"] == 0  # nothing was lost: the outbox held it


def test_a_dead_reader_takes_the_engine_down_after_flushing(tmp_path, store, caplog):
    relay = make_engine(tmp_path, store, list(job_events(7)), batch_size=100, batch_max_wait=60)
    relay.forwarder.start()
    relay.drainer.start()
    while not relay.reader.events.empty():
        relay.step()
    relay.exit_if_a_thread_died()  # all alive: nothing happens
    # What the 3006 reader did with an asyncio loop (issue #15), here by hand.
    relay.reader.die(AttributeError("'_UnixSelectorEventLoop' object has no attribute 'make_current'"))
    with pytest.raises(CaptureStopped, match="bus reader stopped: AttributeError"):
        relay.exit_if_a_thread_died()
    assert store.read(queries.counts)["jobs"] == 7  # what it held was flushed first
    critical = [r for r in caplog.records if r.levelname == "CRITICAL"]
    assert critical and "its bus reader stopped" in critical[0].getMessage() and critical[0].exc_info
    stats = json.loads(paths.engine_stats({"cachedir": str(tmp_path)}).read_text())
    assert stats["reader_alive"] is False
    assert stats["reader_failure"].startswith("AttributeError: '_UnixSelectorEventLoop'")
