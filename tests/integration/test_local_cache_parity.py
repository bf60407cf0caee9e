"""relay answers Salt's jobs.* runners as local_cache does (GitHub issue #5).

Two masters run the same jobs: one with Salt's default job cache
(``local_cache``), one with ``master_job_cache: relay`` plus the relay engine,
whose database is SQLite, MariaDB or PostgreSQL (one relay master per
dialect; the local_cache master and its answers are shared by all three).
Each ``salt-run jobs.*`` answer is normalized (parity_helpers.Normalizer says
what is mapped or dropped, and why) and must then be equal.

Last: ``salt <minion> ... --return relay`` with the minions' relay config in
pillar, and ``salt-call ret.get_jids relay`` / ``ret.get_jid relay <jid>``.
"""

import json

import pytest

from salt_engine_lib.store import Store, queries
from tests.integration import parity_helpers as ph
from tests.support import databases as dbs
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

DIALECTS = [
    "sqlite",
    pytest.param("mysql", marks=pytest.mark.mysql),
    pytest.param("postgresql", marks=pytest.mark.postgresql),
]
# Minion ids must differ per master (and per relay master: the factories'
# root directory is shared by the session).
PREFIX = {"sqlite": "rs", "mysql": "rm", "postgresql": "rp"}
# --return_config profile in the relay minions' pillar: a database only minions write.
PROFILE = "minionside"

# -- masters ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_cluster(salt_factories):
    master = salt_factories.salt_master_daemon("lc-master", overrides=dict(ph.COMMON_MASTER_CONFIG))
    with master.started(start_timeout=120), ph.started_minions(master, "lc") as minions:
        cluster = ph.Cluster("local_cache", "lc", master, minions)
        ph.add_ghost_key(cluster)
        yield cluster


@pytest.fixture(scope="module", params=DIALECTS)
def relay_databases(request, tmp_path_factory):
    """(dialect, the job cache's database URL, the --return_config profile's database URL)."""
    directory = tmp_path_factory.mktemp(f"parity-{request.param}")
    with dbs.fresh_database(request.param, directory) as job_cache_url:
        with dbs.fresh_database(request.param, directory) as profile_url:
            yield request.param, job_cache_url, profile_url


@pytest.fixture(scope="module")
def relay_cluster(salt_factories, relay_databases):
    dialect, url, profile_url = relay_databases
    prefix = PREFIX[dialect]
    overrides = {
        **ph.COMMON_MASTER_CONFIG,
        "master_job_cache": "relay",
        "engines": [{"relay": {"batch_max_wait": 0.1}}],
        "relay": {"database_url": url},
    }
    master = salt_factories.salt_master_daemon(f"{prefix}-master", overrides=overrides)
    # The minions get their relay config from pillar only (read by
    # --return relay and salt-call ret.*).
    ph.write_pillar(
        master,
        {
            "top.sls": "base:\n  '*':\n    - relay\n",
            "relay.sls": (f"relay:\n  database_url: {json.dumps(url)}\n{PROFILE}.relay:\n  database_url: {json.dumps(profile_url)}\n"),
        },
    )
    with master.started(start_timeout=120), ph.started_minions(master, prefix) as minions:
        cluster = ph.Cluster("relay", prefix, master, minions, store=Store(url))
        ph.add_ghost_key(cluster)
        yield cluster


@pytest.fixture(scope="module")
def profile_store(relay_databases):
    return Store(relay_databases[2])


# -- answers ------------------------------------------------------------------------


def _answers(cluster):
    ph.run_scenario(cluster)
    jids, raw = ph.collect_answers(cluster)
    return ph.Normalizer(cluster, jids).answers(raw)


@pytest.fixture(scope="module")
def local_answers(local_cluster):
    return _answers(local_cluster)


@pytest.fixture(scope="module")
def relay_answers(relay_databases, local_answers, relay_cluster):
    # In this order: a missing database server fails (or skips) at once;
    # local_cache's answers come before a relay master is started to idle.
    return _answers(relay_cluster)


# -- the reference is meaningful ------------------------------------------------------


def test_local_cache_answers_are_a_meaningful_reference(local_answers):
    """Guards the comparisons below against comparing two empty or broken answers."""
    m1, m2, ghost = "<minion-1>", "<minion-2>", "<ghost>"
    assert local_answers[("lookup_jid", ph.PING)] == {m1: True, m2: True}
    assert local_answers[("lookup_jid_missing", ph.ECHO)] == {m1: ph.ECHO_TEXT}
    assert local_answers[("lookup_jid_missing", ph.CMD_RUN)] == {m1: "hi", m2: "hi"}
    assert local_answers[("lookup_jid", ph.FAILED)] == {m2: ""}
    assert local_answers[("lookup_jid_missing", ph.FAILED)] == {m2: "", ghost: "Minion did not return"}
    failed = local_answers[("list_job", ph.FAILED)]
    assert failed["Minions"] == sorted([m2, ghost])
    assert failed["Result"] == {m2: {"return": "", "retcode": 3, "success": False}}
    runner = local_answers[("lookup_jid", ph.RUNNER)]["<master>"]
    assert runner["return"] == {"args": [ph.RUNNER_ARG], "kwargs": {}} and runner["success"] is True
    assert set(local_answers["list_jobs"]) == {f"<jid:{label}>" for label in ph.JOB_LABELS}
    assert [job["JID"] for job in local_answers["list_jobs_filter"]] == [f"<jid:{label}>" for label in ph.JOB_LABELS]
    assert list(local_answers["last_run"]) == ["<jid:runner>"]


