"""Shared fixtures: a fresh database per test on SQLite, MariaDB/MySQL and PostgreSQL, real brokers.

``database_url`` runs each test that uses it once per dialect (ids ``sqlite``,
``mysql``, ``postgresql``; deselect with ``-m "not mysql"`` etc.). Server
databases get a unique name (``relay_test_<uuid8>``) and are dropped afterwards,
so the long-lived servers never see leftovers from another run.

The servers, databases and queues come from :mod:`tests.support`, which the
benchmarks and the demo use too. Its helpers raise ``ServerUnavailable`` for
a server that does not answer; here that skips the test with the command that
starts the server, or under ``CI`` (the variable set) fails it, so a broken CI
service cannot turn into a green run of SQLite-only tests.
"""

import os
import pathlib
import shutil
import tempfile

import pytest

from salt_engine_lib.store import Store
from tests.support import brokers, databases
from tests.support.databases import server_database  # noqa: F401  (tests/store imports it from here)
from tests.support.ports import LOOPBACK
from tests.support.servers import ServerUnavailable, skip_or_fail


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _unavailable_skips())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from _unavailable_skips())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    return (yield from _unavailable_skips())


def _unavailable_skips():
    """A server missing in a fixture, a test or its teardown: skip, or fail under CI."""
    try:
        return (yield)
    except ServerUnavailable as err:
        message = str(err)
    skip_or_fail(message)  # outside the except block: the report shows the message, not a chained traceback


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("mysql", marks=pytest.mark.mysql),
        pytest.param("postgresql", marks=pytest.mark.postgresql),
    ]
)
def database_url(request, tmp_path):
    """SQLAlchemy URL of a fresh, empty database (no schema yet)."""
    with databases.fresh_database(request.param, directory=tmp_path) as url:
        yield url


@pytest.fixture
def store(database_url):
    """A :class:`Store` on the fresh database; the schema appears on first use."""
    return Store(database_url)


@pytest.fixture(
    params=[
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def broker_url(request):
    """URL of a real broker: RabbitMQ, then Redis."""
    return brokers.check_broker(request.param)


@pytest.fixture
def queue_name(broker_url):
    """A unique queue name (and ``<name>.dlq``), deleted with its messages afterwards."""
    name = brokers.unique_queue()
    yield name
    brokers.delete_queues(broker_url, name, f"{name}.dlq")


@pytest.fixture(scope="session")
def salt_factories_config():
    """pytest-salt-factories' root: a short private dir (AF_UNIX paths are limited to ~100 characters)."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="srly-", dir="/tmp"))
    yield {"root_dir": root}
    # RELAY_KEEP_SALT_ROOT=1 keeps the daemons' configs and logs for a post-mortem.
    if not os.environ.get("RELAY_KEEP_SALT_ROOT"):
        shutil.rmtree(root, ignore_errors=True)


# salt-factories binds its log server and its event listener on 0.0.0.0 by
# default; these tests listen on loopback only (LOOPBACK).


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
