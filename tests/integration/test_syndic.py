"""A syndic topology on one store: a master-of-masters, a syndic, two minions behind it.

The top master (``order_masters``, Salt's ``master_id`` option set) and the
syndic node's own master both use relay as master_job_cache and run the
relay engine, on one MariaDB database. A job published on the top reaches the
minions through the syndic; both masters store it, and since its load and
returns carry the top's ``master_id`` they belong to the top's namespace and
collapse into one jobs row and one returns row per minion.
"""

import dataclasses
import json
import time
import uuid

import pytest
import salt.version

from tests.integration import multimaster
from tests.support.databases import server_database
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.mysql,
    # Measured on 3008.5 with this topology and with salt-relay on neither master
    # (nor as job cache): the syndic authenticates to the top, but every later
    # request to it (fire_master, _return_pub_multi) times out, so nothing a
    # syndic's minion returns reaches the top. The test runs on 3006 and 3007.
    pytest.mark.skipif(
        salt.version.__saltstack_version__.major >= 3008,
        reason="Salt 3008's syndic gets no answer from its master-of-masters here, with or without salt-relay",
    ),
]

TOP_ADDRESS, NODE_ADDRESS = "127.0.0.1", "127.0.0.2"

# Doubles across namespaces too: a jid in two namespaces is found here, whatever the keys allow.
JOBS_DOUBLED = "SELECT jid, count(*) FROM jobs GROUP BY jid HAVING count(*) > 1"
RETURNS_DOUBLED = "SELECT jid, minion_id, count(*) FROM returns GROUP BY jid, minion_id HAVING count(*) > 1"


@dataclasses.dataclass(frozen=True)
class Tree:
    """The ids of one syndic tree; ``syndic_mode`` is the node master's (Salt's ``sync`` default, or ``cluster``)."""

    syndic_mode: str
    top_id: str
    syndic_id: str
    minion_ids: tuple


@pytest.fixture(scope="module", params=["sync", "cluster"])
def tree(request):
    suffix = f"{request.param[:2]}{uuid.uuid4().hex[:4]}"
    return Tree(request.param, f"relay-top-{suffix}", f"relay-syn-{suffix}", (f"relay-synm-a-{suffix}", f"relay-synm-b-{suffix}"))


RELAY_ENGINE = [{"relay": {"batch_max_wait": 0.1}}]


def relay_overrides(database_url):
    return {
        "master_job_cache": "relay",
        "engines": RELAY_ENGINE,
        "relay": {"database_url": database_url},
        "loop_interval": 5,
        "log_level_logfile": "info",
    }


@pytest.fixture(scope="module")
def database_url(tree):
    with server_database("mysql", prefix="relay_syndic") as url:
        yield url


@pytest.fixture(scope="module")
def top(salt_factories, tree, database_url):
    # syndic_wait: how long the top's CLI waits for syndics to report their minions (default 5 s).
    overrides = {
        **relay_overrides(database_url),
        "interface": TOP_ADDRESS,
        "auto_accept": True,
        "master_id": tree.top_id,
        "syndic_wait": 2,
    }
    factory = salt_factories.salt_master_daemon(
        tree.top_id, order_masters=True, overrides=overrides, extra_cli_arguments_after_first_start_failure=["--log-level=info"]
    )
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="module")
def syndic(top, tree, database_url):
    """The syndic, its node master (127.0.0.2) and the node master's own minion, as Salt's syndic scenario tests build them.

    salt-factories' syndic config (master.d/syndic.conf) sets the node master's
    id and master_id to the syndic's id. The node master publishes on the top's
    publish port (a limit of Salt's syndic design: the syndic subscribes to the
    top on its node master's publish_port).
    """
    publish_port = top.config["publish_port"]
    factory = top.salt_syndic_daemon(
        tree.syndic_id,
        defaults={"interface": NODE_ADDRESS, "publish_port": publish_port},
        # The syndic's config (master.d/syndic.conf) is also the node master's, and its engines
        # list would replace the node master's: the relay engine goes in both.
        overrides={"engines": RELAY_ENGINE},
        master_overrides={
            **relay_overrides(database_url),
            "interface": NODE_ADDRESS,
            "auto_accept": True,
            "syndic_master": TOP_ADDRESS,
            "syndic_master_port": top.config["ret_port"],
            "syndic_mode": tree.syndic_mode,
        },
        minion_overrides={"master": NODE_ADDRESS, "publish_port": publish_port},
        extra_cli_arguments_after_first_start_failure=["--log-level=info"],
    )
    # salt-factories starts the node master and minion before the syndic but does not stop them after it.
    factory.after_terminate(factory.minion.terminate)
    factory.after_terminate(factory.master.terminate)
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="module")
def minions(syndic, tree):
    node = f"{NODE_ADDRESS}:{syndic.master.config['ret_port']}"
    factories = [
        syndic.master.salt_minion_daemon(minion_id, overrides={"master": node, "multiprocessing": False}) for minion_id in tree.minion_ids
    ]
    started = []
    try:
        for factory in factories:
            factory.start(start_timeout=120)
            started.append(factory)
        yield factories
    finally:
        for factory in reversed(started):
            factory.terminate()


