"""Passwords in broker and database URLs never show: not in logs, CLI output, exceptions or dead letters.

Every test uses the distinctive password ``S3cr3t-pa55`` and looks for it in
everything a user or a log collector gets to see: log records of
salt_engine_lib, Kombu, py-amqp, redis-py, SQLAlchemy, Alembic and the DB
drivers at DEBUG (caplog), exception messages with their whole cause chain,
``salt-relay`` stdout/stderr at ``-l debug``, and the dead-letter headers.
Where a URL is part of a message it must be there masked (``***``), which
shows the check looked at the right text.
"""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import traceback
import uuid

import pytest

from salt_engine_lib import broker, config, message
from salt_engine_lib.errors import BrokerUnavailable, StoreError
from salt_engine_lib.store import Store, connection, queries
from salt_engine_lib.urls import mask_url
from salt_engine_lib.worker import REASON_HEADER
from tests.support import databases as shared
from tests.support.brokers import check_broker
from tests.pipeline_helpers import WorkerThread, job_events, publish_batches
from tests.support.brokers import take_all
from tests.security import servers
from tests.support.waiting import wait_for

PASSWORD = "S3cr3t-pa55"
LOGGERS = ("salt_engine_lib", "kombu", "amqp", "redis", "sqlalchemy", "alembic", "pymysql", "psycopg")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def _dispose_engines():
    yield
    connection.dispose_all()


@pytest.fixture
def debug_logs(caplog):
    """caplog with every library that touches a URL logging at DEBUG."""
    caplog.set_level(logging.DEBUG)
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def error_text(exc):
    """What a traceback of ``exc`` shows: messages and reprs of it and every cause."""
    parts = ["".join(traceback.format_exception(exc))]
    while exc is not None:
        parts += [str(exc), repr(exc)]
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def assert_hidden(**texts):
    leaks = sorted(name for name, text in texts.items() if PASSWORD in str(text))
    assert not leaks, f"the password shows in: {', '.join(leaks)}"


