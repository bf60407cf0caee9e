"""The returner as master_job_cache, and the engine, against a real master and minion."""

import json

import pytest
import sqlalchemy as sa

from salt_engine_lib import paths
from salt_engine_lib.store import Store, queries
from salt_engine_lib.store.schema import events

from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(relay_database_url):
    return Store(relay_database_url)


@pytest.fixture(scope="module")
def ping_jid(salt_cli, salt_minion, store):
    result = salt_cli.run("test.ping", minion_tgt=salt_minion.id)
    assert result.returncode == 0, result
    assert result.data is True
    pings = [row.jid for row in store.read(queries.list_jobs, limit=20) if row.load.get("fun") == "test.ping"]
    assert pings, "the publish load of test.ping is not in the jobs table"
    return pings[0]


def test_salt_prints_returns_with_relay_job_cache(salt_cli, salt_minion):
    result = salt_cli.run("test.echo", "hello relay", minion_tgt=salt_minion.id)
    assert result.returncode == 0, result
    assert result.data == "hello relay"


def test_job_and_return_stored_in_sql(store, ping_jid, salt_minion):
    load = store.read(queries.get_load, ping_jid)
    assert load["fun"] == "test.ping"
    assert load["Minions"] == [salt_minion.id]
    assert store.read(queries.get_jid, ping_jid)[salt_minion.id]["return"] is True


def test_lookup_jid_reads_from_relay(salt_run_cli, ping_jid, salt_minion):
    result = salt_run_cli.run("jobs.lookup_jid", ping_jid)
    assert result.returncode == 0, result
    assert result.data == {salt_minion.id: True}


def test_list_job_has_minions(salt_run_cli, ping_jid, salt_minion):
    result = salt_run_cli.run("jobs.list_job", ping_jid)
    assert result.returncode == 0, result
    assert result.data["Minions"] == [salt_minion.id]
    assert result.data["Function"] == "test.ping"
    assert result.data["Result"][salt_minion.id]["return"] is True


def test_list_jobs_and_filter(salt_run_cli, ping_jid):
    listed = salt_run_cli.run("jobs.list_jobs")
    assert listed.returncode == 0, listed
    assert listed.data[ping_jid]["Function"] == "test.ping"
    filtered = salt_run_cli.run("jobs.list_jobs_filter", "50")
    assert filtered.returncode == 0, filtered
    assert ping_jid in [job["JID"] for job in filtered.data]


def test_runner_jobs_are_stored(salt_run_cli, store):
    result = salt_run_cli.run("test.arg", "relay-runner-arg")
    assert result.returncode == 0, result
    # stored write-behind by the engine: wait for it
    runner_jobs = wait_for(
        lambda: [row for row in store.read(queries.list_jobs, limit=50) if (row.load or {}).get("fun") == "runner.test.arg"]
    )
    assert runner_jobs, "runner job missing from the jobs table"
    returned = wait_for(lambda: store.read(queries.get_jid, runner_jobs[0].jid))
    assert returned, "runner return missing"


def test_engine_stores_bus_events(store, ping_jid, salt_minion):
    def stored_tags():
        with store.connect() as conn:
            return {row.tag for row in conn.execute(sa.select(events.c.tag).where(events.c.tag.like(f"salt/job/{ping_jid}/%")))}

    tags = wait_for(lambda: {f"salt/job/{ping_jid}/new", f"salt/job/{ping_jid}/ret/{salt_minion.id}"} <= stored_tags())
    assert tags, f"engine did not store the job's events: {stored_tags()}"


def _stored_event_tags(store, prefix):
    with store.connect() as conn:
        return {row.tag for row in conn.execute(sa.select(events.c.tag).where(events.c.tag.like(f"{prefix}%")))}


def test_custom_tags_are_stored_by_default(salt_call_cli, salt_run_cli, store):
    """No include_tags configured: a site's own events reach SQL (issue #14)."""
    sent = salt_call_cli.run("event.send", "mycompany/deploy/done", '{"release": "42"}')
    assert sent.returncode == 0 and sent.data is True, sent
    fired = salt_run_cli.run("event.send", "mycompany/orchestration/stage1", '{"ok": true}')
    assert fired.returncode == 0, fired
    wanted = {"mycompany/deploy/done", "mycompany/orchestration/stage1"}
    assert wait_for(lambda: wanted <= _stored_event_tags(store, "mycompany/")), _stored_event_tags(store, "mycompany/")


def test_engine_counts_filtered_events(salt_master, ping_jid):
    stats_file = paths.engine_stats(salt_master.config)
    stats = wait_for(lambda: json.loads(stats_file.read_text()) if stats_file.exists() else None)
    assert stats["accepted"] > 0
    # salt/auth events of the minion's authentication are excluded by default
    assert wait_for(lambda: json.load(open(stats_file))["dropped"].get("excluded_tag", 0) > 0)


def test_salt_call_ret_get_jids_with_pillar_config(salt_call_cli, ping_jid):
    result = salt_call_cli.run("ret.get_jids", "relay")
    assert result.returncode == 0, result
    assert ping_jid in result.data


def test_salt_call_ret_get_jid(salt_call_cli, ping_jid, salt_minion):
    result = salt_call_cli.run("ret.get_jid", "relay", ping_jid)
    assert result.returncode == 0, result
    assert result.data[salt_minion.id]["return"] is True