def published_jid(event_listener, master_id, fun, marker, since):
    """The jid of the ``fun`` job carrying ``marker`` that ``master_id`` published after ``since`` (its bus, not the store)."""

    def find():
        for event in event_listener.get_events([(master_id, "salt/job/*/new")], after_time=since):
            if event.data.get("fun") == fun and marker in json.dumps(event.data.get("arg")):
                return event.data["jid"]
        return None

    return wait_for(find, timeout=30)


def answered(tree, result):
    """Our two minions' answers (a '*' job also reaches the syndic's own minion)."""
    assert result.returncode == 0, result
    return {minion_id: (result.data or {}).get(minion_id) for minion_id in tree.minion_ids}


@pytest.fixture(scope="module")
def top_jobs(tree, top, syndic, minions, event_listener):
    """{"ping": jid, "arg": jid}: a test.ping and a test.arg published on the top, answered through the syndic."""
    cli = top.salt_cli(timeout=90)
    since = time.time()
    ping = cli.run("test.ping", minion_tgt="*")
    assert answered(tree, ping) == dict.fromkeys(tree.minion_ids, True), ping
    marker = f"{tree.top_id}-arg"
    arg = cli.run("test.arg", marker, "second", f"key={marker}", minion_tgt="*")
    for minion_id, value in answered(tree, arg).items():
        assert value and value["args"] == [marker, "second"] and value["kwargs"]["key"] == marker, (minion_id, arg)
    # test.ping has no args to tell it apart: it is the only ping the top published since `since`.
    jids = {
        "ping": published_jid(event_listener, top.id, "test.ping", "[]", since),
        "arg": published_jid(event_listener, top.id, "test.arg", marker, since),
    }
    assert all(jids.values()), f"the top's bus carried no salt/job/<jid>/new for {jids}"
    print(f"[{tree.syndic_mode}] top jobs: {jids}; ping answered by {sorted(ping.data)}")
    return jids


@pytest.fixture(scope="module")
def node_job(tree, syndic, minions, event_listener):
    """The jid of a test.arg published on the syndic node's own master, answered by both minions."""
    cli = syndic.master.salt_cli(timeout=90)
    since = time.time()
    marker = f"{tree.syndic_id}-arg"
    result = cli.run("test.arg", marker, minion_tgt="*")
    for minion_id, value in answered(tree, result).items():
        assert value and value["args"] == [marker], (minion_id, result)
    jid = published_jid(event_listener, syndic.master.id, "test.arg", marker, since)
    assert jid, "the syndic node master's bus carried no salt/job/<jid>/new for the test.arg"
    print(f"[{tree.syndic_mode}] node job: {jid}; answered by {sorted(result.data)}")
    return jid


