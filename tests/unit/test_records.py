"""records: Salt documents -> store rows (pure functions, no database)."""

import datetime
import subprocess
import sys

import pytest

from salt_engine_lib.store.writes import Rows
from salt_engine_lib import jids, listing, records
from salt_engine_lib.errors import RecordError

JID = "20260102030405123456"
NOW = datetime.datetime(2026, 1, 2, 3, 5, 0)


def test_importable_on_its_own():
    # records imports store.schema, whose package imports queries, which uses records.
    for module in ("salt_engine_lib.records", "salt_engine_lib.store"):
        result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


# --- jids and stamps ------------------------------------------------------------------------


def test_jid_time_round_trip():
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, 123456)
    assert jids.time_to_jid(when) == JID
    assert jids.jid_time(JID) == when
    assert jids.jid_time(int(JID)) == when
    assert jids.jid_time(JID + "_1") == when  # suffixed jids (multi-master)
    assert jids.time_to_jid(datetime.datetime(2026, 1, 2)) == "20260102000000000000"
    assert jids.time_to_jid(when) < jids.time_to_jid(when + datetime.timedelta(microseconds=1))


@pytest.mark.parametrize("jid", ["req", "", "2026", "abcdefghijklmnopqrst", None])
def test_jid_time_of_non_time_jids(jid):
    assert jids.jid_time(jid) is None


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2026-01-02T03:04:05.123456", datetime.datetime(2026, 1, 2, 3, 4, 5, 123456)),
        ("2026-01-02T04:04:05+01:00", datetime.datetime(2026, 1, 2, 3, 4, 5)),
        ("2026-01-02T03:04:05+00:00", datetime.datetime(2026, 1, 2, 3, 4, 5)),
        (0, datetime.datetime(1970, 1, 1)),
        (1767323045.5, datetime.datetime(2026, 1, 2, 3, 4, 5, 500000)),
        (None, None),
        ("", None),
        ("yesterday", None),
        (True, None),
        ([2026], None),
    ],
)
def test_parse_stamp(value, expected):
    assert jids.parse_stamp(value) == expected


# --- jobs -----------------------------------------------------------------------------------


def test_job_row():
    load = {"jid": JID, "fun": "cmd.run", "arg": ["uptime"], "tgt": ["m2", "m1"], "tgt_type": "list", "user": "root"}
    row = records.job_row(JID, load, minions={"m2", "m1", "M3"}, master_id="master1", now=NOW)
    assert row == {
        "jid": JID,
        "namespace": "master1",
        "master_id": "master1",
        "fun": "cmd.run",
        "tgt": '["m2","m1"]',
        "tgt_type": "list",
        "user": "root",
        "load": load,
        "minions": ["M3", "m1", "m2"],
        "listing_head": listing.head(JID, load),
        "started_at": datetime.datetime(2026, 1, 2, 3, 4, 5, 123456),
        "ended_at": None,
        "stored_at": NOW,
    }
    assert row["load"] is not load  # a copy: later changes to the load do not leak in


def test_listing_is_salts_get_jids_entry():
    import salt.utils.jid

    load = {"jid": JID, "fun": "state.apply", "arg": ["web", {"__kwarg__": True, "test": True}], "tgt": "*", "metadata": {"t": "ünï"}}
    head = listing.head(JID, load)
    assert head.startswith(f'"{JID}":{{') and not head.endswith("}")
    member = listing.member(head, listing.tail(None))
    assert listing.parse(member) == {JID: salt.utils.jid.format_jid_instance(JID, load)}
    ended = datetime.datetime(2026, 12, 4, 9, 5, 1, 7)
    assert listing.parse(member + "," + listing.member(listing.head("2", {}), listing.tail(ended))) == {
        JID: salt.utils.jid.format_jid_instance(JID, load),
        "2": {**salt.utils.jid.format_jid_instance("2", {}), "EndTime": "2026, Dec 04 09:05:01.000007"},
    }


def test_job_row_edge_cases():
    row = records.job_row(JID, None)
    assert row["load"] == {} and row["fun"] is None and row["minions"] is None and row["tgt"] is None
    assert records.job_row(JID, {"fun": ["test.ping", "test.echo"]})["fun"] == "test.ping,test.echo"
    assert len(records.job_row(JID, {"fun": "f" * 300})["fun"]) == 255
    assert records.job_row(JID, {"tgt": "web*"})["tgt"] == "web*"
    assert records.job_row("req", {})["started_at"] is None
    assert records.job_row(JID, {}, minions=[])["minions"] == []


@pytest.mark.parametrize("jid, message", [(None, "missing jid"), ("", "missing jid"), ("9" * 65, "jid longer than 64")])
def test_job_row_rejects_bad_jids(jid, message):
    with pytest.raises(RecordError, match=message):
        records.job_row(jid, {})


# --- returns --------------------------------------------------------------------------------


def outcome(doc):
    row = records.return_row(doc)
    return row["retcode"], row["success"]


