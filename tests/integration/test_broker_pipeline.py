"""The whole pipeline on a real master: engine -> broker -> `salt-relay worker` -> SQL.

Two setups, each with its own master, minion, queue and database:
RabbitMQ + MariaDB, and Redis + PostgreSQL. The master also uses relay as
its job cache on the same database, as a production master would.
"""

import json
import os
import pathlib
import subprocess
import sys
import uuid
import time

import pytest
import sqlalchemy as sa

from salt_engine_lib import paths
from salt_engine_lib.store import Store, queries
from salt_engine_lib.store.schema import events, returns
from tests.support.brokers import check_broker, delete_queues
from tests.support.databases import server_database
from tests.pipeline_helpers import worker_process
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

SALT_RELAY = str(pathlib.Path(sys.executable).parent / "salt-relay")
SETUPS = {
    "rabbitmq-mariadb": ("rabbitmq", "mysql"),
    "redis-postgresql": ("redis", "postgresql"),
}


@pytest.fixture(scope="module", params=list(SETUPS), ids=list(SETUPS))
def setup(request):
    broker_kind, dialect = SETUPS[request.param]
    broker_url = check_broker(broker_kind)
    queue_name = f"relay-it-{uuid.uuid4().hex[:8]}"
    with server_database(dialect) as database_url:
        yield {"broker_url": broker_url, "database_url": database_url, "queue": queue_name, "dead_letter_queue": f"{queue_name}.dlq"}
    delete_queues(broker_url, queue_name, f"{queue_name}.dlq")


@pytest.fixture(scope="module")
def pipeline_master(salt_factories, setup):
    overrides = {
        "master_job_cache": "relay",
        "engines": [{"relay": {"batch_max_wait": 0.1}}],
        "relay": dict(setup),
        "loop_interval": 5,
        "log_level_logfile": "info",
    }
    factory = salt_factories.salt_master_daemon(f"relay-bm-{setup['queue'][-8:]}", overrides=overrides)
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="module")
def worker(pipeline_master, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    with worker_process(["-c", pipeline_master.config_dir, "-l", "info", "worker"], log_path) as proc:
        yield proc, log_path


@pytest.fixture(scope="module")
def minion(pipeline_master):
    factory = pipeline_master.salt_minion_daemon(f"relay-bmin-{pipeline_master.id[-8:]}", overrides={"multiprocessing": False})
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="module")
def store(setup):
    return Store(setup["database_url"])


def event_tags(store, pattern):
    with store.connect() as conn:
        return [row.tag for row in conn.execute(sa.select(events.c.tag).where(events.c.tag.like(pattern)))]


def test_jobs_reach_sql_once_through_the_broker(pipeline_master, worker, minion, store, event_listener):
    cli = pipeline_master.salt_cli(timeout=90)
    started = time.time()
    result = cli.run("cmd.run", "echo relayed", minion_tgt=minion.id)
    assert result.returncode == 0, result
    assert result.data == "relayed"
    jid = wait_for(lambda: next((row.jid for row in store.read(queries.list_jobs, limit=20) if row.load.get("fun") == "cmd.run"), None))
    assert jid
    # What the master's bus carried for this job (salt-factories' own listener
    # sees it): 3007+ also fire salt/job/<jid>/publish, 3006 does not.
    core = {f"salt/job/{jid}/new", f"salt/job/{jid}/ret/{minion.id}"}

    def fired():
        found = {event.tag for event in event_listener.get_events([(pipeline_master.id, f"salt/job/{jid}/*")], after_time=started)}
        return found if core <= found else None

    expected = wait_for(fired, timeout=30)
    assert expected, "the master's bus never carried the job's new and ret events"
    # All of it arrives through the engine -> broker -> worker path: every tag is kept by default.
    assert wait_for(lambda: sorted(event_tags(store, f"salt/job/{jid}/%")) == sorted(expected), timeout=60), (
        event_tags(store, f"salt/job/{jid}/%"),
        expected,
    )
    with store.connect() as conn:
        rows = conn.execute(sa.select(sa.func.count()).select_from(returns).where(returns.c.jid == jid)).scalar()
    assert rows == 1  # job cache and worker wrote the same return: one row
    assert store.read(queries.get_jid, jid)[minion.id]["return"] == "relayed"


def test_find_job_polling_is_filtered_and_counted(pipeline_master, worker, minion, store):
    cli = pipeline_master.salt_cli(timeout=90)
    # A job outlasting the CLI's timeout makes the CLI poll it with saltutil.find_job.
    result = cli.run("test.sleep", "6", "--timeout=2", minion_tgt=minion.id)
    assert result.returncode == 0, result
    stats_file = paths.engine_stats(pipeline_master.config)
    stats = wait_for(
        lambda: (
            json.loads(stats_file.read_text())
            if stats_file.exists() and json.loads(stats_file.read_text())["dropped"].get("excluded_function")
            else None
        ),
        timeout=30,
    )
    assert stats, "saltutil.find_job returns were not counted as filtered"
    # The job cache keeps find_job returns as local_cache does; the bus events are not stored.
    with store.connect() as conn:
        stored = conn.execute(sa.select(events.c.data).where(events.c.tag.like("salt/job/%/ret/%"))).scalars().all()
    assert stored and not [data for data in stored if (data or {}).get("fun") == "saltutil.find_job"]
    assert stats["mode"] == "broker"


def test_status_reports_queues_and_engine(pipeline_master, worker, minion, store):
    env = {key: value for key, value in os.environ.items() if not key.startswith("SALT_RELAY_")}
    result = subprocess.run(
        [SALT_RELAY, "-c", pipeline_master.config_dir, "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["state"] == "ok" and report["warnings"] == []
    queue_name = pipeline_master.config["relay"]["queue"]
    queues = report["broker"]["queues"]
    assert isinstance(queues[queue_name]["messages"], int)
    assert queues[f"{queue_name}.dlq"]["messages"] in (0, None)  # None: never declared
    assert report["engine"]["state"] == "up" and report["engine"]["capture"] == "up"
    assert report["engine"]["mode"] == "broker" and report["events"]["published"] > 0
    assert report["database"]["rows"]["returns"] > 0 and report["database"]["schema_current"]
    # The engine's own report crossed the broker and a worker into relay_engines.
    listed = {entry["master_id"]: entry for entry in report["database"]["engines"]}
    assert listed[pipeline_master.id]["mode"] == "broker" and listed[pipeline_master.id]["seconds_since_report"] < 120, listed
    assert "guest:guest" not in result.stdout  # the broker password is masked