def returned_minions(reader, jid, namespace):
    query = "SELECT minion_id FROM returns WHERE jid = :jid AND namespace = :namespace"
    return {row[0] for row in reader.rows(query, jid=jid, namespace=namespace)}


def stored_returns(reader, jid):
    return reader.rows("SELECT minion_id, namespace, master_id FROM returns WHERE jid = :jid ORDER BY namespace, minion_id", jid=jid)


def run(factory, *args):
    result = factory.salt_run_cli(timeout=90).run(*args)
    assert result.returncode == 0, result
    return result.data


def test_top_jobs_answered_through_the_syndic(tree, top_jobs, reader):
    """Both minions behind the syndic answer the top's jobs, and their returns reach the store, in the top's namespace."""
    for jid in top_jobs.values():
        found = wait_for(lambda jid=jid: set(tree.minion_ids) <= returned_minions(reader, jid, tree.top_id), timeout=30)
        assert found, (jid, stored_returns(reader, jid))


def test_top_lookup_jid_and_list_job_show_both_minions(tree, top, syndic, top_jobs):
    """The top's jobs runner reads both minions' returns, and the syndic's minions are in the job's Minions."""
    for name, jid in top_jobs.items():
        looked_up = run(top, "jobs.lookup_jid", jid)
        assert set(tree.minion_ids) <= set(looked_up), looked_up
        if name == "ping":
            assert all(looked_up[minion_id] is True for minion_id in tree.minion_ids), looked_up

        def listed_with_both(jid=jid):
            # save_minions(syndic_id=...) arrives with the syndic's forwarded .../new event.
            data = run(top, "jobs.list_job", jid)
            return data if set(tree.minion_ids) <= set(data.get("Minions") or ()) else None

        listed = wait_for(listed_with_both, timeout=30)
        assert listed, run(top, "jobs.list_job", jid)
        print(f"[{tree.syndic_mode}] top list_job {name} {jid}: Minions={listed['Minions']} Result={sorted(listed.get('Result') or {})}")
        assert set(tree.minion_ids) <= set(listed["Result"]), listed
    top_list, node_list = run(top, "jobs.list_jobs"), run(syndic.master, "jobs.list_jobs")
    print(f"[{tree.syndic_mode}] read_scope master: top list_jobs {sorted(top_list)}; node list_jobs {sorted(node_list)}")
    assert set(top_jobs.values()) <= set(top_list), top_list
    # The node master relayed them, but they are the top's (their loads name it): not the node's own jobs.
    assert not set(top_jobs.values()) & set(node_list), node_list


def test_top_jobs_not_doubled(tree, top_jobs, reader):
    """Two masters storing one job from above: one jobs row per jid, one returns row per minion, in the top's namespace."""
    for jid in top_jobs.values():
        assert wait_for(lambda jid=jid: set(tree.minion_ids) <= returned_minions(reader, jid, tree.top_id), timeout=30)
    doubled_jobs = [row for row in reader.rows(JOBS_DOUBLED) if row[0] in top_jobs.values()]
    doubled_returns = [row for row in reader.rows(RETURNS_DOUBLED) if row[0] in top_jobs.values()]
    assert doubled_jobs == doubled_returns == []
    for jid in top_jobs.values():
        assert reader.rows("SELECT namespace, master_id FROM jobs WHERE jid = :jid", jid=jid) == [(tree.top_id, tree.top_id)]
        rows = [(minion_id, namespace) for minion_id, namespace, _ in stored_returns(reader, jid) if minion_id in tree.minion_ids]
        assert rows == [(minion_id, tree.top_id) for minion_id in tree.minion_ids], (jid, rows)


