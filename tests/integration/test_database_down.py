"""MariaDB behind a proxy the test cuts: `salt` keeps working, nothing is lost.

The shared MariaDB server is never stopped; the proxy makes it unreachable
for the master exactly as an outage would (refused connects, reset sockets).
"""

import uuid

import pymysql
import pytest

from salt_engine_lib.store import Store, connection, queries
from tests.tcp_proxy import TcpProxy

from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mariadb_database():
    name = f"relay_it_{uuid.uuid4().hex[:8]}"
    try:
        admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
    except pymysql.err.OperationalError as err:
        pytest.fail(f"MariaDB on 127.0.0.1:3306 is needed (scripts/ensure-services.sh): {err}")
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    yield name
    connection.dispose_all()
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    admin.close()


@pytest.fixture(scope="module")
def proxy():
    tcp_proxy = TcpProxy("127.0.0.1", 3306)
    yield tcp_proxy
    tcp_proxy.close()


@pytest.fixture(scope="module")
def relay_database_url(mariadb_database, proxy):
    return f"mysql+pymysql://root@127.0.0.1:{proxy.port}/{mariadb_database}?connect_timeout=3"


@pytest.fixture(scope="module")
def direct_store(mariadb_database):
    return Store(f"mysql+pymysql://root@127.0.0.1:3306/{mariadb_database}")


def newest_job(store, fun):
    for row in store.read(queries.list_jobs, limit=50):
        if row.load.get("fun") == fun:
            return row.jid
    return None


def test_salt_works_while_the_database_is_down_and_nothing_is_lost(salt_cli, salt_run_cli, salt_minion, direct_store, proxy):
    warm = salt_cli.run("test.ping", minion_tgt=salt_minion.id)
    assert warm.returncode == 0 and warm.data is True, warm
    assert newest_job(direct_store, "test.ping")

    proxy.cut()
    try:
        during = salt_cli.run("test.echo", "during-outage", minion_tgt=salt_minion.id)
        assert during.returncode == 0, during
        assert during.data == "during-outage"
    finally:
        proxy.restore()

    jid = wait_for(lambda: newest_job(direct_store, "test.echo"))
    assert jid, "the load saved during the outage never reached MariaDB"
    returned = wait_for(lambda: direct_store.read(queries.get_jid, jid))
    assert returned[salt_minion.id]["return"] == "during-outage"
    looked_up = salt_run_cli.run("jobs.lookup_jid", jid)
    assert looked_up.returncode == 0, looked_up
    assert looked_up.data == {salt_minion.id: "during-outage"}


def test_two_mebibyte_return_reaches_sql(salt_cli, salt_minion, direct_store, tmp_path):
    """A 2 MiB return is stored as the job cache received it.

    Observed on Salt 3008.3: over max_event_size (1 MiB) the value that
    reaches the master's job cache is already "VALUE_TRIMMED" (the same as on
    the bus), so no job cache can store it whole from a real minion; the
    functional test stores a whole 2 MiB return through the loader.
    """
    source = tmp_path / "big.txt"
    source.write_text("relay" + "x" * (2 * 1024 * 1024))
    result = salt_cli.run("file.read", str(source), minion_tgt=salt_minion.id)
    assert result.returncode == 0, result
    jid = wait_for(
        lambda: next((r.jid for r in direct_store.read(queries.list_jobs, limit=20) if r.load.get("arg") == [str(source)]), None)
    )
    assert jid, "the file.read job is not in the jobs table"
    assert wait_for(lambda: salt_minion.id in direct_store.read(queries.get_jid, jid))
