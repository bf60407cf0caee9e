"""A Salt 3007+ master cluster (two masters, one minion) writing into one PostgreSQL store.

Both masters run the relay engine and use relay as master_job_cache. They
share ``cluster_pki_dir`` and ``cachedir`` (Salt's shared-filesystem cluster),
have one ``cluster_id`` and name each other in ``cluster_peers``: 127.0.0.1
and 127.0.0.2, same ports on different interfaces, as Salt's own cluster
tests set it up. Peers forward their bus events to each other, so both
engines see every job's events; the store must keep each row once, in the
cluster's namespace, and either master must read the whole cluster back.
"""

import json
import logging
import pathlib
import time

import pytest
import salt.channel.server
import salt.config

from tests.support.databases import server_database
from tests.support.ports import free_port
from tests.support.waiting import wait_for

log = logging.getLogger(__name__)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgresql,
    pytest.mark.timeout(420),
    pytest.mark.skipif(
        "cluster_id" not in salt.config.DEFAULT_MASTER_OPTS,
        reason="this Salt has no master cluster (no cluster_id master option: Salt < 3007)",
    ),
]

CLUSTER_ID = "relay_cluster"
# Salt (3007) keys the peers' AES exchange by the master ids, which must be the
# names in cluster_peers: the masters are named after their interfaces.
MASTER_1, MASTER_2 = "127.0.0.1", "127.0.0.2"
MINION = "relay-cluster-minion"
# Salt 3008+: a master joins the cluster (discover -> join-reply) when it starts.
JOINS = hasattr(getattr(salt.channel.server, "MasterPubServerChannel", None), "_has_joined_cluster")


@pytest.fixture(scope="module")
def database_url():
    with server_database("postgresql", prefix="relay_cluster") as url:
        yield url


@pytest.fixture(scope="module")
def cluster_root(salt_factories):
    """The cluster's directory: each master's root_dir, the shared ``pki`` and ``cache`` (one shared filesystem in production)."""
    root = pathlib.Path(salt_factories.root_dir, "relay-cluster")
    (root / "pki" / "peers").mkdir(parents=True)
    (root / "cache").mkdir()
    return root


def master_overrides(interface, peer, database_url, cluster_root, pool_port):
    return {
        "interface": interface,
        "cluster_id": CLUSTER_ID,
        "cluster_peers": [peer],
        "cluster_pki_dir": str(cluster_root / "pki"),
        # Relative to the master's root_dir: Salt prefixes an absolute cachedir with the root_dir
        # (salt.config.prepend_root_dir), which would give each master a cache of its own.
        "cachedir": "../cache",
        # Not Salt's default 4520: other runs on this machine may hold it.
        "cluster_pool_port": pool_port,
        "master_job_cache": "relay",
        "engines": [{"relay": {"batch_max_wait": 0.1}}],
        "relay": {"database_url": database_url},
        "loop_interval": 5,
        "log_level_logfile": "info",
    }


def master_defaults(cluster_root, master_id):
    return {"open_mode": True, "root_dir": str(cluster_root / master_id)}


@pytest.fixture(scope="module")
def pool_port():
    return free_port()


@pytest.fixture(scope="module")
def master_1(salt_factories, database_url, cluster_root, pool_port):
    factory = salt_factories.salt_master_daemon(
        MASTER_1,
        defaults=master_defaults(cluster_root, MASTER_1),
        overrides=master_overrides(MASTER_1, MASTER_2, database_url, cluster_root, pool_port),
    )
    with factory.started(start_timeout=180):
        yield factory


