"""A master whose relay: block lives only in its own pillar: one store (issue #14).

The engine reads the master's pillar; Salt's job cache (MWorkers, salt-run,
the salt CLI) cannot. The engine hands the store settings it resolved to the
job cache (salt_engine_lib.handoff): `jobs.lookup_jid` answers from the
pillar's database and no SQLite default store appears.
"""

import pathlib
import uuid

import pytest

from salt_engine_lib import paths
from salt_engine_lib.store import Store, queries
from tests.support.brokers import check_broker, delete_queues
from tests.support.databases import server_database
from tests.pipeline_helpers import worker_process
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def setup():
    broker_url = check_broker("rabbitmq")
    queue_name = f"relay-po-{uuid.uuid4().hex[:8]}"
    with server_database("mysql") as database_url:
        yield {"broker_url": broker_url, "database_url": database_url, "queue": queue_name, "dead_letter_queue": f"{queue_name}.dlq"}
    delete_queues(broker_url, queue_name, f"{queue_name}.dlq")


@pytest.fixture(scope="module")
def master(salt_factories, setup):
    overrides = {"master_job_cache": "relay", "engines": [{"relay": {"batch_max_wait": 0.1}}], "loop_interval": 5}
    factory = salt_factories.salt_master_daemon(f"relay-po-{setup['queue'][-8:]}", overrides=overrides)
    assert "relay" not in factory.config and not any(str(key).startswith("relay.") for key in factory.config)
    pillar_dir = pathlib.Path(factory.config["pillar_roots"]["base"][0])
    pillar_dir.mkdir(parents=True, exist_ok=True)
    (pillar_dir / "top.sls").write_text(f"base:\n  '{factory.config['id']}':\n    - relay\n")
    block = "".join(f"  {key}: '{value}'\n" for key, value in setup.items())
    (pillar_dir / "relay.sls").write_text(f"relay:\n{block}")
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="module")
def worker(master, setup, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("po-worker") / "worker.log"
    args = ["--broker-url", setup["broker_url"], "--database-url", setup["database_url"], "-l", "info"]
    env_config = tmp_path_factory.mktemp("po-worker-config")  # the worker host's own (empty) Salt config dir
    with worker_process(["worker", "-c", str(env_config), "--queue", setup["queue"], *args], log_path) as proc:
        yield proc


@pytest.fixture(scope="module")
def minion(master):
    factory = master.salt_minion_daemon(f"relay-pomin-{master.id[-8:]}", overrides={"multiprocessing": False})
    with factory.started(start_timeout=120):
        yield factory


def test_job_cache_and_engine_share_the_pillars_database(master, worker, minion, setup):
    ping = master.salt_cli(timeout=90).run("test.ping", minion_tgt=minion.id)
    assert ping.returncode == 0 and ping.data is True, ping
    store = Store(setup["database_url"])
    jobs = wait_for(lambda: [row.jid for row in store.read(queries.list_jobs, limit=20) if (row.load or {}).get("fun") == "test.ping"])
    assert jobs, "the publish load is not in the pillar's database"
    jid = jobs[0]
    assert wait_for(lambda: store.read(queries.get_jid, jid).get(minion.id)), "the return did not reach the pillar's database"
    looked_up = master.salt_run_cli(timeout=90).run("jobs.lookup_jid", jid)
    assert looked_up.returncode == 0 and looked_up.data == {minion.id: True}, looked_up
    # The engine's bus events went the same way.
    assert wait_for(lambda: store.read(queries.counts)["events"] > 0)
    default_store = paths.default_database(master.config["cachedir"])
    assert not default_store.exists(), f"a second store appeared at {default_store}"
    settings = paths.engine_settings(master.config)
    assert settings.stat().st_mode & 0o077 == 0, "the handed-over settings hold a password: owner only"
