"""The returner's library functions (no Salt loader) on a real SQLite store; shapes as Salt's local_cache gives them."""

import datetime

import pytest
import salt.utils.jid

from salt_engine_lib import codec, config, jids, paths
from salt_engine_lib import returner as relay_returner
from salt_engine_lib.errors import RecordError, StoreError
from salt_engine_lib.journal import JournalReader
from salt_engine_lib.store import Store, queries

JID = "20261125120000000001"
PUBLISH = {"fun": "test.ping", "arg": [], "tgt": "*", "tgt_type": "glob", "user": "root", "jid": JID}
RET = {"fun": "test.ping", "id": "m1", "jid": JID, "return": True, "retcode": 0, "success": True}


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'relay.db'}"


@pytest.fixture
def store(url):
    return Store(url)


@pytest.fixture
def minion(url):
    opts = {"__role": "minion", "id": "m1"}
    return opts, config.resolve(config.load({"database_url": url}), opts)


@pytest.fixture
def master(tmp_path, url):
    opts = {"__role": "master", "id": "master-1", "cachedir": str(tmp_path / "cache")}
    return opts, config.resolve(config.load({"database_url": url}), opts)


@pytest.fixture
def down(tmp_path):
    """A database SQLite cannot open (its file is a directory): writes fail for real."""
    (tmp_path / "db-is-a-directory").mkdir()
    return f"sqlite:///{tmp_path / 'db-is-a-directory'}"


def start_engine_heartbeat(opts):
    heartbeat = paths.engine_stats(opts)
    heartbeat.parent.mkdir(parents=True, exist_ok=True)
    heartbeat.write_text("{}")


def outbox_records(opts):
    return [codec.unpack(frame) for frame in JournalReader(paths.outbox(opts)).read(100)[0]]


def test_the_publish_load_is_the_record_and_a_return_load_never_replaces_it(store, minion):
    opts, settings = minion
    relay_returner.save_load(store, settings, JID, dict(RET), opts=opts)  # a return load first: a placeholder row
    relay_returner.save_load(store, settings, JID, PUBLISH, ["m2", "m1"], opts)
    relay_returner.save_load(store, settings, JID, dict(RET, id="m2"), opts=opts)
    assert relay_returner.get_load(store, settings, JID) == dict(PUBLISH, Minions=["m1", "m2"])


def test_save_minions_before_the_load_makes_no_job_and_joins_it_later(store, master):
    """As in local_cache: no job without a load (a syndic's own job is not the top's), the minions wait for it."""
    opts, settings = master
    relay_returner.save_minions(store, settings, JID, ["m2", "m1"], syndic_id="syndic-1")
    assert relay_returner.get_load(store, settings, JID) == {}
    assert JID not in relay_returner.get_jids(store, settings)
    relay_returner.save_load(store, settings, JID, PUBLISH, ["top-minion"], opts)
    assert relay_returner.get_load(store, settings, JID) == dict(PUBLISH, Minions=["m1", "m2", "top-minion"])


def test_save_minions_of_several_syndics_add_up_with_the_publish_list(store, master):
    """A master-of-masters: its own minions at publish time, then each syndic's (local_cache's union)."""
    opts, settings = master
    relay_returner.save_load(store, settings, JID, PUBLISH, ["top-minion"], opts)
    relay_returner.save_minions(store, settings, JID, ["s1-b", "s1-a"], syndic_id="syndic-1")
    relay_returner.save_minions(store, settings, JID, ["s2-a", "s1-a"], syndic_id="syndic-2")
    relay_returner.save_minions(store, settings, JID, ["s2-a"], syndic_id="syndic-2")  # Salt repeats itself
    assert relay_returner.get_load(store, settings, JID) == dict(PUBLISH, Minions=["s1-a", "s1-b", "s2-a", "top-minion"])
    with store.connect() as conn:
        reported = conn.exec_driver_sql("SELECT minion_id, syndic_id FROM job_minions ORDER BY minion_id").all()
    assert [tuple(row) for row in reported] == [("s1-a", "syndic-1"), ("s1-b", "syndic-1"), ("s2-a", "syndic-2")]