@pytest.fixture(scope="module")
def master_2(salt_factories, master_1, database_url, cluster_root, pool_port):
    overrides = master_overrides(MASTER_2, MASTER_1, database_url, cluster_root, pool_port)
    # The same ports as master 1, on the other interface.
    overrides.update(ret_port=master_1.config["ret_port"], publish_port=master_1.config["publish_port"])
    factory = salt_factories.salt_master_daemon(MASTER_2, defaults=master_defaults(cluster_root, MASTER_2), overrides=overrides)
    keys = {name: cluster_root / "pki" / name for name in ("cluster.pem", "cluster.pub")}
    founded = {name: path.read_bytes() for name, path in keys.items()}  # master 1's cluster key pair
    with factory.started(start_timeout=180):
        if JOINS:
            joined = wait_for(lambda: (cluster_root / "cache" / f".cluster_joined.{MASTER_2}").exists(), timeout=60)
            assert joined, "master 2 did not complete its cluster join within 60 s"
            if any(path.read_bytes() != founded[name] for name, path in keys.items()):
                restore_cluster_key(factory, keys, founded)
        assert all(path.read_bytes() == founded[name] for name, path in keys.items()), "the cluster key pair changed"
        yield factory


def restore_cluster_key(factory, keys, founded):
    """Undo a Salt 3008 join race: master 2 replaced the shared cluster key pair master 1 signs with.

    Installing the join-reply's key (salt/channel/server.py) unlinks and rewrites
    cluster.pem; master 2's publisher process, starting meanwhile, finds no
    cluster.pem and writes a new pair over it, so minions then fail to verify
    master 1 ("Unable to decrypt message"). Master 1's pair goes back and
    master 2 restarts on it; it has joined (its sentinel is written), so it does not join again.
    """
    log.warning("Salt's join replaced the shared cluster key pair; restoring master 1's and restarting %s", factory.id)
    for name, path in keys.items():
        path.unlink()
        path.write_bytes(founded[name])
        path.chmod(0o400)
    factory.terminate()
    factory.start(start_timeout=180)


@pytest.fixture(scope="module")
def minion(master_1, master_2):
    # Connected to master 1 only, as in Salt's cluster tests: master 2's jobs reach it through the cluster.
    overrides = {"master": f"{MASTER_1}:{master_1.config['ret_port']}", "multiprocessing": False}
    factory = master_1.salt_minion_daemon(MINION, overrides=overrides)
    # One attempt: a minion the cluster does not authenticate fails the same way again (3 x 60 s).
    with factory.started(start_timeout=60, max_start_attempts=1):
        yield factory


def load_of(value):
    return json.loads(value) if isinstance(value, str) else value


def echo_jid(reader, word):
    """The jid of the stored test.echo job whose argument is ``word``."""
    for jid, load in reader.rows("SELECT jid, load FROM jobs WHERE fun = 'test.echo'"):
        if word in (load_of(load) or {}).get("arg", []):
            return jid
    return None


@pytest.fixture(scope="module")
def published(master_1, master_2, minion, reader):
    """A test.echo job published on each master: {master id: (CLI result, jid)}."""
    done = {}
    for master in (master_1, master_2):
        word = f"from-{master.id}"
        result = master.salt_cli(timeout=120).run("test.echo", word, minion_tgt=minion.id)
        jid = wait_for(lambda word=word: echo_jid(reader, word), timeout=30)
        done[master.id] = (result, word, jid)
    return done


def test_minion_answers_jobs_published_on_either_master(published, minion):
    """The minion, connected to master 1, answers a job published on master 1 and one published on master 2."""
    for master_id, (result, word, jid) in published.items():
        assert result.returncode == 0, (master_id, result)
        assert result.data == word, (master_id, result)
        assert jid, f"the job published on {master_id} is not in the jobs table"


def stored(reader, jids):
    """The two jobs' rows: (jobs, returns, events of their returns)."""
    params = {"a": jids[0], "b": jids[1]}
    jobs = reader.rows("SELECT jid, namespace, master_id FROM jobs WHERE jid IN (:a, :b)", **params)
    rets = reader.rows("SELECT jid, minion_id, namespace, master_id FROM returns WHERE jid IN (:a, :b)", **params)
    tags = [f"salt/job/{jid}/ret/{MINION}" for jid in jids]
    events = reader.rows("SELECT tag FROM events WHERE tag IN (:a, :b)", a=tags[0], b=tags[1])
    return jobs, rets, events


