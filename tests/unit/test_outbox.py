"""The returner's outbox and the engine's drainer (real journal files, real SQLite)."""

import json
import os
import time

import pytest

from salt_engine_lib import codec, forwarder, message, outbox, paths, records
from salt_engine_lib.deadletters import DeadLetterFile
from salt_engine_lib.errors import RecordError, StoreError
from salt_engine_lib.journal import JournalReader
from salt_engine_lib.outbox_drainer import OutboxDrainer, journal_events_of
from salt_engine_lib.store import Store, queries

JID = "20261125120000000001"
RET = {"fun": "test.ping", "id": "m1", "jid": JID, "return": True, "retcode": 0}


@pytest.fixture
def opts(tmp_path):
    return {"__role": "master", "id": "master-1", "cachedir": str(tmp_path / "cache")}


@pytest.fixture
def store(tmp_path):
    return Store(f"sqlite:///{tmp_path / 'relay.db'}")


def drainer_for(opts, store, max_bytes=1 << 20):
    sink = forwarder.StoreSink(store, DeadLetterFile(paths.dead_letters(opts)))
    fwd = forwarder.Forwarder(paths.journal(opts), sink, max_bytes=max_bytes)
    return OutboxDrainer(opts, fwd, sink)


def outbox_records(opts):
    return [codec.unpack(frame) for frame in JournalReader(paths.outbox(opts)).read(100)[0]]


def dead_letters(opts):
    return [json.loads(line) for path in paths.dead_letters(opts).glob("*.jsonl") for line in path.read_text().splitlines()]


def test_puts_append_records_a_journal_reader_reads_back(opts):
    box = outbox.Outbox(opts)
    box.put_return(RET, "master-1")
    box.put_events(({"tag": "custom/a", "data": {"x": 1}},), "master-1")
    box.put_load(JID, {"fun": "test.ping", "return": True}, "master-1")
    assert outbox_records(opts) == [
        {"k": "ret", "ret": RET, "m": "master-1"},
        {"k": "events", "events": [{"tag": "custom/a", "data": {"x": 1}}], "m": "master-1"},
        {"k": "load", "jid": JID, "load": {"fun": "test.ping", "return": True}, "minions": None, "m": "master-1"},
    ]
    assert box.knows_job(JID) and not box.knows_job("20261125120000000002")
    assert outbox.for_opts(opts) is outbox.for_opts(opts) and outbox.for_opts(dict(opts)) is not outbox.for_opts(opts)


def test_engine_alive_follows_the_heartbeat_file(opts):
    assert not outbox.Outbox(opts).engine_alive()  # no engine ever wrote it
    heartbeat = paths.engine_stats(opts)
    heartbeat.parent.mkdir(parents=True)
    heartbeat.write_text("{}")
    assert outbox.Outbox(opts).engine_alive()
    stale = time.time() - paths.HEARTBEAT_STALE_SECONDS - 1
    os.utime(heartbeat, (stale, stale))
    assert not outbox.Outbox(opts).engine_alive()


def test_keep_load_is_readable_with_its_minions_and_queued(opts):
    outbox.Outbox(opts).keep_load(JID, {"fun": "test.ping", "tgt": "*"}, ["m2", "m1"], "master-1")
    assert paths.pending_load(opts, JID).is_file()
    assert outbox.pending_load(opts, JID) == {"fun": "test.ping", "tgt": "*", "Minions": ["m1", "m2"]}
    assert outbox_records(opts)[0]["publish"] is True
    assert outbox.pending_load(opts, "20261125120000000002") is None


@pytest.mark.parametrize(
    "item, events",
    [
        ({"k": "ret", "ret": RET}, [(records.JOB_CACHE_RETURN_TAG, RET)]),
        (
            {"k": "load", "jid": JID, "load": {"fun": "f"}, "minions": ["m1"]},
            [(records.JOB_CACHE_LOAD_TAG, {"jid": JID, "load": {"fun": "f"}, "minions": ["m1"]})],
        ),
        ({"k": "events", "events": [{"tag": "a", "data": 1}, {"tag": "b"}]}, [("a", 1), ("b", None)]),
    ],
    ids=["ret", "load", "events"],
)
def test_journal_events_of_each_record_kind(item, events):
    assert journal_events_of(item) == events


@pytest.mark.parametrize(
    "item, reason",
    [
        ({"k": "ret", "ret": {"jid": JID}}, "missing id"),
        ({"k": "ret", "ret": ["not", "a", "mapping"]}, "a return must be a mapping"),
        ({"k": "load", "jid": None, "load": {}}, "missing jid"),
        ({"k": "events", "events": [{"data": 1}]}, "needs a tag"),
        ({"k": "events", "events": [{"tag": records.JOB_CACHE_RETURN_TAG, "data": {}}]}, "reserved"),
        ({"k": "bogus"}, "unknown record kind 'bogus'"),
        ([1, 2], "unknown record kind None"),
    ],
)
def test_journal_events_of_refuses_a_record_that_makes_no_sense(item, reason):
    with pytest.raises(RecordError, match=reason):
        journal_events_of(item)


