"""An HA pair: two masters, one multi-master minion, one broker queue, one worker, one shared database.

Both masters (127.0.0.1 and 127.0.0.2, same ports, same key pair: Salt's own
multi-master layout, see multimaster.py) use relay as their job cache and run
the relay engine in broker mode on one RabbitMQ queue; one ``salt-relay
worker`` stores what both publish, on MariaDB and on PostgreSQL. Each job is
stored once in the namespace of the master that published it, each master
reads its own jobs (read_scope master), ``read_scope: all`` reads both, and a
restart of master 1 neither loses nor doubles a row.
"""

import collections
import json
import pathlib
import subprocess
import sys
import uuid

import pytest

from tests.integration import multimaster
from tests.pipeline_helpers import worker_process
from tests.support.brokers import check_broker, delete_queues
from tests.support.databases import Reader, server_database
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

SALT_RELAY = str(pathlib.Path(sys.executable).parent / "salt-relay")
DOUBLED_JOBS = "SELECT jid, count(*) FROM jobs GROUP BY jid HAVING count(*) > 1"
DOUBLED_RETURNS = "SELECT jid, minion_id, count(*) FROM returns GROUP BY jid, minion_id HAVING count(*) > 1"

#: A job the test published: the master it went through and what the minion answered.
Job = collections.namedtuple("Job", "master answer")


@pytest.fixture(
    scope="module",
    params=[pytest.param("mysql", marks=pytest.mark.mysql), pytest.param("postgresql", marks=pytest.mark.postgresql)],
)
def ha(request):
    """The shared database, broker queue and names of one HA pair."""
    broker_url = check_broker("rabbitmq")
    suffix = uuid.uuid4().hex[:8]
    queue = f"relay-ha-{suffix}"
    with server_database(request.param) as database_url:
        reader = Reader(database_url)
        yield {
            "suffix": suffix,
            "reader": reader,
            "relay": {"database_url": database_url, "broker_url": broker_url, "queue": queue, "dead_letter_queue": f"{queue}.dlq"},
        }
        reader.dispose()
    delete_queues(broker_url, queue, f"{queue}.dlq")


def master_overrides(ha):
    return {
        "master_job_cache": "relay",
        "engines": [{"relay": {"batch_max_wait": 0.1}}],
        "relay": dict(ha["relay"]),
        "loop_interval": 5,
        "log_level_logfile": "info",
    }


@pytest.fixture(scope="module")
def master_1(salt_factories, ha):
    factory = multimaster.first_master(salt_factories, f"relay-ha-1-{ha['suffix']}", {"open_mode": True}, master_overrides(ha))
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="module")
def master_2(salt_factories, ha, master_1):
    factory = multimaster.second_master(salt_factories, master_1, f"relay-ha-2-{ha['suffix']}", {"open_mode": True}, master_overrides(ha))
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="module")
def worker(master_1, tmp_path_factory):
    # One worker for the pair: both masters' relay blocks name the same queue and database.
    log_path = tmp_path_factory.mktemp("ha-worker") / "worker.log"
    with worker_process(["-c", master_1.config_dir, "-l", "info", "worker"], log_path) as proc:
        yield proc


@pytest.fixture(scope="module")
def minion(ha, master_1, master_2):
    factory = multimaster.minion_of_both(master_1, master_2, f"relay-ha-min-{ha['suffix']}", overrides={"multiprocessing": False})
    with factory.started(start_timeout=120):
        # Connected to both: each master's publish is answered.
        assert multimaster.wait_until_answering(master_1, factory.id), "the minion does not answer master 1"
        assert multimaster.wait_until_answering(master_2, factory.id), "the minion does not answer master 2"
        yield factory


def returns_of(reader, jids):
    """{jid: its stored return rows} of ``jids``."""
    found = dict.fromkeys(jids, 0)
    for jid, count in reader.rows("SELECT jid, count(*) FROM returns GROUP BY jid"):
        if jid in found:
            found[jid] = count
    return found


def wait_stored(reader, jids, timeout=60):
    """True once each of ``jids`` has a job row and a return row (the worker stores them from the queue)."""

    def stored():
        known = {row[0] for row in reader.rows("SELECT jid FROM jobs")}
        return set(jids) <= known and all(returns_of(reader, jids).values())

    return wait_for(stored, timeout=timeout)


