"""Salt's own two-master job-return test, with both masters' job cache in one relay store.

Source: Salt 3008.5 sdist, tests/pytests/integration/minion/test_job_return.py
and the salt_master_1 / salt_master_2 / salt_minion_1 fixtures of its
conftest.py next to it (master 1 on 127.0.0.1, master 2 on 127.0.0.2 with
master 1's ports and key pair, open_mode, a minion listing both masters).
Here both masters have ``master_job_cache: relay`` on ONE shared MariaDB
database and the default read_scope (master), no relay engine (the
returner writes directly). Salt's assertions are kept as they are: with
local_cache each master has its own cache, so master 2 does not know master
1's job; with relay the shared store must answer the same.
"""

import pytest

from tests.integration import multimaster
from tests.support.databases import Reader, server_database

pytestmark = [pytest.mark.integration, pytest.mark.mysql, pytest.mark.timeout(360)]

# Salt's conftest with FIPS_TESTRUN unset, and its --transport default.
TRANSPORT = "zeromq"
MASTER_CRYPTO = {"fips_mode": False, "publish_signing_algorithm": "PKCS1v15-SHA1"}
MINION_CRYPTO = {"fips_mode": False, "encryption_algorithm": "OAEP-SHA1", "signing_algorithm": "PKCS1v15-SHA1"}


@pytest.fixture(scope="module")
def relay_store():
    """The relay block both masters share: one database."""
    with server_database("mysql", prefix="relay_two_master") as database_url:
        yield {"master_job_cache": "relay", "relay": {"database_url": database_url}}


@pytest.fixture(scope="module")
def salt_master_1(salt_factories, relay_store):
    factory = multimaster.first_master(
        salt_factories, "master-1", {"open_mode": True, "transport": TRANSPORT}, {**MASTER_CRYPTO, **relay_store}
    )
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="module")
def salt_master_2(salt_factories, salt_master_1, relay_store):
    factory = multimaster.second_master(
        salt_factories,
        salt_master_1,
        "master-2",
        {"open_mode": True, "transport": salt_master_1.config["transport"]},
        {**MASTER_CRYPTO, **relay_store},
    )
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="module")
def salt_minion_1(salt_master_1, salt_master_2):
    factory = multimaster.minion_of_both(
        salt_master_1,
        salt_master_2,
        "minion-1",
        {"transport": salt_master_1.config["transport"]},
        {"test.foo": "baz", **MINION_CRYPTO},
    )
    with factory.started(start_timeout=120):
        yield factory


def test_job_return(salt_master_1, salt_master_2, salt_minion_1, relay_store):
    """Master 1's job: master 1 reads the minion's return from the shared store, master 2 reads nothing."""
    cli = salt_master_1.salt_cli(timeout=120)
    ret = cli.run("test.ping", "-v", minion_tgt=salt_minion_1.id)
    for line in ret.stdout.splitlines():
        if "with jid" in line:
            jid = line.split("with jid")[1].strip()

    run_1 = salt_master_1.salt_run_cli(timeout=120)
    ret = run_1.run("jobs.lookup_jid", jid)
    assert ret.data == {"minion-1": True}

    run_2 = salt_master_2.salt_run_cli(timeout=120)
    ret = run_2.run("jobs.lookup_jid", jid)
    assert ret.data == {}

    # Not Salt's: the answers above came from the shared store (no local_cache
    # behind them), where the job is master 1's.
    reader = Reader(relay_store["relay"]["database_url"])
    try:
        assert reader.rows("SELECT namespace, master_id FROM jobs WHERE jid = :jid", jid=jid) == [("master-1", "master-1")]
        assert reader.rows("SELECT namespace, minion_id FROM returns WHERE jid = :jid", jid=jid) == [("master-1", "minion-1")]
    finally:
        reader.dispose()