def test_a_syndic_node_master_keeps_its_master_id_in_the_load_it_publishes(tmp_path, url, store):
    """The load a syndic forwards up names the node master (as its payload did), unless it came down from a top."""
    opts = {"__role": "master", "id": "node-1", "master_id": "node-1", "cachedir": str(tmp_path / "cache")}
    settings = config.resolve(config.load({"database_url": url}), opts)
    relay_returner.save_load(store, settings, JID, PUBLISH, ["m1"], opts)
    assert relay_returner.get_load(store, settings, JID) == dict(PUBLISH, master_id="node-1", Minions=["m1"])
    from_top = "20261125120000000002"
    relayed = dict(PUBLISH, jid=from_top, kwargs={"master_id": "top"})
    relay_returner.save_load(store, settings, from_top, relayed, ["m1"], opts)
    everything = config.resolve(config.load({"database_url": url, "read_scope": "all"}), opts)
    assert relay_returner.get_load(store, everything, from_top) == dict(relayed, Minions=["m1"])


def test_on_a_master_a_load_the_database_refuses_is_kept_and_served(down, master, minion):
    opts, settings = master
    bad = Store(down)
    relay_returner.save_load(bad, settings, JID, PUBLISH, ["m1"], opts)
    assert paths.pending_load(opts, JID).is_file()
    assert relay_returner.get_load(bad, settings, JID, opts) == dict(PUBLISH, Minions=["m1"])
    with pytest.raises(StoreError):  # a minion has nowhere to keep it: the caller hears of it
        relay_returner.save_load(bad, minion[1], JID, PUBLISH, ["m1"], minion[0])


@pytest.mark.parametrize("role", ["minion", "master"])
def test_returner_without_an_engine_writes_directly(store, minion, master, role):
    opts, settings = minion if role == "minion" else master
    relay_returner.returner(store, settings, dict(RET, out="nested"), opts)
    assert relay_returner.get_jid(store, settings, JID) == {"m1": {"return": True, "retcode": 0, "success": True, "out": "nested"}}
    assert store.read(queries.returns_of_minion, "m1")[0].master_id == settings.master_id
    assert not paths.outbox(opts).exists() or outbox_records(opts) == []


def test_returner_allocates_a_jid_for_req(store, minion):
    opts, settings = minion
    relay_returner.returner(store, settings, dict(RET, jid="req"), opts)
    (row,) = store.read(queries.returns_of_minion, "m1")
    assert row.jid != "req" and jids.jid_time(row.jid) is not None


def test_with_a_live_engine_a_master_hands_returns_and_events_to_the_outbox(store, master):
    opts, settings = master
    start_engine_heartbeat(opts)
    relay_returner.returner(store, settings, RET, opts)
    relay_returner.event_return(store, settings, [{"tag": "custom/a", "data": {"x": 1}}], opts)
    assert outbox_records(opts) == [
        {"k": "ret", "ret": RET, "m": "master-1"},
        {"k": "events", "events": [{"tag": "custom/a", "data": {"x": 1}}], "m": "master-1"},
    ]
    assert store.read(queries.counts) == {"jobs": 0, "returns": 0, "events": 0}


def test_returner_refuses_a_return_that_is_not_a_mapping_or_has_no_id(store, minion):
    opts, settings = minion
    with pytest.raises(RecordError, match="a return must be a mapping, got str"):
        relay_returner.returner(store, settings, "True", opts)
    with pytest.raises(RecordError, match="missing id"):
        relay_returner.returner(store, settings, {"jid": JID, "return": True}, opts)
    assert store.read(queries.counts)["returns"] == 0


def test_event_return_stores_directly_and_skips_a_malformed_event(store, master):
    opts, settings = master
    relay_returner.event_return(store, settings, [], opts)  # Salt's call for every filtered event
    relay_returner.event_return(store, settings, [{"tag": "custom/a", "data": {"x": 1}}, {"data": "no tag"}, {"tag": "custom/b"}], opts)
    with store.connect() as conn:
        tags = sorted(row.tag for row in conn.exec_driver_sql("SELECT tag FROM events"))
    assert tags == ["custom/a", "custom/b"]


def test_event_return_on_a_master_keeps_the_batch_in_the_outbox_when_the_database_fails(down, master):
    opts, settings = master
    events = [{"tag": "custom/a", "data": {"x": 1}}]
    relay_returner.event_return(Store(down), settings, events, opts)  # no raise: Salt would drop the batch
    assert outbox_records(opts) == [{"k": "events", "events": events, "m": "master-1"}]
    with pytest.raises(StoreError):  # no master, no outbox: the failure is the caller's
        relay_returner.event_return(Store(down), settings, events)