def publish(master, minion, fun, *args):
    """(jid, Job) of ``fun`` published by ``master``; fails unless the minion answered."""
    jid, answer, result = multimaster.run_job(master.salt_cli(timeout=90), fun, *args, minion_tgt=minion.id)
    # test.arg answers its args (and the __pub_* kwargs Salt adds); a minion that did not answer prints a string.
    answered = answer is True if fun == "test.ping" else isinstance(answer, dict) and answer.get("args") == list(args)
    assert jid and answered, result
    return jid, Job(master, answer)


@pytest.fixture(scope="module")
def jobs(ha, master_1, master_2, worker, minion):
    """{jid: Job}: a test.ping and a test.arg from each master, all answered and stored."""
    published = dict(
        publish(master, minion, fun, *args)
        for master in (master_1, master_2)
        for fun, args in (("test.ping", ()), ("test.arg", (f"ha-arg-from-{master.id}",)))
    )
    assert len(published) == 4  # four distinct jids
    assert wait_stored(ha["reader"], published), f"not all stored: {returns_of(ha['reader'], published)}"
    return published


def jids_of(jobs, master):
    return {jid for jid, job in jobs.items() if job.master is master}


def doubled_rows(reader):
    return reader.rows(DOUBLED_JOBS) + reader.rows(DOUBLED_RETURNS)


def test_each_job_and_return_stored_once(ha, jobs, minion, record_property):
    """Every job and every return of both masters is one row; the job row is in its publisher's namespace."""
    reader = ha["reader"]
    doubled = doubled_rows(reader)
    record_property("jobs_run", len(jobs))
    record_property("returns_stored", sum(returns_of(reader, jobs).values()))
    record_property("rows_doubled", doubled)
    assert doubled == []
    assert returns_of(reader, jobs) == dict.fromkeys(jobs, 1)
    rows = {row[0]: row[1:] for row in reader.rows("SELECT jid, namespace, master_id FROM jobs")}
    assert {jid: rows.get(jid) for jid in jobs} == {jid: (job.master.id, job.master.id) for jid, job in jobs.items()}
    stored = {row[0]: row[1:] for row in reader.rows("SELECT jid, namespace, minion_id FROM returns")}
    assert {jid: stored.get(jid) for jid in jobs} == {jid: (job.master.id, minion.id) for jid, job in jobs.items()}


def listed(master, jobs, reader):
    """What ``salt-run jobs.list_jobs`` on ``master`` shows: {publisher id: how many of our jids, how many jobs in all}.

    "In all" counts every listed job by the master_id of its row (the CLI's
    own pings and runner jobs too), so a foreign job shows even if not ours.
    """
    result = master.salt_run_cli(timeout=90).run("jobs.list_jobs")
    assert result.returncode == 0 and isinstance(result.data, dict), result
    shown = set(result.data)
    owners = dict(reader.rows("SELECT jid, master_id FROM jobs"))
    counts = {job.master.id: [len(shown & jids_of(jobs, job.master)), 0] for job in jobs.values()}
    for jid in shown:
        counts.setdefault(owners.get(jid, "not stored"), [0, 0])[1] += 1
    return {publisher: tuple(count) for publisher, count in counts.items()}


def lookup(master, jid):
    found = master.salt_run_cli(timeout=90).run("jobs.lookup_jid", jid)
    assert found.returncode == 0, found
    return found.data


def test_each_master_reads_its_own_jobs(ha, jobs, master_1, master_2, minion, record_property):
    """read_scope master (the default): list_jobs and lookup_jid see only the jobs this master published."""
    shown = {master.id: listed(master, jobs, ha["reader"]) for master in (master_1, master_2)}
    record_property("list_jobs_scope_master", shown)
    for mine, other in ((master_1, master_2), (master_2, master_1)):
        assert shown[mine.id][mine.id][0] == 2 and shown[mine.id][other.id] == (0, 0), shown
        assert set(shown[mine.id]) == {mine.id, other.id}, shown  # nothing else listed
        # Its own jobs answer (so an empty answer below is the scope, not a broken read) ...
        assert {jid: lookup(mine, jid) for jid in jids_of(jobs, mine)} == {
            jid: {minion.id: jobs[jid].answer} for jid in jids_of(jobs, mine)
        }
        # ... the other master's do not.
        assert {jid: lookup(mine, jid) for jid in jids_of(jobs, other)} == dict.fromkeys(jids_of(jobs, other), {})