def test_minion_return_row():
    doc = {
        "cmd": "_return",
        "id": "m1",
        "jid": JID,
        "fun": "test.ping",
        "fun_args": [],
        "return": True,
        "retcode": 0,
        "success": True,
        "_stamp": "2026-01-02T03:04:06.5",
        "out": "nested",
    }
    row = records.return_row(doc, master_id="master1", now=NOW)
    assert row == {
        "jid": JID,
        "namespace": "master1",
        "minion_id": "m1",
        "master_id": "master1",
        "fun": "test.ping",
        "ret": True,
        "retcode": 0,
        "success": True,
        "document": {k: v for k, v in doc.items() if k != "return"},
        "returned_at": datetime.datetime(2026, 1, 2, 3, 4, 6, 500000),
        "stored_at": NOW,
    }
    assert "return" in doc  # the caller's document is not modified


@pytest.mark.parametrize(
    "doc, expected",
    [
        ({"retcode": 0, "success": True}, (0, True)),
        ({"retcode": 1, "success": False}, (1, False)),
        # a function can fail with retcode 0 (success wins) ...
        ({"retcode": 0, "success": False}, (0, False)),
        # salt-call --return: no "success"; it follows the retcode
        ({"retcode": 1}, (1, False)),
        ({"retcode": 0}, (0, True)),
        ({"retcode": "2"}, (2, False)),
        ({}, (None, None)),
        ({"retcode": "n/a"}, (None, None)),
    ],
)
def test_outcome_of_minion_and_salt_call_returns(doc, expected):
    assert outcome({"id": "m1", "jid": JID, "fun": "cmd.run", "return": "", **doc}) == expected


def test_runner_return_outcome_is_nested():
    runner = {
        "id": "m_master",
        "jid": JID,
        "fun": "runner.test.arg",
        "user": "root",
        "return": {"fun": "runner.test.arg", "return": {"args": []}, "success": False},
    }
    assert outcome(runner) == (None, False)
    ok = {**runner, "return": {"fun": "runner.test.arg", "return": {}, "success": True, "retcode": 0}}
    assert outcome(ok) == (0, True)
    # only runner jobs are unwrapped: a minion function returning such a dict is just data
    data = {"id": "m1", "jid": JID, "fun": "test.arg", "return": {"success": False, "retcode": 5}, "retcode": 0}
    assert outcome(data) == (0, True)


def test_multi_function_return_with_dicts():
    doc = {
        "id": "m1",
        "jid": JID,
        "fun": ["test.ping", "cmd.retcode"],
        "return": {"test.ping": True, "cmd.retcode": 3},
        "retcode": {"test.ping": 0, "cmd.retcode": 3},
        "success": {"test.ping": True, "cmd.retcode": False},
    }
    row = records.return_row(doc)
    assert (row["fun"], row["retcode"], row["success"]) == ("test.ping,cmd.retcode", 3, False)
    assert outcome({**doc, "retcode": {"a": 0, "b": 0}, "success": {"a": True, "b": True}}) == (0, True)


def test_multi_function_return_with_lists():
    # minion option multifunc_ordered: lists in fun order (retcode starts as None per function)
    doc = {"id": "m1", "jid": JID, "fun": ["test.ping", "cmd.retcode"], "return": [True, 3]}
    assert outcome({**doc, "retcode": [0, 3], "success": [True, False]}) == (3, False)
    assert outcome({**doc, "retcode": [0, None], "success": [False, False]}) == (0, False)
    assert outcome({**doc, "retcode": [0, 0], "success": [True, True]}) == (0, True)


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"jid": JID, "return": 1}, "missing id"),
        ({"id": "m1", "return": 1}, "missing jid"),
        ({"id": "m" * 256, "jid": JID}, "id longer than 255"),
    ],
)
def test_return_row_rejects_bad_documents(doc, message):
    with pytest.raises(RecordError, match=message):
        records.return_row(doc)


def test_return_row_rejects_non_mappings():
    with pytest.raises(RecordError, match="a return must be a mapping, got list"):
        records.return_row([JID])


def test_return_row_stamp_fallbacks():
    assert records.return_row({"id": "m", "jid": JID, "ts": 0})["returned_at"] == datetime.datetime(1970, 1, 1)
    assert records.return_row({"id": "m", "jid": JID})["returned_at"] is None
    assert records.return_row({"id": "m", "jid": JID, "return": None})["ret"] is None


# --- events ---------------------------------------------------------------------------------


def test_event_row():
    data = {"_stamp": "2026-01-02T03:04:05.000001", "id": "m1", "act": "accept"}
    row = records.event_row("salt/key", data, "master1", now=NOW)
    assert row == {
        "content_key": records.content_key("salt/key", data, "master1"),
        "tag": "salt/key",
        "data": data,
        "namespace": "master1",
        "master_id": "master1",
        "stamp": datetime.datetime(2026, 1, 2, 3, 4, 5, 1),
        "stored_at": NOW,
    }
    assert len(row["content_key"]) == 64
    assert records.event_row("my/tag", {"x": 1}, now=NOW)["stamp"] == NOW  # no _stamp: time of capture
    assert records.event_row("my/tag", ["not", "a", "dict"], now=NOW)["stamp"] == NOW


