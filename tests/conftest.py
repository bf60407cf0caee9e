"""Shared fixtures: a fresh database per test on SQLite, MariaDB/MySQL and PostgreSQL.

``database_url`` runs each test that uses it once per dialect (ids ``sqlite``,
``mysql``, ``postgresql``; deselect with ``-m "not mysql"`` etc.). Server
databases get a unique name (``relay_test_<uuid8>``) and are dropped afterwards,
so the long-lived servers never see leftovers from another run.

An unreachable server skips its tests with the command that starts it; under
``CI`` (the variable set) it fails them instead, so a broken CI service cannot
turn into a green run of SQLite-only tests.
"""

import contextlib
import os
import pathlib
import shutil
import tempfile
import uuid

import pytest

from salt_engine_lib.store import Store, connection

# The one place for the test servers (scripts/ensure-services.sh sets them up).
MYSQL_HOST = os.environ.get("RELAY_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("RELAY_TEST_MYSQL_PORT", "3306"))
MYSQL_USER = "root"
POSTGRESQL_HOST = os.environ.get("RELAY_TEST_POSTGRESQL_HOST", "127.0.0.1")
POSTGRESQL_PORT = int(os.environ.get("RELAY_TEST_POSTGRESQL_PORT", "5432"))
POSTGRESQL_USER = "postgres"
RABBITMQ_URL = os.environ.get("RELAY_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("RELAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CONNECT_TIMEOUT = 5

_START_HINT = {
    "mysql": "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
    "postgresql": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "rabbitmq": "rabbitmq-server -detached",
    "redis": 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
}


def _server_unavailable(dialect, host, port, err):
    message = (
        f"{dialect} server not reachable at {host}:{port} ({type(err).__name__}: {err}). "
        f"Start it with `{_START_HINT[dialect]}` or run `scripts/ensure-services.sh`."
    )
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _unique_name():
    return f"relay_test_{uuid.uuid4().hex[:8]}"


def _mysql_admin(dialect="mysql"):
    import pymysql

    try:
        return pymysql.connect(
            host=MYSQL_HOST,
            port=MYSQL_PORT,
            user=MYSQL_USER,
            password="",
            charset="utf8mb4",
            connect_timeout=CONNECT_TIMEOUT,
            autocommit=True,
        )
    except pymysql.err.OperationalError as err:
        _server_unavailable(dialect, MYSQL_HOST, MYSQL_PORT, err)


def _postgresql_admin(dialect="postgresql"):
    import psycopg

    try:
        return psycopg.connect(
            host=POSTGRESQL_HOST,
            port=POSTGRESQL_PORT,
            user=POSTGRESQL_USER,
            dbname="postgres",
            connect_timeout=CONNECT_TIMEOUT,
            autocommit=True,
        )
    except psycopg.OperationalError as err:
        _server_unavailable(dialect, POSTGRESQL_HOST, POSTGRESQL_PORT, err)


@contextlib.contextmanager
def server_database(dialect):
    """URL of a fresh, empty database on the MariaDB or PostgreSQL test server, dropped afterwards."""
    name = _unique_name()
    if dialect == "mysql":
        admin = _mysql_admin()
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        admin.close()
        try:
            yield f"mysql+pymysql://{MYSQL_USER}@{MYSQL_HOST}:{MYSQL_PORT}/{name}"
        finally:
            connection.dispose_all()
            admin = _mysql_admin()
            with admin.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
            admin.close()
        return
    admin = _postgresql_admin()
    admin.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    try:
        yield f"postgresql+psycopg://{POSTGRESQL_USER}@{POSTGRESQL_HOST}:{POSTGRESQL_PORT}/{name}"
    finally:
        connection.dispose_all()
        admin = _postgresql_admin()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("mysql", marks=pytest.mark.mysql),
        pytest.param("postgresql", marks=pytest.mark.postgresql),
    ]
)
def database_url(request, tmp_path):
    """SQLAlchemy URL of a fresh, empty database (no schema yet)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / _unique_name()}.db"
        connection.dispose_all()
        return
    with server_database(request.param) as url:
        yield url


@pytest.fixture
def store(database_url):
    """A :class:`Store` on the fresh database; the schema appears on first use."""
    return Store(database_url)


BROKERS = {"rabbitmq": RABBITMQ_URL, "redis": REDIS_URL}


def check_broker(kind):
    """The broker URL of ``kind`` if its server answers (else skip, or fail under CI)."""
    import kombu

    url = BROKERS[kind]
    try:
        with kombu.Connection(url, connect_timeout=CONNECT_TIMEOUT) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as err:  # pylint: disable=broad-except
        host_port = url.rsplit("@", 1)[-1].split("/", 1)[0].split(":")
        _server_unavailable(kind, host_port[0], host_port[1], err)
    return url


@pytest.fixture(
    params=[
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def broker_url(request):
    """URL of a real broker: RabbitMQ, then Redis."""
    return check_broker(request.param)


def delete_queues(url, *names):
    import kombu

    from salt_engine_lib import broker

    with kombu.Connection(url, connect_timeout=CONNECT_TIMEOUT) as conn:
        for name in names:
            try:
                broker.queue(name).bind(conn.channel()).delete()
            except Exception:  # pylint: disable=broad-except
                pass  # never declared


@pytest.fixture
def queue_name(broker_url):
    """A unique queue name (and ``<name>.dlq``), deleted with its messages afterwards."""
    name = f"relay-test-{uuid.uuid4().hex[:8]}"
    yield name
    delete_queues(broker_url, name, f"{name}.dlq")


@pytest.fixture(scope="session")
def salt_factories_config():
    """pytest-salt-factories' root: a short private dir (AF_UNIX paths are limited to ~100 characters)."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="srly-", dir="/tmp"))
    yield {"root_dir": root}
    shutil.rmtree(root, ignore_errors=True)


# salt-factories binds its log server and its event listener on 0.0.0.0 by
# default; these tests listen on loopback only.
LOOPBACK = "127.0.0.1"


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    """Before salt-factories starts its log server (its own tryfirst hook, registered earlier, runs after this)."""
    log_server = session.config.pluginmanager.get_plugin("saltfactories-log-server")
    if log_server is not None:
        log_server.log_host = LOOPBACK


@pytest.fixture(scope="session")
def event_listener():
    """salt-factories' event listener (every daemon forwards its events to it), on loopback."""
    from saltfactories.plugins.event_listener import EventListener

    listener = EventListener()
    listener.host = LOOPBACK
    listener.address = f"tcp://{LOOPBACK}:{listener.port}"
    with listener:
        yield listener


def pytest_unconfigure(config):
    """Leave the run ending on pytest's summary.

    Importing Salt installs a temporary handler that queues every log record
    of this process (salt-factories forwards the daemons' records here) and
    writes the queue to the ``sys.stderr`` of import time at exit. Under
    pytest that stream is the capture file, closed by then: each queued
    record became a "--- Logging error ---" traceback. pytest already showed
    what the tests logged; the queue is dropped.
    """
    try:
        from salt._logging import impl
    except ImportError:
        return
    handler = impl.get_temp_handler()
    if handler is not None:
        import logging

        logging.root.removeHandler(handler)
        handler.sync_with_handlers(())  # empties the queue, hands the records to no one
        impl.setup_temp_handler.__handler__ = None