def test_read_scope_all_reads_both_masters(ha, jobs, master_1, master_2, minion, record_property):
    """read_scope all on master 1: its list_jobs shows both masters' jobs, lookup_jid reads master 2's returns."""
    with multimaster.relay_option(master_1, "read_scope", "all"):
        shown = listed(master_1, jobs, ha["reader"])
        answers = {jid: lookup(master_1, jid) for jid in jids_of(jobs, master_2)}
    record_property("list_jobs_scope_all", {master_1.id: shown})
    assert shown[master_1.id][0] == 2 and shown[master_2.id][0] == 2, shown
    assert answers == {jid: {minion.id: jobs[jid].answer} for jid in jids_of(jobs, master_2)}
    # The config restored, master 1 reads its own jobs again.
    restored = listed(master_1, jobs, ha["reader"])
    assert restored[master_1.id][0] == 2 and restored[master_2.id] == (0, 0), restored


def test_status_on_either_master_lists_both_engines(ha, jobs, master_1, master_2):
    """Each engine reports itself through the broker and the worker; status on either master lists both."""
    expected = {master_1.id: "broker", master_2.id: "broker"}

    def listed(master):
        done = subprocess.run(
            [SALT_RELAY, "-c", master.config_dir, "status", "--json"], capture_output=True, text=True, timeout=60, check=False
        )
        engines = json.loads(done.stdout or "{}").get("database", {}).get("engines") or []
        found = {entry["master_id"]: entry["mode"] for entry in engines if entry["seconds_since_report"] < 120}
        return found if found == expected else None

    for master in (master_1, master_2):
        assert wait_for(lambda master=master: listed(master), timeout=60), f"{master.id}'s status does not list both engines"


def test_master_restart_loses_and_doubles_nothing(ha, jobs, master_1, minion, record_property):
    """Master 1 restarted: the minion answers it again, its next job is stored, every return is still one row."""
    master_1.terminate()
    master_1.start(start_timeout=120)
    assert multimaster.wait_until_answering(master_1, minion.id), "the minion does not answer master 1 after its restart"
    # Salt 3007's multi-master minion keeps dropping its connection to a
    # restarted master (reproduced with no relay configured: of five jobs after
    # the restart, every other one went unanswered; 3006 and 3008 answer all;
    # once, on 3007.17 in CI, none of five was answered although a test.ping
    # just before them was), so the job is published until the minion answers
    # one, and after four unanswered ones the minion is restarted too (what an
    # operator does); the ones it did not answer must then be stored as jobs,
    # not lost or doubled.
    unanswered = []
    for attempt in range(1, 9):
        if attempt == 5:
            minion.terminate()
            minion.start(start_timeout=120)
            record_property("minion_restarted_after_unanswered", len(unanswered))
        multimaster.wait_until_answering(master_1, minion.id, timeout=60)
        jid, answer, result = multimaster.run_job(
            master_1.salt_cli(timeout=30), "test.arg", f"ha-after-restart-{attempt}", minion_tgt=minion.id
        )
        if isinstance(answer, dict) and answer.get("args") == [f"ha-after-restart-{attempt}"]:
            break
        assert jid, result
        unanswered.append(jid)
    else:
        pytest.fail(f"the minion answered none of 8 jobs from master 1 after its restart (and its own after 4): {result}")
    job = Job(master_1, answer)
    record_property("unanswered_after_restart", len(unanswered))
    every = {**jobs, jid: job}
    reader = ha["reader"]
    assert wait_for(lambda: {row[0] for row in reader.rows("SELECT jid FROM jobs")} >= set(unanswered), timeout=60)
    # A return that reached the master after the CLI gave up is stored once too.
    assert all(count <= 1 for count in returns_of(reader, unanswered).values()), returns_of(reader, unanswered)
    assert wait_stored(reader, every), f"not all stored: {returns_of(reader, every)}"
    doubled = doubled_rows(reader)
    record_property("jobs_run_with_restart", len(every))
    record_property("returns_stored_with_restart", sum(returns_of(reader, every).values()))
    record_property("rows_doubled_with_restart", doubled)
    assert doubled == []
    assert returns_of(reader, every) == dict.fromkeys(every, 1)
    assert reader.rows("SELECT namespace, master_id FROM jobs WHERE jid = :jid", jid=jid) == [(master_1.id, master_1.id)]
    assert lookup(master_1, jid) == {minion.id: job.answer}