@pytest.fixture
def closed_port():
    """A port bound but not listening: connections are refused, and no server can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def password_redis(tmp_path_factory):
    """Port of a private Redis whose password is PASSWORD."""
    with servers.redis_server(tmp_path_factory.mktemp("redis-auth"), requirepass=PASSWORD) as port:
        yield port


@pytest.fixture
def password_postgresql():
    """URL with PASSWORD of a fresh database on the shared PostgreSQL (trust: the password is accepted)."""
    with shared.server_database("postgresql") as url:
        yield url.replace(f"{shared.POSTGRESQL_USER}@", f"{shared.POSTGRESQL_USER}:{PASSWORD}@", 1)


def unique_queue():
    return f"relay-secret-{uuid.uuid4().hex[:8]}"


# -- masking itself --------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"amqp://relay:{PASSWORD}@broker:5672/salt",
        f"amqps://relay:{PASSWORD}@broker:5671//",
        f"redis://:{PASSWORD}@broker:6379/0",
        f"rediss://default:{PASSWORD}@broker:6380/0?ssl_cert_reqs=required",
        f"mysql+pymysql://relay:{PASSWORD}@db:3306/relay",
        f"postgresql+psycopg://relay:{PASSWORD}@db/relay",
        f"mysql+pymysql://relay:{PASSWORD}/x@db/relay",
        f"mysql+pymysql://relay:{PASSWORD}?x#y@db/relay",
        f"mysql+pymysql://relay:pre@{PASSWORD}@db/relay",  # an unencoded @ in the password
        f"postgresql+psycopg://relay@db/relay?password={PASSWORD}",
        f"postgresql+psycopg://relay@db/relay?sslmode=require&password={PASSWORD}&application_name=x",
        f"mysql+pymysql://relay@db/relay?passwd={PASSWORD}",
    ],
)
def test_mask_url_hides_the_password(url):
    masked = mask_url(url)
    assert_hidden(masked=masked)
    assert "***" in masked


def test_config_repr_and_describe_hide_passwords():
    cfg = config.load(
        {"broker_url": f"amqp://relay:{PASSWORD}@127.0.0.1:5672//", "database_url": f"mysql+pymysql://relay:{PASSWORD}@127.0.0.1/relay"}
    )
    assert_hidden(repr=repr(cfg), str=str(cfg), describe=repr(cfg.describe()))
    assert "amqp://relay:***@127.0.0.1:5672//" in repr(cfg)
    assert cfg.broker_url.endswith(f"{PASSWORD}@127.0.0.1:5672//")  # the real value is untouched
    store = Store(cfg.database_url)
    assert_hidden(store=repr(store))


# -- brokers -------------------------------------------------------------------


def publish_error(cfg):
    publisher = broker.Publisher(cfg, max_retries=1)
    message_id, body = message.encode(job_events(1), "master-1")
    try:
        with pytest.raises(BrokerUnavailable) as caught:
            publisher.publish(body, message_id)
    finally:
        publisher.close()
    return caught.value


def depths_error(cfg):
    with pytest.raises(BrokerUnavailable) as caught:
        broker.queue_depths(cfg)
    return caught.value


@pytest.mark.parametrize(
    "url",
    [
        f"amqp://relay:{PASSWORD}@127.0.0.1:{{port}}//",
        f"amqps://relay:{PASSWORD}@127.0.0.1:{{port}}//",
        f"redis://:{PASSWORD}@127.0.0.1:{{port}}/0",
        f"rediss://relay:{PASSWORD}@127.0.0.1:{{port}}/0",
    ],
    ids=["amqp", "amqps", "redis", "rediss"],
)
def test_unreachable_broker_errors_hide_the_password(debug_logs, closed_port, url):
    cfg = config.load({"broker_url": url.format(port=closed_port), "queue": unique_queue()})
    errors = [publish_error(cfg)]
    if url.startswith("amqp:"):  # the status path; once is enough (each try waits 2 s)
        errors.append(depths_error(cfg))
    for err in errors:
        assert str(err).startswith(mask_url(cfg.broker_url) + ": ")
        assert ":***@" in str(err)
    assert_hidden(errors="\n".join(error_text(err) for err in errors), logs=debug_logs.text)


@pytest.mark.rabbitmq
def test_rabbitmq_refusing_the_password_does_not_echo_it(debug_logs):
    url = check_broker("rabbitmq")
    wrong = url.replace("guest:guest@", f"guest:{PASSWORD}@", 1)
    assert wrong != url, f"RELAY_TEST_RABBITMQ_URL {mask_url(url)} has no guest:guest@ to replace"
    cfg = config.load({"broker_url": wrong, "queue": unique_queue()})
    published, depths = publish_error(cfg), depths_error(cfg)
    assert "ACCESS_REFUSED" in str(published) or "AccessRefused" in str(published)
    assert_hidden(publish=error_text(published), queue_depths=error_text(depths), logs=debug_logs.text)


@pytest.mark.redis
def test_redis_refusing_a_password_does_not_echo_it(debug_logs, password_redis):
    wrong = "Wr0ng-" + PASSWORD  # still contains PASSWORD: any echo of it is caught
    cfg = config.load({"broker_url": f"redis://:{wrong}@127.0.0.1:{password_redis}/0", "queue": unique_queue()})
    published = publish_error(cfg)
    assert "invalid username-password pair" in str(published) or "WRONGPASS" in str(published)
    assert_hidden(publish=error_text(published), logs=debug_logs.text)


# -- databases -----------------------------------------------------------------


def store_errors(store):
    """StoreErrors of the write, read and schema-check paths; reachable() just answers False."""
    errors = []
    for call in (lambda: store.write_batch(), lambda: store.read(queries.counts), store.ensure_schema):
        with pytest.raises(StoreError) as caught:
            call()
        errors.append(caught.value)
        connection.dispose_all()
    assert store.reachable() is False
    return errors


@pytest.mark.parametrize(
    "url",
    [
        f"mysql+pymysql://relay:{PASSWORD}@127.0.0.1:{{port}}/relay",
        f"postgresql+psycopg://relay:{PASSWORD}@127.0.0.1:{{port}}/relay",
        f"postgresql+psycopg://relay@127.0.0.1:{{port}}/relay?password={PASSWORD}",
    ],
    ids=["mysql", "postgresql", "postgresql-query-password"],
)
def test_unreachable_database_errors_hide_the_password(debug_logs, closed_port, url):
    store = Store(url.format(port=closed_port))
    errors = store_errors(store)
    for err in errors:
        assert str(err).startswith(mask_url(store.database_url) + ": ")
        assert "***" in str(err)
    assert_hidden(
        errors="\n".join(error_text(err) for err in errors),
        repr=repr(store),
        logs=debug_logs.text,
    )


@pytest.mark.mysql
def test_mariadb_refusing_the_password_does_not_echo_it(debug_logs):
    shared.mysql_admin().close()  # the shared server is up (skip, or fail under CI)
    store = Store(f"mysql+pymysql://{shared.MYSQL_USER}:{PASSWORD}@{shared.MYSQL_HOST}:{shared.MYSQL_PORT}/mysql")
    errors = store_errors(store)
    assert "Access denied" in str(errors[0])
    assert_hidden(errors="\n".join(error_text(err) for err in errors), logs=debug_logs.text)


@pytest.mark.postgresql
def test_postgresql_refusing_the_login_does_not_echo_the_password(debug_logs):
    shared.postgresql_admin().close()
    store = Store(
        f"postgresql+psycopg://no_such_role_{uuid.uuid4().hex[:6]}:{PASSWORD}@{shared.POSTGRESQL_HOST}:{shared.POSTGRESQL_PORT}/postgres"
    )
    errors = store_errors(store)
    assert "no_such_role" in str(errors[0])
    assert_hidden(errors="\n".join(error_text(err) for err in errors), logs=debug_logs.text)


@pytest.mark.postgresql
@pytest.mark.parametrize("where", ["userinfo", "query"])
def test_a_working_store_logs_no_password(debug_logs, password_postgresql, where):
    url = password_postgresql
    if where == "query":  # libpq and PyMySQL also take the password as a URL parameter
        url = url.replace(f":{PASSWORD}@", "@") + f"?password={PASSWORD}"
    store = Store(url)
    store.write_batch(events=[])  # the first use migrates the fresh database and logs its URL
    assert store.read(queries.counts)["jobs"] == 0
    assert "schema upgraded" in debug_logs.text
    assert_hidden(logs=debug_logs.text, repr=repr(store))


# -- dead letters ----------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.postgresql
def test_dead_letter_reasons_hide_the_database_password(debug_logs, password_redis, password_postgresql):
    broker_url = f"redis://:{PASSWORD}@127.0.0.1:{password_redis}/0"
    name = unique_queue()
    cfg = config.load(
        {
            "broker_url": broker_url,
            "queue": name,
            "dead_letter_queue": f"{name}.dlq",
            "batch_max_wait": 0.05,
            "worker_max_attempts": 1,
            "worker_prefetch": 1,
        }
    )
    # PostgreSQL refuses NUL characters: a real refusal while the database is up.
    nul = (
        "salt/job/20261125139999999999/ret/m1",
        {"fun": "cmd.run", "id": "m1", "jid": "20261125139999999999", "return": "nul \x00 here", "retcode": 0},
    )
    publish_batches(cfg, [nul], per_message=1)  # refused whole: "the database refused the batch"
    publish_batches(cfg, [*job_events(2), nul], per_message=10)  # refused event by event
    store = Store(password_postgresql)
    with WorkerThread(cfg, store) as worker:
        assert wait_for(lambda: sum(worker.counts["dead_lettered"].values()) == 2, timeout=30)
        assert wait_for(lambda: worker.counts["messages_stored"] == 1, timeout=30)
    assert store.read(queries.counts)["jobs"] == 2
    letters = take_all(broker_url, cfg.dead_letter_queue)
    reasons = [headers[REASON_HEADER] for headers, _ in letters]
    assert len(reasons) == 2
    assert any(reason.startswith("the database refused the batch") for reason in reasons)
    assert any("rejected: the database refused it" in reason for reason in reasons)
    for reason in reasons:
        assert f"{shared.POSTGRESQL_USER}:***@" in reason  # the URL is in the reason, masked
    assert_hidden(dead_letter_headers=repr([headers for headers, _ in letters]), logs=debug_logs.text, stats=repr(worker.stats()))


# -- the salt-relay command --------------------------------------------------------


def start_salt_relay(config_dir, *args, env=None):
    """``salt-relay -c <config_dir> -l debug <args>`` with only our SALT_RELAY_* variables."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("SALT_RELAY_")}
    environ.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "salt_engine_lib.cli", "-c", str(config_dir), "-l", "debug", *args],
        cwd=REPO,
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc, timeout=60):
    """(returncode, stdout, stderr) of a started salt-relay."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def salt_relay(config_dir, *args, env=None):
    return finish(start_salt_relay(config_dir, *args, env=env))


def test_cli_errors_hide_the_passwords(tmp_path, closed_port):
    env = {
        "SALT_RELAY_BROKER_URL": f"amqp://relay:{PASSWORD}@127.0.0.1:{closed_port}//",
        "SALT_RELAY_DATABASE_URL": f"mysql+pymysql://relay:{PASSWORD}@127.0.0.1:{closed_port}/relay",
    }
    # Database fine, broker down: status reports the broker error, masked, and exits 2 (down).
    sqlite_env = {**env, "SALT_RELAY_DATABASE_URL": f"sqlite:///{tmp_path / 'relay.db'}"}
    started = [  # side by side: the broker retry waits overlap the other runs
        start_salt_relay(tmp_path, "status", env=env),
        start_salt_relay(tmp_path, "db", "current", env=env),
        start_salt_relay(tmp_path, "status", "--json", env=sqlite_env),
    ]
    (status_rc, status_out, status_err), (current_rc, current_out, current_err), (partial_rc, partial_out, partial_err) = map(
        finish, started
    )
    assert current_rc == 1, current_err[-2000:]
    assert f"StoreError: mysql+pymysql://relay:***@127.0.0.1:{closed_port}/relay" in current_err
    assert status_rc == 2, status_err[-2000:]
    assert f"database unreachable: mysql+pymysql://relay:***@127.0.0.1:{closed_port}/relay" in status_out
    assert partial_rc == 2, partial_err[-2000:]
    report = json.loads(partial_out)
    assert report["broker"]["url"] == f"amqp://relay:***@127.0.0.1:{closed_port}//"
    assert report["broker"]["error"].startswith(f"amqp://relay:***@127.0.0.1:{closed_port}//: ")
    assert_hidden(
        status_out=status_out,
        status_err=status_err,
        current_out=current_out,
        current_err=current_err,
        partial_out=partial_out,
        partial_err=partial_err,
    )


@pytest.mark.redis
@pytest.mark.postgresql
def test_cli_at_work_hides_the_passwords(tmp_path, password_redis, password_postgresql):
    env = {
        "SALT_RELAY_BROKER_URL": f"redis://:{PASSWORD}@127.0.0.1:{password_redis}/0",
        "SALT_RELAY_DATABASE_URL": password_postgresql,
        "SALT_RELAY_QUEUE": unique_queue(),
    }
    upgrade_rc, upgrade_out, upgrade_err = salt_relay(tmp_path, "-l", "info", "db", "upgrade", env=env)
    assert upgrade_rc == 0, upgrade_err[-2000:]
    assert upgrade_out.startswith(f"postgresql+psycopg://{shared.POSTGRESQL_USER}:***@")
    status_rc, status_out, status_err = salt_relay(tmp_path, "status", "--json", env=env)
    assert status_rc == 2, status_err[-2000:]  # down: no engine runs in this test
    report = json.loads(status_out)
    assert report["broker"]["url"] == f"redis://:***@127.0.0.1:{password_redis}/0"
    assert report["database"]["url"].startswith(f"postgresql+psycopg://{shared.POSTGRESQL_USER}:***@")
    assert report["broker"]["queues"] == {
        env["SALT_RELAY_QUEUE"]: {"messages": 0, "consumers": None},
        "salt-relay.dlq": {"messages": 0, "consumers": None},
    }
    # The worker logs its broker and database when it starts consuming.
    worker = start_salt_relay(tmp_path, "worker", env=env)
    try:
        wait_for(lambda: worker.poll() is not None or _consumer_count(env) >= 1, timeout=30, interval=0.1)
        worker.send_signal(signal.SIGTERM)
    finally:
        worker_rc, worker_out, worker_err = finish(worker, timeout=30)
    assert worker_rc == 0, worker_err[-3000:]
    assert "consuming" in worker_err, worker_err[-3000:]
    assert f"redis://:***@127.0.0.1:{password_redis}/0" in worker_err
    assert_hidden(upgrade=upgrade_out + upgrade_err, status=status_out + status_err, worker=worker_out + worker_err)


def _consumer_count(env):
    """Clients connected to the private Redis besides us: the worker's consumer is one."""
    import redis

    client = redis.Redis.from_url(env["SALT_RELAY_BROKER_URL"], socket_timeout=5)
    try:
        return sum(1 for info in client.client_list() if info.get("cmd") in ("brpop", "blpop", "bzpopmin", "subscribe", "psubscribe"))
    finally:
        client.close()