def test_reads_have_local_cache_shapes(store, minion):
    _, settings = minion
    jobs = {JID: PUBLISH, "20261125120000000002": dict(PUBLISH, fun="saltutil.find_job"), "20261125120000000003": dict(PUBLISH, fun="x.y")}
    for jid, load in jobs.items():
        relay_returner.save_load(store, settings, jid, dict(load, jid=jid), ["m1"])
    relay_returner.returner(store, settings, RET, {})
    relay_returner.returner(store, settings, dict(RET, id="m0", jid="20261125120000000003", fun="test.ping", success=None), {})
    ended = "2026, Nov 25 12:00:05.123456"  # salt.utils.jid.jid_to_time's format, as Salt passes it
    relay_returner.update_endtime(store, settings, JID, ended)
    assert (
        relay_returner.get_endtime(store, settings, JID) == ended
        and relay_returner.get_endtime(store, settings, "20261125120000000002") is False
    )
    assert relay_returner.get_jid(store, settings, JID) == {"m1": {"return": True, "retcode": 0, "success": True}}
    assert (
        relay_returner.get_jid(store, settings, "20261125120000000009") == {}
        and relay_returner.get_load(store, settings, "20261125120000000009") == {}
    )
    assert relay_returner.get_fun(store, settings, "test.ping") == {"m0": True, "m1": True}
    assert relay_returner.get_minions(store, settings) == ["m0", "m1"]
    expected = {jid: salt.utils.jid.format_jid_instance(jid, dict(load, jid=jid)) for jid, load in jobs.items()}
    expected[JID]["EndTime"] = ended
    assert relay_returner.get_jids(store, settings) == expected
    ext = {jid: salt.utils.jid.format_jid_instance_ext(jid, dict(load, jid=jid)) for jid, load in jobs.items()}
    ext[JID]["EndTime"] = ended
    assert relay_returner.get_jids_filter(store, settings, 2) == [ext[JID], ext["20261125120000000003"]]  # oldest first
    assert relay_returner.get_jids_filter(store, settings, 2, False) == [ext["20261125120000000002"], ext["20261125120000000003"]]


def test_clean_old_jobs_uses_keep_jobs_seconds(store, url):
    old = jids.time_to_jid(jids.utcnow() - datetime.timedelta(hours=2))
    new = jids.time_to_jid(jids.utcnow())
    opts = {"__role": "minion", "id": "m1"}
    forever = config.resolve(config.load({"database_url": url, "keep_jobs_seconds": 0}), opts)
    for jid in (old, new):
        relay_returner.save_load(store, forever, jid, dict(PUBLISH, jid=jid))
        relay_returner.returner(store, forever, dict(RET, jid=jid), opts)
    assert relay_returner.clean_old_jobs(store, forever) == {"jobs": 0, "returns": 0, "events": 0}
    hour = config.resolve(config.load({"database_url": url, "keep_jobs_seconds": 3600}), opts)
    assert relay_returner.clean_old_jobs(store, hour) == {"jobs": 1, "returns": 1, "events": 0}
    assert relay_returner.get_load(store, hour, old) == {} and relay_returner.get_load(store, hour, new)["fun"] == "test.ping"


def test_resolve_settings_is_cached_per_opts_object(tmp_path, monkeypatch):
    first, second = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    opts = {"__role": "minion", "id": "m1", "relay.database_url": first}
    settings = relay_returner.resolve_settings(opts)
    assert settings.database_url == first and relay_returner.resolve_settings(opts) is settings
    opts["relay.database_url"] = second
    assert relay_returner.resolve_settings(opts) is settings  # within CONFIG_CACHE_SECONDS
    assert relay_returner.resolve_settings(dict(opts)).database_url == second  # another opts object
    assert relay_returner.resolve_settings(opts, ret={"ret_kwargs": {"database_url": first}}).database_url == first
    monkeypatch.setattr(relay_returner, "CONFIG_CACHE_SECONDS", 0.0)  # the cache has expired
    assert relay_returner.resolve_settings(opts).database_url == second


def test_store_for_keeps_one_store_per_url(tmp_path, minion):
    opts, settings = minion
    again = config.resolve(config.load({"database_url": settings.database_url}), dict(opts))
    other = config.resolve(config.load({"database_url": f"sqlite:///{tmp_path / 'other.db'}"}), opts)
    store = relay_returner.store_for(settings)
    assert store.database_url == settings.database_url and relay_returner.store_for(again) is store
    assert relay_returner.store_for(other) is not store and relay_returner.store_for(other).database_url == other.database_url