def test_content_key_identity():
    key = records.content_key("t", {"a": 1, "b": [1, 2]}, "master1")
    assert records.content_key("t", {"b": [1, 2], "a": 1}, "master1") == key  # key order does not matter
    assert records.content_key("t", {"a": 1, "b": [1, 2]}, "master2") != key
    assert records.content_key("t2", {"a": 1, "b": [1, 2]}, "master1") != key
    assert records.content_key("t", {"a": 2, "b": [1, 2]}, "master1") != key
    # parts are separated: moving text between tag and master id changes the key
    assert records.content_key("ab", {}, "c") != records.content_key("b", {}, "ca")
    # not-quite-JSON Salt data still has a stable key
    odd = {"raw": b"\xff\x00", "when": datetime.datetime(2026, 1, 2), "t": (1, 2)}
    assert records.content_key("t", odd) == records.content_key("t", dict(odd))


def test_a_cluster_peers_forwarded_copy_has_the_originals_content_key():
    original = {"jid": "20261202183752150571", "_stamp": "2026-12-02T18:37:52.150571"}
    forwarded = dict(original, __peer_id="127.0.0.2")  # what Salt 3007+ adds on the peer's bus
    assert records.content_key("salt/job/x/new", forwarded, "cluster") == records.content_key("salt/job/x/new", original, "cluster")


@pytest.mark.parametrize("tag", ["", None, 5])
def test_event_row_needs_a_tag(tag):
    with pytest.raises(RecordError, match="non-empty string tag"):
        records.event_row(tag, {})


def test_bus_copies_of_returns_make_no_returns_row_when_the_job_cache_sends_them():
    ret = {"id": "m1", "jid": "20261125120000000001", "fun": "test.ping", "return": True, "retcode": 0}
    tag = "salt/job/20261125120000000001/ret/m1"
    assert len(records.rows_from_event(tag, ret, "master-1").returns) == 1
    rows = records.rows_from_event(tag, ret, "master-1", jobs_from_bus=False)
    assert (rows.returns, rows.authoritative_returns, len(rows.events)) == ([], (), 1)
    rows = records.rows_from_event(records.JOB_CACHE_RETURN_TAG, ret, "master-1")
    assert (rows.jobs, rows.returns, rows.events) == ([], [], [])
    assert [r["minion_id"] for r in rows.authoritative_returns] == ["m1"]
    load = {"jid": ret["jid"], "load": {"fun": "test.ping", "tgt": "*"}, "minions": None}
    assert records.rows_from_event(records.JOB_CACHE_LOAD_TAG, load, "master-1").jobs[0]["fun"] == "test.ping"
    with pytest.raises(RecordError, match="unknown salt-relay record"):
        records.rows_from_event(records.JOB_CACHE_TAG_PREFIX + "other", {}, "master-1")
    merged = Rows.merge([rows, records.rows_from_event(tag, ret, "master-1")])
    assert (len(merged.returns), len(merged.authoritative_returns), len(merged.events)) == (1, 1, 1)


def test_a_job_from_a_master_of_masters_belongs_to_its_namespace():
    """Salt copies the top master's master_id into the load and returns a syndic's master sees."""
    load = {"jid": JID, "fun": "test.ping", "master_id": "top"}
    job = records.job_row(JID, load, master_id="syndic-master", namespace="syndic-master")
    assert (job["namespace"], job["master_id"]) == ("top", "top")
    ret = records.return_row({"id": "m1", "jid": JID, "return": True, "master_id": "top"}, "syndic-master", namespace="syndic-master")
    assert (ret["namespace"], ret["master_id"]) == ("top", "syndic-master")  # received by the syndic's master
    saved = records.job_row(JID, {"jid": JID, "kwargs": {"master_id": "top"}}, master_id="syndic-master", namespace="syndic-master")
    assert saved["namespace"] == "top"  # the load a syndic's master saves: the id is in its kwargs
    local = records.return_row({"id": "m1", "jid": JID, "return": True}, "syndic-master", namespace="syndic-master")
    assert local["namespace"] == "syndic-master"


def test_cluster_peers_capturing_one_event_give_one_content_key():
    data = {"id": "m1", "jid": JID, "return": True, "_stamp": "2026-01-02T03:04:05.000001"}
    first = records.event_row("salt/job/x/ret/m1", data, master_id="peer-1", namespace="cluster-a")
    second = records.event_row("salt/job/x/ret/m1", data, master_id="peer-2", namespace="cluster-a")
    other = records.event_row("salt/job/x/ret/m1", data, master_id="peer-1", namespace="cluster-b")
    assert first["content_key"] == second["content_key"] != other["content_key"]


def test_with_relay_as_job_cache_the_bus_copy_of_a_publish_makes_no_job_row():
    new = {"jid": JID, "fun": "test.ping", "tgt": "*", "minions": ["m1"]}
    assert len(records.rows_from_event(f"salt/job/{JID}/new", new, "m").jobs) == 1
    rows = records.rows_from_event(f"salt/job/{JID}/new", new, "m", jobs_from_bus=False)
    assert rows.jobs == [] and len(rows.events) == 1
