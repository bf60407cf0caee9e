"""The engine's journal and its sinks (real journal files, real SQLite; a fake publisher only for the broker)."""

import json
import logging

import pytest

from salt_engine_lib import codec, forwarder, message
from salt_engine_lib.deadletters import DeadLetterFile, count_dead_letters
from salt_engine_lib.errors import JournalFull, StoreError
from salt_engine_lib.journal import JournalReader, JournalWriter
from salt_engine_lib.store import Store, queries

JID = "20261125120000000001"


class FakePublisher:
    """Stands in for broker.Publisher: a broker refusing one publish cannot be produced in a unit test
    (tests/faults cut the real servers). ``fail_at``: the publish call (0-based) that raises."""

    def __init__(self, fail_at=None):
        self.published = []
        self.calls = 0
        self.fail_at = fail_at
        self.closed = False

    def publish(self, body, message_id):
        self.calls += 1
        if self.calls - 1 == self.fail_at:
            raise ConnectionError("broker connection lost")
        self.published.append((body, message_id))

    def close(self):
        self.closed = True


def tags_of(bodies):
    return [tag for body in bodies for tag, _ in message.decode(body).events]


def drain(fwd):
    while fwd.forward_once():
        pass


def test_submit_journals_on_disk_and_the_broker_sink_gets_every_batch_in_order(tmp_path):
    publisher = FakePublisher()
    fwd = forwarder.Forwarder(tmp_path / "journal", forwarder.BrokerSink(publisher), max_bytes=1 << 20, returns_from_job_cache=True)
    for n in range(5):
        fwd.submit([(f"custom/{n}/a", {"n": n}), (f"custom/{n}/b", {"n": n})], "master-1")
    on_disk, _ = JournalReader(tmp_path / "journal").read(100)  # a second reader: the records are in the files
    assert len(on_disk) == 5 and fwd.journaled == 10
    first = message.decode(on_disk[0])
    assert (
        first.master_id == "master-1"
        and first.returns_from_job_cache
        and first.events == [("custom/0/a", {"n": 0}), ("custom/0/b", {"n": 0})]
    )
    assert fwd.unforwarded()["batches"] == 5 and fwd.unforwarded()["oldest_created"] == pytest.approx(first.created)
    assert fwd.forward_once() == 1  # BrokerSink: one message per batch
    drain(fwd)
    assert tags_of(body for body, _ in publisher.published) == [f"custom/{n}/{x}" for n in range(5) for x in "ab"]
    assert [message_id for _, message_id in publisher.published] == [message.decode(body).id for body in on_disk]
    assert fwd.sink.sent_events == 10
    assert fwd.pending_bytes(fresh=True) == 0


def test_a_failed_publish_keeps_that_batch_and_never_resends_the_ones_before(tmp_path):
    publisher = FakePublisher(fail_at=1)
    fwd = forwarder.Forwarder(tmp_path, forwarder.BrokerSink(publisher), max_bytes=1 << 20)
    for n in range(3):
        fwd.submit([(f"custom/{n}", {})], "master-1")
    assert fwd.forward_once() == 1
    with pytest.raises(ConnectionError):
        fwd.forward_once()
    drain(fwd)
    assert tags_of(body for body, _ in publisher.published) == ["custom/0", "custom/1", "custom/2"]


def test_the_bound_raises_journal_full_and_only_loses_events_the_caller_does_not_keep(tmp_path, caplog):
    fwd = forwarder.Forwarder(tmp_path, forwarder.BrokerSink(FakePublisher()), max_bytes=300)
    fwd.submit([("custom/first", {"pad": "x" * 100})], "master-1")
    with pytest.raises(JournalFull):
        fwd.submit([("custom/kept", {"pad": "x" * 200})], "master-1", keep_on_full=True)
    assert fwd.dropped_events == 0 and "LOST" not in caplog.text
    with caplog.at_level(logging.CRITICAL), pytest.raises(JournalFull):
        fwd.submit([("custom/lost", {"pad": "x" * 200}), ("custom/lost2", {})], "master-1")
    assert fwd.dropped_events == 2 and "journal is full" in caplog.text and "2 events LOST" in caplog.text
    assert tags_of(fwd.reader.read(100)[0]) == ["custom/first"]


def test_a_batch_over_max_message_bytes_is_split_in_order(tmp_path):
    fwd = forwarder.Forwarder(tmp_path, forwarder.BrokerSink(FakePublisher()), max_bytes=1 << 20, max_message_bytes=2500)
    events = [(f"custom/{n}", {"pad": "x" * 1000}) for n in range(8)]
    fwd.submit(events, "master-1")
    bodies, _ = fwd.reader.read(100)
    assert len(bodies) > 1 and all(len(body) <= 2500 for body in bodies)
    assert tags_of(bodies) == [tag for tag, _ in events]
    fwd.submit([("custom/alone", {"pad": "x" * 5000})], "master-1")  # one event over the limit: sent alone (the worker dead-letters it)
    assert tags_of(fwd.reader.read(100)[0])[-1] == "custom/alone"