# -- parity --------------------------------------------------------------------------


def _per_job_params():
    params = []
    for runner, labels in ph.PER_JOB_MATRIX.items():
        for label in labels:
            params.append(pytest.param(runner, label, id=f"{runner}-{label}"))
    return params


@pytest.mark.parametrize("runner, label", _per_job_params())
def test_per_job_runner_answers_like_local_cache(relay_answers, local_answers, runner, label):
    """jobs.lookup_jid, jobs.lookup_jid missing=True, jobs.list_job, jobs.print_job."""
    assert relay_answers[(runner, label)] == local_answers[(runner, label)]


def test_list_jobs_lists_the_same_jobs(relay_answers, local_answers):
    assert sorted(relay_answers["list_jobs"]) == sorted(local_answers["list_jobs"])


@pytest.mark.parametrize("label", ph.JOB_LABELS)
def test_list_jobs_entry_like_local_cache(relay_answers, local_answers, label):
    jid = f"<jid:{label}>"
    assert relay_answers["list_jobs"].get(jid) == local_answers["list_jobs"][jid]


def test_list_jobs_filter_same_jobs_in_same_order(relay_answers, local_answers):
    assert [job.get("JID") for job in relay_answers["list_jobs_filter"]] == [job["JID"] for job in local_answers["list_jobs_filter"]]


@pytest.mark.parametrize("label", ph.JOB_LABELS)
def test_list_jobs_filter_entry_like_local_cache(relay_answers, local_answers, label):
    def entry(listing):
        return next((job for job in listing if job.get("JID") == f"<jid:{label}>"), None)

    assert entry(relay_answers["list_jobs_filter"]) == entry(local_answers["list_jobs_filter"])


def test_last_run_like_local_cache(relay_answers, local_answers):
    assert relay_answers["last_run"] == local_answers["last_run"]


# -- --return relay and salt-call ret.* with the config from pillar ----------------------

RETURNED = "returned-by-minion"


@pytest.fixture(scope="module")
def returned_by_minion(relay_cluster, relay_answers, profile_store):
    """jid of ``salt <m2> test.echo ... --return relay --return_config minionside``.

    The minion's relay returner takes its database URL from pillar (profile
    ``minionside.relay``): a database the master never writes, so a row in
    it was written by the minion. The master stores the same job in its job
    cache (the pillar's plain ``relay:`` block, read by salt-call ret.*).
    """
    minion = relay_cluster.m2
    result = relay_cluster.salt("test.echo", RETURNED, "--return", "relay", "--return_config", PROFILE, minion_tgt=minion)
    assert result.returncode == 0 and result.data == RETURNED, result
    # A 3007 minion (multiprocessing: False) sometimes misses the master's reply to its
    # return and runs its returners only after _return_pub's 60 s timeout ("The minion
    # failed to return the job information"), though the master got the return at once.
    rows = wait_for(lambda: profile_store.read(queries.returns_of_minion, minion), timeout=90)
    assert len(rows) == 1, f"the minion's --return did not reach its pillar-configured database: {rows}"
    jid = rows[0].jid
    # the job cache's copy (write-behind) is there too before ret.get_jid reads it
    assert wait_for(lambda: minion in relay_cluster.store.read(queries.get_jid, jid), timeout=30)
    return jid


def test_return_relay_stores_in_the_database_from_pillar(relay_cluster, profile_store, returned_by_minion):
    minion = relay_cluster.m2
    (row,) = profile_store.read(queries.returns_of_minion, minion)
    assert (row.jid, row.fun, row.ret, row.retcode, row.success, row.master_id) == (
        returned_by_minion,
        "test.echo",
        RETURNED,
        0,
        True,
        None,  # None: written by a minion
    )
    assert profile_store.read(queries.get_jid, returned_by_minion) == {minion: {"return": RETURNED, "retcode": 0, "success": True}}
    # the job the master published, in its job cache
    load = relay_cluster.store.read(queries.get_load, returned_by_minion)
    assert (load["fun"], load["arg"], load["ret"], load["Minions"]) == ("test.echo", [RETURNED], "relay", [minion])


def test_salt_call_ret_get_jids_relay(relay_cluster, returned_by_minion):
    result = relay_cluster.minions[1].salt_call_cli(timeout=90).run("ret.get_jids", "relay")
    assert result.returncode == 0, result
    job = result.data[returned_by_minion]
    assert (job["Function"], job["Arguments"], job["Target"]) == ("test.echo", [RETURNED], relay_cluster.m2)


def test_salt_call_ret_get_jid_relay(relay_cluster, returned_by_minion, local_answers):
    minion = relay_cluster.m2
    result = relay_cluster.minions[1].salt_call_cli(timeout=90).run("ret.get_jid", "relay", returned_by_minion)
    assert result.returncode == 0, result
    assert result.data == {minion: {"return": RETURNED, "retcode": 0, "success": True}}
    # the keys local_cache's get_jid gives for a minion's return
    assert set(result.data[minion]) == set(local_answers[("list_job", ph.ECHO)]["Result"]["<minion-1>"])
