"""The returner through Salt's own loader with master opts, no daemons."""

import pytest
import salt.config
import salt.minion

from salt_engine_lib import paths

JID = "20261125120000000001"


@pytest.fixture
def returners(tmp_path):
    opts = salt.config.master_config("/dev/null")
    opts["cachedir"] = str(tmp_path / "cache")
    opts["relay"] = {"database_url": f"sqlite:///{tmp_path / 'relay.db'}"}
    return salt.minion.MasterMinion(opts).returners, opts


def test_every_job_cache_function_is_loaded(returners):
    loaded, _ = returners
    for name in (
        "prep_jid",
        "save_load",
        "get_load",
        "save_minions",
        "get_jid",
        "get_fun",
        "get_jids",
        "get_jids_filter",
        "get_minions",
        "clean_old_jobs",
        "update_endtime",
        "get_endtime",
        "returner",
        "event_return",
    ):
        assert f"relay.{name}" in loaded, name


def test_whole_two_mebibyte_return_is_stored(returners):
    loaded, _ = returners
    big = "x" * (2 * 1024 * 1024)
    loaded["relay.save_load"](JID, {"fun": "file.read", "arg": ["/x"], "tgt": "m1", "tgt_type": "glob"}, ["m1"])
    loaded["relay.returner"]({"id": "m1", "jid": JID, "fun": "file.read", "return": big, "retcode": 0, "success": True})
    assert loaded["relay.get_jid"](JID)["m1"]["return"] == big


def test_return_loads_never_overwrite_the_publish_load(returners):
    loaded, _ = returners
    loaded["relay.save_load"](JID, {"fun": "test.ping", "arg": [], "tgt": "*", "tgt_type": "glob", "user": "root"}, ["m1"])
    loaded["relay.save_load"](JID, {"cmd": "_return", "id": "m1", "jid": JID, "fun": "test.ping", "return": True})
    load = loaded["relay.get_load"](JID)
    assert load["tgt"] == "*" and load["user"] == "root" and load["Minions"] == ["m1"]


def test_event_return_accepts_an_empty_list_and_stores_events(returners):
    loaded, opts = returners
    loaded["relay.event_return"]([])
    loaded["relay.event_return"]([{"tag": "custom/a", "data": {"v": 1}}, {"tag": "custom/b", "data": {"v": 2}}])
    from salt_engine_lib.store import Store, queries

    assert Store(opts["relay"]["database_url"]).read(queries.counts)["events"] == 2


def test_write_behind_when_the_engine_is_alive(returners):
    """With a live engine the returner only appends to the outbox: no SQL on the hot path."""
    loaded, opts = returners
    heartbeat = paths.engine_stats(opts)
    heartbeat.parent.mkdir(parents=True)
    heartbeat.write_text("{}")  # what a running engine keeps fresh
    loaded["relay.save_load"](JID, {"fun": "test.ping", "arg": [], "tgt": "*"}, ["m1"])
    return_load = {"id": "m1", "jid": JID, "fun": "test.ping", "return": True, "retcode": 0}
    # the per-return sequence of salt.utils.job.store_job
    loaded["relay.save_load"]("20261125120000000002", dict(return_load, jid="20261125120000000002"))
    loaded["relay.returner"](return_load)
    assert loaded["relay.get_jid"](JID) == {}
    assert loaded["relay.get_load"]("20261125120000000002") == {}
    from salt_engine_lib.forwarder import Forwarder, StoreSink
    from salt_engine_lib.outbox_drainer import OutboxDrainer
    from salt_engine_lib.store import Store

    sink = StoreSink(Store(opts["relay"]["database_url"]))
    journal = Forwarder(paths.journal(opts), sink, max_bytes=1 << 30)
    OutboxDrainer(opts, journal, sink).drain_once()  # the engine's threads, one step each
    assert loaded["relay.get_jid"](JID) == {}  # journaled, not yet stored
    journal.forward_once()
    assert loaded["relay.get_jid"](JID) == {"m1": {"return": True, "retcode": 0}}
    assert loaded["relay.get_load"]("20261125120000000002")["fun"] == "test.ping"
    assert loaded["relay.get_load"](JID)["Minions"] == ["m1"]


def test_bad_config_is_a_salt_invocation_error(returners):
    from salt.exceptions import SaltInvocationError

    loaded, opts = returners
    opts["relay"]["batch_size"] = "abc"
    with pytest.raises(SaltInvocationError, match="relay:batch_size must be a positive integer"):
        loaded["relay.get_jids"]()