def test_an_unencodable_event_is_dropped_and_counted_and_the_others_are_kept(tmp_path):
    loop = []
    loop.append(loop)  # real data msgpack refuses: "recursion limit exceeded"
    fwd = forwarder.Forwarder(tmp_path, forwarder.BrokerSink(FakePublisher()), max_bytes=1 << 20)
    fwd.submit([("custom/a", 1), ("custom/loop", loop), ("custom/b", 2)], "master-1")
    assert fwd.unencodable == 1
    assert tags_of(fwd.reader.read(100)[0]) == ["custom/a", "custom/b"]
    assert fwd.journaled == 2


def test_stop_forwards_what_is_left_then_seals_and_empties_the_journal(tmp_path):
    publisher = FakePublisher()
    fwd = forwarder.Forwarder(tmp_path, forwarder.BrokerSink(publisher), max_bytes=1 << 20, idle_seconds=60)
    fwd.start()
    for n in range(4):
        fwd.submit([(f"custom/{n}", {})], "master-1")
    fwd.stop(timeout=10)
    assert tags_of(body for body, _ in publisher.published) == [f"custom/{n}" for n in range(4)]
    assert not fwd.is_alive() and publisher.closed
    assert list(tmp_path.iterdir()) == []


def test_stop_without_a_sink_keeps_the_sealed_journal_for_the_next_engine(tmp_path):
    fwd = forwarder.Forwarder(tmp_path, forwarder.BrokerSink(FakePublisher()), max_bytes=1 << 20)
    fwd.submit([("custom/left", {})], "master-1")
    fwd.stop(timeout=0.1)  # the thread never ran: nothing was forwarded
    assert [path.suffix for path in tmp_path.iterdir()] == [".seg"]
    publisher = FakePublisher()
    drain(forwarder.Forwarder(tmp_path, forwarder.BrokerSink(publisher), max_bytes=1 << 20))
    assert tags_of(body for body, _ in publisher.published) == ["custom/left"]


def test_store_sink_stores_events_and_dead_letters_refused_ones_with_the_reason(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'relay.db'}")
    sink = forwarder.StoreSink(store, DeadLetterFile(tmp_path / "dead-letters"))
    fwd = forwarder.Forwarder(tmp_path / "journal", sink, max_bytes=1 << 20)
    no_id = {"fun": "test.ping", "jid": JID, "return": True}  # a return without the minion id makes no row
    fwd.submit(
        [(f"salt/job/{JID}/new", {"fun": "test.ping", "minions": ["m1"]}), (f"salt/job/{JID}/ret/m1", no_id), ("custom/x", {"a": 1})],
        "master-1",
    )
    assert fwd.forward_once() == 1
    assert store.read(queries.get_load, JID)["Minions"] == ["m1"]
    assert store.read(queries.counts) == {"jobs": 1, "returns": 0, "events": 2}
    assert sink.rejected == 1 and sink.sent_events == 3
    assert count_dead_letters(tmp_path / "dead-letters") == 1
    letter = json.loads(next((tmp_path / "dead-letters").glob("*.jsonl")).read_text())
    assert letter["reason"] == "missing id"
    assert letter["item"] == {"tag": f"salt/job/{JID}/ret/m1", "data": no_id, "master_id": "master-1"}


def test_store_sink_with_the_database_down_keeps_the_batch_journaled(tmp_path):
    (tmp_path / "db-is-a-directory").mkdir()  # a database SQLite cannot open: a real failure
    fwd = forwarder.Forwarder(tmp_path / "journal", forwarder.StoreSink(Store(f"sqlite:///{tmp_path / 'db-is-a-directory'}")), 1 << 20)
    fwd.submit([("custom/x", {"a": 1})], "master-1")
    with pytest.raises(StoreError):
        fwd.forward_once()
    store = Store(f"sqlite:///{tmp_path / 'relay.db'}")
    drain(forwarder.Forwarder(tmp_path / "journal", forwarder.StoreSink(store), 1 << 20))
    assert store.read(queries.counts)["events"] == 1


def test_a_legacy_frame_wrapped_as_msgpack_bin_is_unwrapped(tmp_path):
    _, body = message.encode([("custom/legacy", {"a": 1})], "master-1")
    _, plain = message.encode([("custom/new", {"b": 2})], "master-1")
    assert forwarder._unwrapped(codec.pack(body)) == body and forwarder._unwrapped(plain) is plain
    writer = JournalWriter(tmp_path)
    writer.append(codec.pack(body))  # what earlier salt-relay builds journaled
    writer.append(plain)
    writer.close()
    publisher = FakePublisher()
    drain(forwarder.Forwarder(tmp_path, forwarder.BrokerSink(publisher), max_bytes=1 << 20))
    assert [sent for sent, _ in publisher.published] == [body, plain]