def test_each_job_stored_once_in_the_cluster_namespace(published, reader):
    """Both engines capture both jobs' events (peers forward them): one jobs row per jid, one return per minion, no doubled event."""
    jids = [jid for _, _, jid in published.values()]
    assert all(jids), published
    assert wait_for(lambda: all(len(found) >= 2 for found in stored(reader, jids)), timeout=60), stored(reader, jids)
    # The forwarded copies reach the other engine a little later; give both engines
    # many batch windows (batch_max_wait 0.1 s) to store what they would double.
    time.sleep(5)
    jobs, rets, _ = stored(reader, jids)
    counts = reader.counts()
    event_masters = reader.rows("SELECT master_id, count(*) FROM events GROUP BY master_id ORDER BY master_id")
    print(f"\ncluster store: {counts}; events by master_id: {event_masters}; jobs: {sorted(jobs)}; returns: {sorted(rets)}")
    assert reader.rows("SELECT jid, count(*) FROM jobs GROUP BY jid HAVING count(*) > 1") == []
    assert reader.rows("SELECT jid, minion_id, count(*) FROM returns GROUP BY jid, minion_id HAVING count(*) > 1") == []
    assert sorted((jid, minion) for jid, minion, _, _ in rets) == sorted((jid, MINION) for jid in jids)
    # A job is the publishing master's; the minion, connected to master 1, returns through it.
    assert {jid: master for jid, _, master in jobs} == {jid: master_id for master_id, (_, _, jid) in published.items()}
    assert {master for _, _, _, master in rets} == {MASTER_1}
    for table in ("jobs", "returns", "events"):
        assert reader.rows(f"SELECT DISTINCT namespace FROM {table}") == [(CLUSTER_ID,)], table
    assert dict(reader.rows("SELECT master_id, namespace FROM relay_engines")) == {MASTER_1: CLUSTER_ID, MASTER_2: CLUSTER_ID}
    for jid in jids:
        by_tag = dict(reader.rows("SELECT tag, count(*) FROM events WHERE tag LIKE :p GROUP BY tag", p=f"salt/job/{jid}/%"))
        assert by_tag.get(f"salt/job/{jid}/new") == 1, by_tag
        assert by_tag.get(f"salt/job/{jid}/ret/{MINION}") == 1, by_tag
        assert {tag: n for tag, n in by_tag.items() if n > 1} == {}, by_tag
    assert reader.rows("SELECT content_key, count(*) FROM events GROUP BY content_key HAVING count(*) > 1") == []
    # One bus event stored twice: the same tag and _stamp, whatever Salt added to the peer's copy (__peer_id).
    doubled = reader.rows("SELECT tag, stamp, count(*) FROM events GROUP BY tag, stamp HAVING count(*) > 1 ORDER BY tag")
    assert doubled == [], doubled


@pytest.mark.parametrize("reading", [MASTER_1, MASTER_2])
def test_either_master_reads_the_whole_cluster(published, reading, master_1, master_2):
    """Under the default read_scope (cluster, as cluster_id is set) each master lists both jobs and looks up either one."""
    master = {MASTER_1: master_1, MASTER_2: master_2}[reading]
    run = master.salt_run_cli(timeout=120)
    listed = run.run("jobs.list_jobs")
    assert listed.returncode == 0, listed
    for _, word, jid in published.values():
        assert jid in listed.data, (jid, sorted(listed.data))
        assert listed.data[jid]["Function"] == "test.echo"
        looked_up = run.run("jobs.lookup_jid", jid)
        assert looked_up.returncode == 0, looked_up
        assert looked_up.data == {MINION: word}, looked_up
