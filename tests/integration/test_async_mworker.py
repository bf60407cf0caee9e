"""relay as the job cache of a master with ``master_async_mworker: True`` (Salt 3008).

There ``store_job`` runs in a thread pool of each MWorker, so the returner is
called from several threads of one process at once: the per-process config
cache, the outbox writer and the store's engine must be thread-safe.
"""

import pytest

from salt_engine_lib import saltcompat
from salt_engine_lib.store import Store, queries
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not saltcompat.has_async_mworker(), reason="this Salt has no master_async_mworker (3008+)"),
]


@pytest.fixture(scope="module")
def async_master(salt_factories, tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('async') / 'relay.db'}"
    overrides = {
        "master_job_cache": "relay",
        "master_async_mworker": True,
        "engines": [{"relay": {"batch_max_wait": 0.1}}],
        "relay": {"database_url": url},
    }
    factory = salt_factories.salt_master_daemon("relay-async-master", overrides=overrides)
    with factory.started(start_timeout=120):
        yield factory, Store(url)


@pytest.fixture(scope="module")
def async_minions(async_master):
    master, _ = async_master
    factories = [master.salt_minion_daemon(f"relay-async-m{i}", overrides={"multiprocessing": False}) for i in (1, 2)]
    for factory in factories:
        factory.start(start_timeout=120)
    yield factories
    for factory in factories:
        factory.terminate()


def test_jobs_are_stored_and_looked_up(async_master, async_minions):
    master, store = async_master
    cli = master.salt_cli(timeout=90)
    for _ in range(5):
        result = cli.run("test.ping", minion_tgt="relay-async-m*")
        assert result.returncode == 0, result
        assert result.data == {"relay-async-m1": True, "relay-async-m2": True}
    pings = wait_for(lambda: [row.jid for row in store.read(queries.list_jobs, limit=50) if row.load.get("fun") == "test.ping"])
    assert len(pings) >= 5
    for jid in pings:
        assert wait_for(lambda jid=jid: len(store.read(queries.get_jid, jid)) == 2), store.read(queries.get_jid, jid)
    looked_up = master.salt_run_cli(timeout=90).run("jobs.lookup_jid", pings[0])
    assert looked_up.returncode == 0, looked_up
    assert looked_up.data == {"relay-async-m1": True, "relay-async-m2": True}
