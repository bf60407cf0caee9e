"""Issue #7, bad input: hostile data through the real paths, and what becomes of it.

Every case goes through a real path and checks the outcome a person relies on:
stored verbatim (compared with the input exactly, read back with bound SQL),
or refused with a reason (a dead letter with ``x-relay-reason``, a
``ConfigError``/``RecordError``/``CommandExecutionError`` naming the problem);
the rest of the batch is stored; the worker keeps running.

* worker path: ``message.encode`` -> real RabbitMQ/Redis -> :class:`Worker` ->
  SQL, on one long-lived worker per (database, broker) pair (``pipeline``): the
  store-level cases run on SQLite, MariaDB and PostgreSQL, and on both brokers
  with SQLite;
* engine path: the engine loop with a fake bus reader (as tests/unit/test_engine.py),
  embedded (store sink) or in front of a real broker;
* returner path: Salt's loader (as tests/functional/test_returner_loader.py) and
  the functions of ``salt_engine_lib.returner``;
* configuration and unreachable servers.

The bugs these tests found are fixed; each test is written as the code must behave.
"""

import base64
import contextlib
import logging
import uuid

import pytest
import salt.config
import salt.minion
from salt.exceptions import CommandExecutionError

from salt_engine_lib import paths
from salt_engine_lib import config, engine, forwarder, jsonsafe, message
from salt_engine_lib import returner as relay_returner
from salt_engine_lib.errors import ConfigError, RecordError, StoreError
from salt_engine_lib.deadletters import DeadLetterFile
from salt_engine_lib.outbox_drainer import OutboxDrainer
from salt_engine_lib.journal import JournalReader
from salt_engine_lib.store import Store, connection, queries
from salt_engine_lib.worker import REASON_HEADER
from tests.support.brokers import check_broker, delete_queues
from tests.support.databases import server_database
from tests.support.ports import free_port
from tests.faults.bad_input_pipeline import (
    MASTER,
    Pipeline,
    all_stored,
    event_data,
    good_events,
    job_row,
    new_jid,
    new_tag,
    return_row,
)
from tests.pipeline_helpers import WorkerThread, proxied, publish_batches, relay_config
from tests.support.brokers import queue_depth, take_all
from tests.support.waiting import wait_for
from tests.fake_bus import FakeReader, feed

HOSTILE = "'; DROP TABLE returns; --"
# Quotes, backslashes, LIKE wildcards, comment markers, controls, 2- and 4-byte UTF-8.
TEN_KB = ("x'\"\\%_;--\t\n\r ünï 🚀 " * 600)[: 10 * 1024]
assert len(TEN_KB) == 10 * 1024


def verbatim(stored, expected):
    """Equal values that are also equal as JSON (so 1 is not True)."""
    return stored == expected and jsonsafe.canonical_dumps(stored) == jsonsafe.canonical_dumps(expected)