def test_drain_once_moves_records_into_the_journal_per_master(opts, store):
    box = outbox.Outbox(opts)
    box.put_return(RET, "master-1")
    box.put_events([{"tag": "custom/a", "data": {"x": 1}}], "master-2")
    box.writer.close()  # sealed: once drained, the segment is deleted
    drainer = drainer_for(opts, store)
    assert drainer.drain_once() == 2 and drainer.moved == 2
    batches = [message.decode(body) for body in drainer.forwarder.reader.read(100)[0]]
    assert {(b.master_id, tuple(tag for tag, _ in b.events)) for b in batches} == {
        ("master-1", (records.JOB_CACHE_RETURN_TAG,)),
        ("master-2", ("custom/a",)),
    }
    assert store.read(queries.get_jid, JID) == {}  # the journal carries them to the store, not the drainer
    assert list(paths.outbox(opts).iterdir()) == [] and drainer.drain_once() == 0


def test_records_that_make_no_sense_are_dead_lettered_with_the_reason(opts, store):
    box = outbox.Outbox(opts)
    box.writer.append(codec.pack({"k": "bogus"}))
    box.writer.append(b"\xc1")  # 0xc1: never valid msgpack
    box.put_events([{"tag": records.JOB_CACHE_LOAD_TAG, "data": {}}], "master-1")
    box.put_return(RET, "master-1")
    drainer = drainer_for(opts, store)
    assert drainer.drain_once() == 4 and drainer.moved == 1
    assert [message.decode(b).events[0][0] for b in drainer.forwarder.reader.read(10)[0]] == [records.JOB_CACHE_RETURN_TAG]
    letters = dead_letters(opts)
    assert letters[0]["reason"] == "unknown record kind 'bogus'"
    assert letters[1]["item"] == {"undecodable_record": {"__bytes_base64__": "wQ=="}} and letters[1]["reason"].startswith(
        "not a msgpack record: FormatError"
    )
    assert "reserved for salt-relay" in letters[2]["reason"] and len(letters) == 3


def test_kept_publish_loads_are_stored_directly_and_their_pending_file_deleted(opts, store):
    box = outbox.Outbox(opts)
    box.keep_load(JID, {"fun": "test.ping", "tgt": "*"}, ["m1"], "master-1")
    box.keep_load("j" * 70, {"fun": "test.ping"}, ["m1"], "master-1")  # a jid the store refuses
    drainer = drainer_for(opts, store)
    assert drainer.drain_once() == 2
    assert store.read(queries.get_load, JID) == {"fun": "test.ping", "tgt": "*", "Minions": ["m1"]}
    assert not paths.pending_load(opts, JID).exists()
    assert drainer.forwarder.reader.read(10)[0] == []  # straight to the store, not through the journal
    assert paths.pending_load(opts, "j" * 70).exists()  # refused: get_load keeps serving it
    assert "jid longer than 64" in dead_letters(opts)[0]["reason"] and drainer.moved == 1


def test_a_full_journal_sends_the_records_straight_to_the_store(opts, store):
    box = outbox.Outbox(opts)
    box.put_return(RET, "master-1")
    box.put_events([{"tag": "custom/a", "data": {"x": 1}}], "master-1")
    box.writer.close()
    drainer = drainer_for(opts, store, max_bytes=10)
    assert drainer.drain_once() == 2
    assert drainer.written_directly == 2
    assert store.read(queries.get_jid, JID) == {"m1": {"return": True, "retcode": 0}}
    assert store.read(queries.counts)["events"] == 1
    assert drainer.forwarder.journaled == 0 and drainer.forwarder.dropped_events == 0
    assert list(paths.outbox(opts).iterdir()) == []


def test_a_full_journal_and_a_database_down_keep_the_records_in_the_outbox(opts, tmp_path, store):
    box = outbox.Outbox(opts)
    box.put_return(RET, "master-1")
    box.writer.close()  # sealed: a commit would delete it
    (tmp_path / "db-is-a-directory").mkdir()  # a database SQLite cannot open: a real failure
    with pytest.raises(StoreError):
        drainer_for(opts, Store(f"sqlite:///{tmp_path / 'db-is-a-directory'}"), max_bytes=10).drain_once()
    assert outbox_records(opts) == [{"k": "ret", "ret": RET, "m": "master-1"}]
    assert drainer_for(opts, store, max_bytes=10).drain_once() == 1
    assert store.read(queries.get_jid, JID) == {"m1": {"return": True, "retcode": 0}}