def test_node_job_stored_once(tree, top, syndic, node_job, reader):
    """A job published on the syndic node's master: one record, the node's, whichever master stored it.

    ``sync`` (Salt's default) forwards the job's load and returns to the top's
    job cache; the returns carry the node's master_id, the load names it too
    (relay keeps a publishing master's master_id in its load), so the top's
    copy collapses into the node's rows. ``cluster`` forwards no return whose
    master_id is the node's own. Either way the top's default scope (its own
    jobs) does not list it; ``read_scope: all`` on the top does.
    """
    minions = set(tree.minion_ids)
    assert wait_for(lambda: minions <= returned_minions(reader, node_job, tree.syndic_id), timeout=30), stored_returns(reader, node_job)
    # What the syndic forwards (sync) has had many forwarding rounds (syndic_event_forward_timeout 0.5 s).
    time.sleep(10)
    node_lookup, top_lookup = run(syndic.master, "jobs.lookup_jid", node_job), run(top, "jobs.lookup_jid", node_job)
    node_listed, top_listed = node_job in run(syndic.master, "jobs.list_jobs"), node_job in run(top, "jobs.list_jobs")
    jobs_rows = reader.rows("SELECT namespace, master_id FROM jobs WHERE jid = :jid ORDER BY namespace", jid=node_job)
    returns_rows = reader.rows("SELECT namespace, count(*) FROM returns WHERE jid = :jid GROUP BY namespace", jid=node_job)
    print(
        f"[{tree.syndic_mode}] node job {node_job}: jobs rows {jobs_rows}; returns per namespace {returns_rows}\n"
        f"read_scope master: node lookup_jid {sorted(node_lookup)}, top lookup_jid {sorted(top_lookup)}; "
        f"node list_jobs has it: {node_listed}; top list_jobs has it: {top_listed}"
    )
    assert minions <= set(node_lookup) and node_listed, node_lookup
    assert jobs_rows == [(tree.syndic_id, tree.syndic_id)], jobs_rows
    assert [namespace for namespace, _ in returns_rows] == [tree.syndic_id], returns_rows
    assert not top_lookup and not top_listed, top_lookup


def test_read_scope_all_on_either_master_reads_the_whole_tree(tree, top, syndic, top_jobs, node_job):
    """``read_scope: all``: the top lists and looks up the node's job, the node master the top's jobs."""
    every_jid = {*top_jobs.values(), node_job}
    seen = {}
    for master in (top, syndic.master):
        with multimaster.relay_option(master, "read_scope", "all"):
            listed = run(master, "jobs.list_jobs")
            looked_up = {jid: sorted(run(master, "jobs.lookup_jid", jid)) for jid in every_jid}
        seen[master.id] = sorted(set(listed) & every_jid)
        print(f"[{tree.syndic_mode}] read_scope all on {master.id}: list_jobs has {seen[master.id]}; lookup_jid {looked_up}")
        assert every_jid <= set(listed), (master.id, sorted(listed))
        assert all(set(tree.minion_ids) <= set(answer) for answer in looked_up.values()), (master.id, looked_up)


def test_store_totals(tree, top_jobs, node_job, reader):
    """The whole tree's numbers: jobs and returns per namespace, and every jid or return held twice (by query)."""
    totals = {
        "jobs": reader.rows("SELECT namespace, fun, count(*) FROM jobs GROUP BY namespace, fun ORDER BY namespace, fun"),
        "returns": reader.rows("SELECT namespace, count(*) FROM returns GROUP BY namespace ORDER BY namespace"),
        "jobs doubled": reader.rows(JOBS_DOUBLED),
        "returns doubled": reader.rows(RETURNS_DOUBLED),
        "events by master": reader.rows("SELECT master_id, count(*) FROM events GROUP BY master_id ORDER BY master_id"),
        "engines": reader.rows("SELECT master_id, namespace, mode FROM relay_engines ORDER BY master_id"),
    }
    print(f"[{tree.syndic_mode}] syndic tree store: {totals}")
    assert totals["jobs doubled"] == totals["returns doubled"] == []
    # Both engines ran and captured their own masters' buses.
    assert {master_id for master_id, _, _ in totals["engines"]} == {tree.top_id, tree.syndic_id}
    assert {master_id for master_id, _ in totals["events by master"]} == {tree.top_id, tree.syndic_id}