def nested(depth, leaf="bottom"):
    """A value ``depth`` containers deep, dicts and lists alternating."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"level": level, "child": value}
    return value


# --- the long-lived worker pipeline -----------------------------------------------------------

PIPELINES = [
    pytest.param(("sqlite", "rabbitmq"), marks=pytest.mark.rabbitmq, id="sqlite-rabbitmq"),
    pytest.param(("sqlite", "redis"), marks=pytest.mark.redis, id="sqlite-redis"),
    pytest.param(("mysql", "redis"), marks=[pytest.mark.mysql, pytest.mark.redis], id="mysql-redis"),
    pytest.param(("postgresql", "rabbitmq"), marks=[pytest.mark.postgresql, pytest.mark.rabbitmq], id="postgresql-rabbitmq"),
]


@pytest.fixture(scope="module", params=PIPELINES)
def pipeline(request, tmp_path_factory):
    dialect, kind = request.param
    broker_url = check_broker(kind)
    queue_name = f"relay-faults-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        if dialect == "sqlite":
            database_url = f"sqlite:///{tmp_path_factory.mktemp('faults') / 'relay.db'}"
            stack.callback(connection.dispose_all)
        else:
            database_url = stack.enter_context(server_database(dialect))
        stack.callback(delete_queues, broker_url, queue_name, f"{queue_name}.dlq")
        # One try per refused batch keeps the PostgreSQL NUL cases fast.
        cfg = relay_config(broker_url, queue_name, worker_max_attempts=1)
        with Pipeline(f"{dialect}-{kind}", cfg, Store(database_url), broker_url) as running:
            yield running


def test_event_data_that_is_not_a_mapping_is_stored_as_is(pipeline):
    jid = new_jid()
    odd = [
        (new_tag("list"), [1, "two", None, [3], {"four": 4}]),
        (new_tag("str"), "just a string"),
        (new_tag("int"), 42),
        (new_tag("none"), None),
        (f"salt/job/{jid}/ret/m1", ["a", "return", "that", "is", "a", "list"]),
        (f"salt/job/{jid}/new", "a publish that is a string"),
    ]
    before, after = good_events(2), good_events(2)
    message_id = pipeline.process(before + odd + after)
    assert pipeline.dead_letters(message_id, count=0) == []
    for tag, data in odd:
        stored = event_data(pipeline.store, tag)
        assert len(stored) == 1 and verbatim(stored[0], data), (tag, stored)
    # Not a mapping: no job or return row is made up from it.
    assert job_row(pipeline.store, jid) is None and return_row(pipeline.store, jid, "m1") is None
    assert all_stored(pipeline.store, before + after)
    pipeline.assert_still_working()


def test_bytes_payloads_are_stored_losslessly(pipeline):
    raw = b"\xff\xfe\x00\x80 not UTF-8 \xc3"
    wrapped = {"__bytes_base64__": base64.b64encode(raw).decode("ascii")}
    jid = new_jid()
    tag_map, tag_raw = new_tag("bytes"), new_tag("bytes-data")
    ret = {"fun": "cp.get_file_str", "id": "m1", "jid": jid, "return": raw, "retcode": 0, "success": True}
    bad = [
        (tag_map, {"utf8": "café ✓".encode(), "raw": raw, "empty": b"", "nested": [raw, {"k": b"ok"}]}),
        (tag_raw, raw),
        (f"salt/job/{jid}/ret/m1", ret),
    ]
    before, after = good_events(), good_events()
    message_id = pipeline.process(before + bad + after)
    assert pipeline.dead_letters(message_id, count=0) == []
    # UTF-8 bytes become the text they spell; other bytes are kept as base64, never mangled.
    assert event_data(pipeline.store, tag_map) == [{"utf8": "café ✓", "raw": wrapped, "empty": "", "nested": [wrapped, {"k": "ok"}]}]
    assert event_data(pipeline.store, tag_raw) == [wrapped]
    stored = pipeline.store.read(queries.get_jid, jid)["m1"]["return"]
    assert stored == wrapped and base64.b64decode(stored["__bytes_base64__"]) == raw
    assert all_stored(pipeline.store, before + after)
    pipeline.assert_still_working()


def test_depth_500_nesting(pipeline):
    jid = new_jid()
    deep = nested(500)
    tag = new_tag("deep")
    bad = [(f"salt/job/{jid}/ret/m1", {"fun": "test.deep", "id": "m1", "jid": jid, "return": deep, "retcode": 0}), (tag, {"deep": deep})]
    before, after = good_events(), good_events()
    message_id = pipeline.process(before + bad + after)
    if pipeline.dialect == "mysql":
        # MariaDB's JSON columns check json_valid(), which refuses more than 31 levels:
        # each deep event is dead-lettered alone, with the database's reason.
        letters = pipeline.dead_letters(message_id, count=2)
        for reason, _, _body in letters:
            assert "the database refused it" in reason and "CONSTRAINT" in reason, reason
        dead = {message.decode(body).events[0][0]: message.decode(body).events for _, _, body in letters}
        assert dead == {tag: [(tag, data)] for tag, data in bad}  # each alone, verbatim
        assert event_data(pipeline.store, tag) == [] and return_row(pipeline.store, jid, "m1") is None
    else:
        assert pipeline.dead_letters(message_id, count=0) == []
        assert verbatim(pipeline.store.read(queries.get_jid, jid)["m1"]["return"], deep)
        assert verbatim(event_data(pipeline.store, tag), [{"deep": deep}])
    assert all_stored(pipeline.store, before + after)
    pipeline.assert_still_working()


def test_five_megabyte_return_is_stored_whole(pipeline):
    jid = new_jid()
    line = "state output line ✓ with 'quotes' \"and\" \\backslashes\\ 100% done\n"
    big = (line * (5 * 1024 * 1024 // len(line) + 1))[: 5 * 1024 * 1024]
    ret = {"fun": "cmd.run", "id": "m1", "jid": jid, "return": big, "retcode": 0, "success": True}
    before, after = good_events(), good_events()
    message_id = pipeline.process(before + [(f"salt/job/{jid}/ret/m1", ret)] + after)
    assert pipeline.dead_letters(message_id, count=0) == []
    assert pipeline.store.read(queries.get_jid, jid)["m1"]["return"] == big
    assert event_data(pipeline.store, f"salt/job/{jid}/ret/m1") == [ret]
    assert all_stored(pipeline.store, before + after)
    pipeline.assert_still_working()


def test_ten_kilobyte_strings_in_every_field(pipeline):
    jid = new_jid()
    load = {
        "fun": TEN_KB,
        "tgt": TEN_KB,
        "tgt_type": TEN_KB,
        "user": TEN_KB,
        "arg": [TEN_KB],
        "jid": jid,
        "minions": ["m1"],
        TEN_KB: TEN_KB,
    }
    ret = {"fun": TEN_KB, "id": "m1", "jid": jid, "return": TEN_KB, "fun_args": [TEN_KB], "retcode": 0, "out": TEN_KB}
    tag = "faults/long/" + TEN_KB
    bad = [(f"salt/job/{jid}/new", load), (f"salt/job/{jid}/ret/m1", ret), (tag, {TEN_KB: [TEN_KB]})]
    before, after = good_events(), good_events()
    message_id = pipeline.process(before + bad + after)
    assert pipeline.dead_letters(message_id, count=0) == []
    stored_load = pipeline.store.read(queries.get_load, jid)
    assert stored_load.pop("Minions") == ["m1"] and verbatim(stored_load, load)
    assert pipeline.store.read(queries.get_jid, jid) == {"m1": {"return": TEN_KB, "retcode": 0, "out": TEN_KB}}
    row = return_row(pipeline.store, jid, "m1")
    assert verbatim(row.document, {k: v for k, v in ret.items() if k != "return"})
    # The indexed label columns hold a prefix; the documents above keep every character.
    assert row.fun == TEN_KB[:255]
    job = job_row(pipeline.store, jid)
    assert (job.fun, job.tgt, job.tgt_type, job.user) == (TEN_KB[:255], TEN_KB, TEN_KB[:32], TEN_KB[:255])
    assert event_data(pipeline.store, tag) == [{TEN_KB: [TEN_KB]}]
    assert all_stored(pipeline.store, before + after)
    pipeline.assert_still_working()


HOSTILE_MINIONS = [HOSTILE, "m'1\"; DROP TABLE jobs;--", "back\\slash\\'", "100%_wild*?[x]", 'double"quote', "m1' OR '1'='1"]


def test_quotes_and_sql_in_minion_ids_and_tags_read_back_verbatim(pipeline):
    jid = new_jid()
    load = {
        "fun": "test.echo",
        "tgt": HOSTILE,
        "tgt_type": "list",
        "arg": [HOSTILE],
        "jid": jid,
        "minions": HOSTILE_MINIONS,
        "user": HOSTILE,
    }
    rets = {
        m: {"fun": "test.echo", "id": m, "jid": jid, "return": f"{m} says {HOSTILE}", "retcode": 0, "success": True}
        for m in HOSTILE_MINIONS
    }
    custom = (f'faults/quote\'s/"dq"/{HOSTILE}/{new_jid()}', {HOSTILE: HOSTILE, "k'ey\"": ["v'al\"", "\\"]})
    bad = [(f"salt/job/{jid}/new", load)] + [(f"salt/job/{jid}/ret/{m}", ret) for m, ret in rets.items()] + [custom]
    before, after = good_events(), good_events()
    message_id = pipeline.process(before + bad + after)
    assert pipeline.dead_letters(message_id, count=0) == []
    store = pipeline.store
    assert store.read(queries.get_jid, jid) == {m: {"return": r["return"], "retcode": 0, "success": True} for m, r in rets.items()}
    stored_load = store.read(queries.get_load, jid)
    assert stored_load.pop("Minions") == sorted(HOSTILE_MINIONS) and verbatim(stored_load, load)
    for minion in HOSTILE_MINIONS:
        assert [row.ret for row in store.read(queries.returns_of_minion, minion)] == [rets[minion]["return"]]
        assert event_data(store, f"salt/job/{jid}/ret/{minion}") == [rets[minion]]
    assert set(HOSTILE_MINIONS) <= set(store.read(queries.minion_ids))
    assert event_data(store, custom[0]) == [custom[1]]
    assert store.read(queries.latest_return_of_fun, "test.echo")[HOSTILE] == rets[HOSTILE]["return"]
    assert all_stored(store, before + after)  # and every table is still there
    pipeline.assert_still_working()


def test_nul_characters(pipeline):
    jid = new_jid()
    nul_minion = "m\x00nul"
    value = {"stdout": "ELF\x00\x01\x00", "k\x00ey": ["\x00"]}
    bad = [
        (f"salt/job/{jid}/ret/m1", {"fun": "cmd.run", "id": "m1", "jid": jid, "return": value, "retcode": 0}),
        (f"salt/job/{jid}/ret/{nul_minion}", {"fun": "cmd.run", "id": nul_minion, "jid": jid, "return": "ok", "retcode": 0}),
        (new_tag("nul") + "/\x00/tag", {"v": 1}),
        (new_tag("nul-key"), {"k\x00": "v"}),
    ]
    before, after = good_events(), good_events()
    message_id = pipeline.process(before + bad + after)
    if pipeline.dialect == "postgresql":
        # Known: PostgreSQL text and JSONB cannot hold U+0000. Each such event is
        # dead-lettered alone with the reason; nothing else of the batch is lost.
        letters = pipeline.dead_letters(message_id, count=len(bad))
        for reason, _, _ in letters:
            assert "the database refused it" in reason, reason
            assert "NUL (0x00)" in reason or "Unicode escape" in reason, reason
        assert sorted(message.decode(b).events[0] for _, _, b in letters) == sorted(bad)  # verbatim, for a replay
        assert pipeline.store.read(queries.get_jid, jid) == {}
    else:
        assert pipeline.dead_letters(message_id, count=0) == []
        assert pipeline.store.read(queries.get_jid, jid) == {
            "m1": {"return": value, "retcode": 0},
            nul_minion: {"return": "ok", "retcode": 0},
        }
        for tag, data in bad:
            assert event_data(pipeline.store, tag) == [data]
    assert all_stored(pipeline.store, before + after)
    pipeline.assert_still_working()


def test_overlong_minion_ids_and_jids_are_dead_lettered_and_the_rest_stored(pipeline):
    jid = new_jid()
    long_id, long_jid = "m" * 256, "2" * 65
    edge_id, edge_jid = "🚀é" * 127 + "x", jid + "0" * 44  # exactly 255 and 64 characters
    assert (len(edge_id), len(edge_jid)) == (255, 64)
    bad = [
        (
            "id longer than 255 characters",
            (f"salt/job/{jid}/ret/{long_id}", {"fun": "test.ping", "id": long_id, "jid": jid, "return": True}),
        ),
        (
            "jid longer than 64 characters",
            (f"salt/job/{long_jid}/ret/m1", {"fun": "test.ping", "id": "m1", "jid": long_jid, "return": True}),
        ),
        (
            "jid longer than 64 characters",
            (f"salt/job/{long_jid}/new", {"fun": "test.ping", "tgt": "*", "minions": ["m1"], "jid": long_jid}),
        ),
        ("missing id", (f"salt/job/{jid}/ret/nobody", {"fun": "test.ping", "jid": jid, "return": True})),
    ]
    edge = [
        (f"salt/job/{edge_jid}/new", {"fun": "test.ping", "tgt": edge_id, "minions": [edge_id], "jid": edge_jid}),
        (f"salt/job/{edge_jid}/ret/{edge_id}", {"fun": "test.ping", "id": edge_id, "jid": edge_jid, "return": edge_id, "retcode": 0}),
    ]
    before, after = good_events(2), good_events(2)
    message_id = pipeline.process(before + [event for _, event in bad] + edge + after)
    letters = {
        message.decode(body).events[0][0]: (reason, message.decode(body))
        for reason, _, body in pipeline.dead_letters(message_id, count=len(bad))
    }
    for problem, (tag, data) in bad:
        reason, batch = letters[tag]
        assert reason.startswith(f"event {tag[:200]!r} rejected: {problem}"), reason
        assert batch.events == [(tag, data)] and batch.master_id == MASTER  # the event itself, for a replay
        assert event_data(pipeline.store, tag) == []
    assert pipeline.store.read(queries.get_jid, edge_jid) == {edge_id: {"return": edge_id, "retcode": 0}}
    assert pipeline.store.read(queries.get_load, edge_jid)["Minions"] == [edge_id]
    assert all_stored(pipeline.store, before + after)
    pipeline.assert_still_working()


def test_lone_surrogates_in_a_message_body_cost_at_most_their_own_event(pipeline):
    """Text that is not valid UTF-8 (lone surrogates, as Salt spells invalid bytes).

    The batch decodes; the event is stored with the surrogates escaped in its
    JSON (read back identical) where the database accepts that, and
    dead-lettered alone with the database's reason where it does not
    (MariaDB's and PostgreSQL's JSON checks refuse lone surrogate escapes).
    """
    bad_tag = new_tag("surrogate")
    events = good_events() + [(bad_tag, {"name": "caf\udce9 \udcff"})] + good_events()
    message_id = pipeline.process(events)
    assert all_stored(pipeline.store, events)
    stored = event_data(pipeline.store, bad_tag)
    if stored:
        assert stored == [{"name": "caf\udce9 \udcff"}]
        assert pipeline.dead_letters(message_id) == []
    else:
        [(reason, _, dead_body)] = pipeline.dead_letters(message_id, count=1)
        assert "refused" in reason, reason
        assert message.decode(dead_body).events == [(bad_tag, {"name": "caf\udce9 \udcff"})]
    pipeline.assert_still_working()


# --- bugs on the worker path (own worker: the bug kills it) ---------------------------------


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the worker thread's death
def test_bytes_dict_keys_neither_kill_the_worker_nor_lose_the_batch(broker_url, queue_name, tmp_path):
    cfg = relay_config(broker_url, queue_name, worker_max_attempts=1)
    store = Store(f"sqlite:///{tmp_path / 'relay.db'}")
    jid = new_jid()
    bad = [
        (f"salt/job/{jid}/ret/m1", {"fun": "file.readdir", "id": "m1", "jid": jid, "return": {b"caf\xe9": 1, "ok": 2}}),
        (new_tag("bytes-key"), {b"\xff\xfe": "value"}),
    ]
    before, after, later = good_events(), good_events(), good_events()
    with Pipeline("bytes-keys", cfg, store, broker_url) as running:
        message_id = running.publish(before + bad + after)
        running.publish(later)
        assert wait_for(lambda: all_stored(store, before + after + later) or not running.alive, timeout=20)
        assert running.alive, "the worker thread died"
        assert all_stored(store, before + after + later)
        letters = {message.decode(b).events[0][0]: r for r, _, b in running.dead_letters(message_id)}
        for tag, _ in bad:  # stored somehow, or dead-lettered with a reason
            assert event_data(store, tag) or tag in letters


# --- 50 MB: engine -> real broker -> worker --------------------------------------------------


def make_engine(tmp_path, cfg, sink=None):
    return engine.RelayEngine({"cachedir": str(tmp_path), "id": MASTER}, cfg, reader=FakeReader(), sink=sink)


def forward_all(relay, tries=5):
    """Forward the journal; the errors of failed tries (the journal keeps what failed)."""
    errors = []
    for _ in range(tries):
        try:
            while relay.forwarder.forward_once():
                pass
        except Exception as err:
            errors.append(err)
            continue
        break
    return errors


def fifty_megabyte_return():
    jid = new_jid()
    big = ("x" * 1023 + "\n") * (50 * 1024)
    return jid, big, (f"salt/job/{jid}/ret/m1", {"fun": "cmd.run", "id": "m1", "jid": jid, "return": big, "retcode": 0})


@pytest.mark.parametrize("broker_url", [pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)], indirect=True)
def test_fifty_megabyte_return_is_stored_whole_under_the_default_limit(broker_url, queue_name, tmp_path):
    cfg = relay_config(broker_url, queue_name)
    assert cfg.max_message_bytes == 64 << 20
    store = Store(f"sqlite:///{tmp_path / 'relay.db'}")
    jid, big, event = fifty_megabyte_return()
    around = good_events(2)
    relay = make_engine(tmp_path, cfg)
    feed(relay, around[:2] + [event] + around[2:])
    assert forward_all(relay) == []
    relay.forwarder.sink.close()
    with WorkerThread(cfg, store) as worker:
        assert wait_for(lambda: worker.counts["events_stored"] == 5, timeout=60)
    assert store.read(queries.get_jid, jid)["m1"]["return"] == big
    assert all_stored(store, around)
    assert queue_depth(broker_url, f"{queue_name}.dlq") == 0


@pytest.mark.parametrize("broker_url", [pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)], indirect=True)
def test_fifty_megabyte_return_over_a_lowered_limit_is_dead_lettered_alone(broker_url, queue_name, tmp_path):
    cfg = relay_config(broker_url, queue_name, max_message_bytes=32 << 20)
    store = Store(f"sqlite:///{tmp_path / 'relay.db'}")
    jid, _, event = fifty_megabyte_return()
    around = good_events(2)
    relay = make_engine(tmp_path, cfg)
    feed(relay, around[:2] + [event] + around[2:])  # one batch: the engine splits it
    assert forward_all(relay) == []
    relay.forwarder.sink.close()
    with WorkerThread(cfg, store) as worker:
        assert wait_for(lambda: all_stored(store, around) and sum(worker.counts["dead_lettered"].values()) == 1, timeout=60)
        [(headers, body)] = take_all(broker_url, f"{queue_name}.dlq")
    assert headers[REASON_HEADER] == f"message of {len(body)} bytes exceeds relay:max_message_bytes ({32 << 20})"
    assert message.decode(body).events == [event]  # alone, whole
    assert store.read(queries.get_jid, jid) == {}
    assert queue_depth(broker_url, queue_name) == 0


# --- engine loop (fake bus reader) -----------------------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path):
    return Store(f"sqlite:///{tmp_path / 'relay.db'}")


def embedded_engine(tmp_path, store, **relay):
    return make_engine(tmp_path, config.load(relay), sink=forwarder.StoreSink(store))


def test_engine_drops_non_mapping_data_and_rejects_overlong_ids_keeping_the_rest(tmp_path, sqlite_store, caplog):
    relay = embedded_engine(tmp_path, sqlite_store, batch_size=100)
    jid = new_jid()
    odd = [(f"salt/job/{jid}/ret/m1", data) for data in ([1, 2], "text", 7, None)]
    overlong = [
        (f"salt/job/{jid}/ret/{'m' * 256}", {"fun": "test.ping", "id": "m" * 256, "jid": jid, "return": True}),
        (f"salt/job/{'9' * 65}/new", {"fun": "test.ping", "tgt": "*", "minions": ["m1"]}),
    ]
    before, after = good_events(2), good_events(2)
    feed(relay, before + odd + overlong + after)
    assert forward_all(relay) == []
    stats = relay.stats()
    assert stats["dropped"] == {"malformed": 4}  # Salt's fire_event refuses such data; counted if seen
    assert stats["rejected"] == 2 and stats["journal_pending_bytes"] == 0
    assert "id longer than 255 characters" in caplog.text and "jid longer than 64 characters" in caplog.text
    assert all_stored(sqlite_store, before + after)


def test_engine_survives_lone_surrogates_and_keeps_the_batch(tmp_path, sqlite_store):
    relay = embedded_engine(tmp_path, sqlite_store, batch_size=100)
    jid = new_jid()
    bad = (f"salt/job/{jid}/ret/m1", {"fun": "file.readdir", "id": "m1", "jid": jid, "return": ["caf\udce9", "\udcff"]})
    before, after = good_events(2), good_events(2)
    feed(relay, before + [bad] + after)
    assert forward_all(relay) == []
    assert all_stored(sqlite_store, before + after)
    stats = relay.stats()
    assert (
        return_row(sqlite_store, jid, "m1") is not None
        or stats["rejected"] + stats["journal_lost_events"] + sum(stats["dropped"].values()) == 1
    )


def test_engine_filter_survives_bytes_dict_keys(tmp_path, sqlite_store):
    relay = embedded_engine(tmp_path, sqlite_store, batch_size=100)
    bad = ("salt/beacon/m1/inotify/srv", {b"/srv/caf\xe9": {"change": "IN_MODIFY"}})
    before, after = good_events(2), good_events(2)
    feed(relay, before + [bad] + after)
    assert forward_all(relay) == []
    assert all_stored(sqlite_store, before + after)


def test_embedded_journal_moves_past_bytes_dict_keys(tmp_path, sqlite_store):
    relay = embedded_engine(tmp_path, sqlite_store, batch_size=1)
    jid = new_jid()
    bad = (f"salt/job/{jid}/ret/m1", {"fun": "file.readdir", "id": "m1", "jid": jid, "return": {b"caf\xe9": 1}})
    before, after = good_events(2), good_events(2)
    feed(relay, before + [bad] + after)
    forward_all(relay)
    assert all_stored(sqlite_store, before + after)
    assert relay.forwarder.pending_bytes(fresh=True) == 0


POISON = {  # data the database (up and answering) refuses, per dialect
    "postgresql": {"stdout": "ELF\x00"},
    "mysql": nested(40),
}


@pytest.mark.parametrize(
    "database_url",
    [pytest.param("mysql", marks=pytest.mark.mysql), pytest.param("postgresql", marks=pytest.mark.postgresql)],
    indirect=True,
)
def test_embedded_mode_an_event_the_database_refuses_does_not_block_the_journal(database_url, tmp_path):
    store = Store(database_url)
    dialect = store.engine.dialect.name
    relay = embedded_engine(tmp_path, store, batch_size=1)
    jid = new_jid()
    bad = (f"salt/job/{jid}/ret/m1", {"fun": "cmd.run", "id": "m1", "jid": jid, "return": POISON[dialect]})
    before, after = good_events(2), good_events(2)
    feed(relay, before + [bad] + after)
    forward_all(relay)
    assert all_stored(store, before + after)
    assert relay.forwarder.pending_bytes(fresh=True) == 0


# --- returner --------------------------------------------------------------------------------


@pytest.fixture
def loader(tmp_path):
    opts = salt.config.master_config("/dev/null")
    opts["cachedir"] = str(tmp_path / "cache")
    opts["relay"] = {"database_url": f"sqlite:///{tmp_path / 'relay.db'}"}
    with salt.minion.MasterMinion(opts) as minion:
        yield minion.returners, opts


def test_returner_through_salts_loader_stores_hostile_input_verbatim(loader):
    loaded, _ = loader
    jid = new_jid()
    five_mb = ("5 MB ✓ '\"\\\n" * (5 * 1024 * 1024 // 12 + 1))[: 5 * 1024 * 1024]
    values = {HOSTILE: HOSTILE, "m'1\"": TEN_KB, "nul\x00minion": "a\x00b", "big": five_mb, "deep": nested(500)}
    load = {"fun": "test.echo", "arg": [HOSTILE, TEN_KB], "tgt": HOSTILE, "tgt_type": "glob", "user": "o'brien"}
    loaded["relay.save_load"](jid, load, list(values))
    for minion, value in values.items():
        loaded["relay.returner"]({"id": minion, "jid": jid, "fun": "test.echo", "return": value, "retcode": 0, "success": True})
    got = loaded["relay.get_jid"](jid)
    assert set(got) == set(values)
    for minion, value in values.items():
        assert verbatim(got[minion]["return"], value), minion
    stored_load = loaded["relay.get_load"](jid)
    assert stored_load.pop("Minions") == sorted(values) and stored_load == load
    assert set(values) <= set(loaded["relay.get_minions"]())


@pytest.mark.parametrize(
    "ret, problem",
    [
        ({"id": "m" * 256, "jid": "20261201000000000001", "return": True}, "RecordError: id longer than 255 characters"),
        ({"id": "m1", "jid": "2" * 65, "return": True}, "RecordError: jid longer than 64 characters"),
        ({"jid": "20261201000000000001", "return": True}, "RecordError: missing id"),
    ],
    ids=["long-id", "long-jid", "no-id"],
)
def test_returner_refuses_unstorable_keys_with_a_clear_error(loader, ret, problem):
    loaded, _ = loader
    with pytest.raises(CommandExecutionError, match=f"^relay returner: {problem}"):
        loaded["relay.returner"](ret)


@pytest.mark.parametrize("ret", [["a", "list"], "a string", 42, None], ids=["list", "str", "int", "none"])
def test_returner_names_a_return_that_is_not_a_mapping(loader, ret):
    loaded, _ = loader
    with pytest.raises(CommandExecutionError, match="a return must be a mapping"):
        loaded["relay.returner"](ret)


def test_event_return_stores_non_mapping_and_bytes_data_and_the_rest(loader, caplog):
    loaded, opts = loader
    raw = b"\xff\x00binary"
    tags = [new_tag("er") for _ in range(6)]
    events = [
        {"tag": tags[0], "data": [1, "two"]},
        {"tag": tags[1], "data": "text"},
        {"tag": tags[2], "data": None},
        {"tag": tags[3], "data": {"raw": raw, HOSTILE: TEN_KB}},
        {"tag": tags[4], "data": {b"caf\xe9": 1}},  # a bytes key
        {"tag": tags[5], "data": {"after": True}},
    ]
    with caplog.at_level(logging.ERROR):
        loaded["relay.event_return"](events)
    store = Store(opts["relay"]["database_url"])
    assert event_data(store, tags[0]) == [[1, "two"]]
    assert event_data(store, tags[1]) == ["text"]
    assert event_data(store, tags[2]) == [None]
    assert event_data(store, tags[3]) == [{"raw": {"__bytes_base64__": base64.b64encode(raw).decode()}, HOSTILE: TEN_KB}]
    # Stored, or skipped with an error that names the problem.
    assert event_data(store, tags[4]) or "skipping malformed event: TypeError: keys must be str" in caplog.text
    assert event_data(store, tags[5]) == [{"after": True}]


def test_event_return_keeps_the_good_events_of_a_batch_with_a_lone_surrogate(loader):
    loaded, opts = loader
    good, bad = new_tag("good"), new_tag("surrogate")
    try:
        loaded["relay.event_return"]([{"tag": good, "data": {"ok": 1}}, {"tag": bad, "data": {"path": "/srv/caf\udce9"}}])
    except CommandExecutionError:
        pass  # Salt's EventReturn logs this and drops its queue: only what is stored counts
    assert event_data(Store(opts["relay"]["database_url"]), good) == [{"ok": 1}]


MINION_OPTS = {"__role": "minion", "id": "m1"}
MINION_SETTINGS = config.resolve(config.load(), MINION_OPTS)


def test_returner_functions_on_each_database(store):
    """salt_engine_lib.returner on SQLite, MariaDB and PostgreSQL: verbatim or a StoreError naming the problem."""
    dialect = store.engine.dialect.name
    jid = new_jid()
    cases = {
        HOSTILE: f"{HOSTILE} \\ %_ ünï 🚀",
        "ten-kb": {TEN_KB: TEN_KB},
        "bytes": b"\xff\xfe",
        "deep": nested(500),
        "nul": "a\x00b",
    }
    refused = {
        "postgresql": {"nul": "UntranslatableCharacter: unsupported Unicode escape sequence"},
        "mysql": {"deep": "CONSTRAINT `returns.ret` failed"},
    }.get(dialect, {})
    relay_returner.save_load(store, MINION_SETTINGS, jid, {"fun": "test.echo", "tgt": HOSTILE, "user": TEN_KB}, list(cases))
    for minion, value in cases.items():
        ret = {"id": minion, "jid": jid, "fun": "test.echo", "return": value, "retcode": 0}
        if minion in refused:
            with pytest.raises(StoreError, match=f"{refused[minion]}"):
                relay_returner.returner(store, MINION_SETTINGS, ret, MINION_OPTS)
        else:
            relay_returner.returner(store, MINION_SETTINGS, ret, MINION_OPTS)
    with pytest.raises(RecordError, match="id longer than 255 characters"):
        relay_returner.returner(store, MINION_SETTINGS, {"id": "m" * 256, "jid": jid, "return": 1}, MINION_OPTS)
    got = relay_returner.get_jid(store, MINION_SETTINGS, jid)
    expected = {m: v for m, v in cases.items() if m not in refused}
    expected["bytes"] = {"__bytes_base64__": base64.b64encode(cases["bytes"]).decode()}
    assert set(got) == set(expected)
    for minion, value in expected.items():
        assert verbatim(got[minion]["return"], value), minion
    assert relay_returner.get_load(store, MINION_SETTINGS, jid)["tgt"] == HOSTILE
    tag = f"custom/{HOSTILE}/{jid}"
    relay_returner.event_return(store, MINION_SETTINGS, [{"tag": tag, "data": {HOSTILE: [TEN_KB]}}, {"tag": tag + "/2", "data": [HOSTILE]}])
    assert event_data(store, tag) == [{HOSTILE: [TEN_KB]}] and event_data(store, tag + "/2") == [[HOSTILE]]


@pytest.mark.parametrize(
    "database_url",
    [pytest.param("mysql", marks=pytest.mark.mysql), pytest.param("postgresql", marks=pytest.mark.postgresql)],
    indirect=True,
)
def test_a_return_the_database_refuses_does_not_block_the_outbox(database_url, tmp_path):
    store = Store(database_url)
    dialect = store.engine.dialect.name
    opts = {"__role": "master", "id": MASTER, "cachedir": str(tmp_path / "cache")}
    stats = paths.engine_stats(opts)
    stats.parent.mkdir(parents=True)
    stats.write_text("{}")  # a live engine: returns go through the outbox
    bad_jid, good_jid = new_jid(), new_jid()
    settings = config.resolve(config.load(), opts)
    relay_returner.returner(store, settings, {"id": "m1", "jid": bad_jid, "fun": "cmd.run", "return": POISON[dialect]}, opts)
    relay_returner.returner(store, settings, {"id": "m1", "jid": good_jid, "fun": "test.ping", "return": True}, opts)
    dead_letters = DeadLetterFile(tmp_path / "dead-letters")
    sink = forwarder.StoreSink(store, dead_letters)
    journal = forwarder.Forwarder(tmp_path / "journal", sink, max_bytes=1 << 30)
    OutboxDrainer(opts, journal, sink).drain_once()
    journal.forward_once()
    assert dead_letters.count == 1
    assert relay_returner.get_jid(store, settings, good_jid) == {"m1": {"return": True}}


# --- configuration and unreachable servers ----------------------------------------------------


@pytest.mark.parametrize(
    "block, message_start",
    [
        ({"batch_sise": 5}, "relay:batch_sise (from engine options) is not a known option; allowed: broker_url,"),
        (
            {"broker_url": "http://guest:secret@127.0.0.1:5672//"},
            "relay:broker_url 'http://guest:***@127.0.0.1:5672//' has an unsupported scheme 'http'",
        ),
        # Shown masked: a URL that does not parse could be all password.
        ({"broker_url": "guest:secret@127.0.0.1:5672"}, "relay:broker_url '<unparsable url>' has an unsupported scheme ''"),
        ({"database_url": "oracle://scott:tiger@db/salt"}, "relay:database_url 'oracle://scott:***@db/salt' uses dialect 'oracle'"),
        ({"database_url": "not a url"}, "relay:database_url is not a valid SQLAlchemy URL"),
        ({"batch_size": "abc"}, "relay:batch_size must be a positive integer, got 'abc'"),
        ({"batch_size": "12abc"}, "relay:batch_size must be a positive integer, got '12abc'"),
        ({"max_message_bytes": 1.5}, "relay:max_message_bytes must be a positive integer, got 1.5"),
        ({"worker_max_attempts": -1}, "relay:worker_max_attempts must be a positive integer, got -1"),
        ({"batch_max_wait": "soon"}, "relay:batch_max_wait must be a positive number of seconds, got 'soon'"),
    ],
    ids=[
        "unknown-key",
        "http-scheme",
        "no-scheme",
        "oracle-dialect",
        "not-a-url",
        "batch-size-abc",
        "batch-size-12abc",
        "float-bytes",
        "negative-attempts",
        "wait-soon",
    ],
)
def test_a_broken_relay_block_raises_config_error_naming_the_key(block, message_start, caplog):
    with pytest.raises(ConfigError) as err:
        config.load(block)
    assert str(err.value).startswith(message_start), str(err.value)
    assert "secret" not in str(err.value) and "tiger" not in str(err.value)
    # The engine entry point refuses to start with the same message, logged at CRITICAL for Salt's log.
    with pytest.raises(ConfigError):
        engine.run({"id": "m", "cachedir": "/nonexistent"}, block)
    assert f"relay engine cannot start: {message_start}" in caplog.text


@pytest.mark.parametrize("scheme", ["amqp", "redis"])
def test_unreachable_broker_journals_everything_and_counts_the_failures(scheme, tmp_path):
    port = free_port()
    url = f"amqp://guest:guest@127.0.0.1:{port}//" if scheme == "amqp" else f"redis://127.0.0.1:{port}/0"
    cfg = config.load(
        {
            "broker_url": url,
            "queue": "relay-faults-unreachable",
            "batch_size": 10,
            "batch_max_wait": 0.05,
            "broker_transport_options": {"socket_connect_timeout": 1} if scheme == "redis" else None,
        }
    )
    relay = make_engine(tmp_path, cfg)
    events = good_events(15)  # 30 events: 3 batches
    relay.forwarder.start()
    try:
        feed(relay, events)
        assert wait_for(lambda: relay.forwarder.failures >= 1, timeout=30)
        stats = relay.stats()
        assert stats["journaled"] == 30 and stats["forwarded"] == 0 and stats["journal_lost_events"] == 0
        assert stats["forward_failures"] >= 1 and stats["journal_pending_bytes"] > 0
        assert "BrokerUnavailable" in stats["last_error"] and str(port) in stats["last_error"]
    finally:
        relay.forwarder.stop(timeout=0.5)
        relay.forwarder.join(timeout=15)
    # Nothing lost: every event is in the journal, in order, for the next engine to forward.
    bodies, _ = JournalReader(paths.journal({"cachedir": str(tmp_path)})).read(100)
    assert [event for body in bodies for event in message.decode(body).events] == events


@pytest.mark.parametrize("broker_url", [pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)], indirect=True)
@pytest.mark.parametrize("database_url", [pytest.param("postgresql", marks=pytest.mark.postgresql)], indirect=True)
def test_unreachable_database_nothing_is_acked_until_it_is_back(broker_url, queue_name, database_url):
    proxy, proxied_url = proxied(database_url)
    proxy.cut()
    cfg = relay_config(broker_url, queue_name)
    store = Store(f"{proxied_url}?connect_timeout=2")
    batches = [good_events(3), good_events(3)]
    for batch in batches:
        publish_batches(cfg, batch, per_message=len(batch))
    try:
        with WorkerThread(cfg, store) as worker:
            assert wait_for(lambda: worker.counts["store_retries"] >= 2, timeout=30)
            assert worker.counts["messages_stored"] == 0 and worker.counts["dead_lettered"] == {}
        # Stopped during the outage: both messages are back in the queue, none dead-lettered.
        assert wait_for(lambda: queue_depth(broker_url, queue_name) == 2, timeout=10)
        assert queue_depth(broker_url, f"{queue_name}.dlq") == 0
        with WorkerThread(cfg, store) as worker:
            assert wait_for(lambda: worker.counts["store_retries"] >= 1, timeout=30)
            assert worker.counts["messages_stored"] == 0
            proxy.restore()
            assert wait_for(lambda: worker.counts["messages_stored"] == 2, timeout=60)
        direct = Store(database_url)
        assert all(all_stored(direct, batch) for batch in batches)
        assert queue_depth(broker_url, queue_name) == 0
        assert queue_depth(broker_url, f"{queue_name}.dlq") == 0
    finally:
        proxy.close()
