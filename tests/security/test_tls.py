"""TLS to the broker and the database, on private servers that speak nothing else.

Each server here is started by the test module on a free port with a
throwaway CA (tests/security/certs.py) and stopped afterwards:

* Redis: a TLS port only (``--port 0``), so whatever reaches it is TLS;
* PostgreSQL: ``hostssl`` lines only in pg_hba.conf, so clear text is refused;
* MariaDB: users created ``REQUIRE SSL`` / ``REQUIRE X509``;
* RabbitMQ: a private TLS listener (servers.tls_front) in front of the
  shared clear-text server, which it reaches as an ordinary client.

Each positive test has its negatives: an unknown CA is refused (no silent
fallback to an unverified or clear-text connection), and the server refuses
a client that does not do TLS.

Verification is on by default: TLS without a CA checks the server against
the system CA store, which does not know the throwaway CA, so it is refused;
the same connection succeeds once the CA is in a system-style bundle
(``SSL_CERT_FILE``). A CA-signed certificate for another host name is
refused, with a CA and with the system store. ``verify: false`` /
``cert_reqs: none`` connect unverified and say so once per process.
"""

import logging
import pathlib
import ssl
import urllib.parse
import uuid

import pytest

from salt_engine_lib import broker, config, message, records
from salt_engine_lib.errors import BrokerUnavailable, StoreError
from salt_engine_lib.store import Store, connection, queries
from salt_engine_lib.urls import mask_url
from tests.support.brokers import RABBITMQ_URL, check_broker, delete_queues
from tests.pipeline_helpers import WorkerThread, job_events, publish_batches
from tests.security import servers
from tests.support.waiting import wait_for


@pytest.fixture(autouse=True)
def _dispose_engines():
    yield
    connection.dispose_all()  # no pooled connection outlives its test (or the private server)


@pytest.fixture(autouse=True)
def _installed_system_store(monkeypatch):
    """The system CA store as installed (it does not know the throwaway CA); no unverified warning given yet."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setattr(connection, "_unverified_warned_pid", None)
    monkeypatch.setattr(broker, "_unverified_warned_pid", None)


@pytest.fixture
def system_store_trusting_the_ca(certs, tmp_path, monkeypatch):
    """A system-style bundle (the installed one plus the throwaway CA) as ``SSL_CERT_FILE``.

    Every client here honours it when no CA is configured, because each asks
    OpenSSL for its default paths, and OpenSSL reads the variable then:
    PyMySQL (salt-relay's ``ssl.create_default_context()``), libpq (salt-relay
    passes ``ssl.get_default_verify_paths().cafile`` as sslrootcert), redis-py
    (``create_default_context()``) and py-amqp (``load_default_certs()``).
    """
    installed = ssl.get_default_verify_paths().cafile
    bundle = tmp_path / "system-bundle.pem"
    bundle.write_bytes((pathlib.Path(installed).read_bytes() if installed else b"") + certs.ca.read_bytes())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    return bundle


def trust(kind, certs, request):
    """relay's CA option for ``kind`` ("ca"), or nothing and the CA in the system store ("system store")."""
    if kind == "system store":
        request.getfixturevalue("system_store_trusting_the_ca")
        return {}
    return {"ca": str(certs.ca)}


def unverified_warnings(caplog, logger):
    return [record.getMessage() for record in caplog.records if record.name == logger and record.levelno == logging.WARNING]


def job_rows(count, start=0):
    jobs, returns, events = [], [], []
    for tag, data in job_events(count, start):
        rows = records.rows_from_event(tag, data, "master-1")
        jobs += rows.jobs
        returns += rows.returns
        events += rows.events
    return jobs, returns, events


def one_message():
    return message.encode([("salt/job/20261125130000000001/new", {"fun": "test.ping", "jid": "20261125130000000001"})], "master-1")


# -- Redis ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_redis(certs, tmp_path_factory):
    """Port of a private Redis that only speaks TLS; client certificates optional."""
    with servers.redis_server(tmp_path_factory.mktemp("redis-tls"), certs) as port:
        yield port


@pytest.fixture(scope="module")
def mutual_tls_redis(certs, tmp_path_factory):
    """Port of a private TLS-only Redis that requires a client certificate from the CA."""
    with servers.redis_server(tmp_path_factory.mktemp("redis-mtls"), certs, auth_clients="yes") as port:
        yield port


def redis_config(port, broker_ssl, scheme="rediss", **extra):
    name = f"relay-tls-{uuid.uuid4().hex[:8]}"
    return config.load(
        {
            "broker_url": f"{scheme}://127.0.0.1:{port}/0",
            "broker_ssl": broker_ssl,
            "queue": name,
            "dead_letter_queue": f"{name}.dlq",
            "batch_max_wait": 0.05,
            **extra,
        }
    )


def publish_fails(cfg):
    publisher = broker.Publisher(cfg, max_retries=1)
    try:
        with pytest.raises(BrokerUnavailable) as caught:
            publisher.publish(*reversed(one_message()))
    finally:
        publisher.close()
    return str(caught.value)


@pytest.mark.redis
def test_redis_over_verified_tls_carries_the_pipeline(tls_redis, certs, tmp_path):
    cfg = redis_config(tls_redis, {"ca_certs": str(certs.ca), "cert_reqs": "required"})
    assert broker.ssl_options(cfg.broker_url, cfg.broker_ssl)["ssl_cert_reqs"] == broker.ssl.CERT_REQUIRED
    publish_batches(cfg, job_events(20), per_message=10)
    assert broker.queue_depths(cfg) == {cfg.queue: 4, cfg.dead_letter_queue: 0}  # 40 events, 10 a message
    store = Store(f"sqlite:///{tmp_path / 'relay.db'}")
    with WorkerThread(cfg, store) as worker:
        assert wait_for(lambda: worker.counts["messages_stored"] == 4, timeout=30)
    counts = store.read(queries.counts)
    assert (counts["jobs"], counts["returns"], counts["events"]) == (20, 20, 40)
    assert broker.queue_depths(cfg) == {cfg.queue: 0, cfg.dead_letter_queue: 0}


@pytest.mark.redis
def test_redis_tls_port_refuses_clear_text(tls_redis):
    # The server has no clear-text port, so what the other tests send through it is TLS.
    reason = publish_fails(redis_config(tls_redis, None, scheme="redis"))
    assert reason.startswith(f"redis://127.0.0.1:{tls_redis}/0: ")


@pytest.mark.redis
@pytest.mark.parametrize("which_ca", ["unknown CA", "system CAs"])
def test_redis_with_an_untrusted_certificate_is_refused(tls_redis, certs, other_certs, which_ca):
    # A wrong relay:broker_ssl:ca_certs, or rediss:// with no broker_ssl at all
    # (the system store does not know the throwaway CA): refused, never sent unverified.
    broker_ssl = {"ca_certs": str(other_certs.ca), "cert_reqs": "required"} if which_ca == "unknown CA" else None
    cfg = redis_config(tls_redis, broker_ssl)
    reason = publish_fails(cfg)
    assert "certificate verify failed" in reason
    good = redis_config(tls_redis, {"ca_certs": str(certs.ca)}, queue=cfg.queue)
    assert broker.queue_depths(good)[cfg.queue] == 0  # nothing was published


@pytest.mark.redis
def test_redis_client_certificate_is_presented(mutual_tls_redis, certs, other_certs):
    without = redis_config(mutual_tls_redis, {"ca_certs": str(certs.ca)})
    assert publish_fails(without)  # the server wants a client certificate
    foreign = redis_config(
        mutual_tls_redis,
        {"ca_certs": str(certs.ca), "certfile": str(other_certs.client_cert), "keyfile": str(other_certs.client_key)},
    )
    assert publish_fails(foreign)  # one the server's CA did not sign
    cfg = redis_config(
        mutual_tls_redis,
        {"ca_certs": str(certs.ca), "certfile": str(certs.client_cert), "keyfile": str(certs.client_key), "cert_reqs": "required"},
    )
    publish_batches(cfg, job_events(3), per_message=10)
    assert broker.queue_depths(cfg)[cfg.queue] == 1


@pytest.fixture(scope="module")
def wrong_host_redis(certs, tmp_path_factory):
    """Port of a private TLS-only Redis whose CA-signed certificate names wrong-host.invalid only."""
    with servers.redis_server(tmp_path_factory.mktemp("redis-wrong-host"), certs.for_wrong_host()) as port:
        yield port


@pytest.mark.redis
@pytest.mark.parametrize(("scheme", "broker_ssl"), [("rediss", None), ("redis", True)], ids=["rediss-url", "broker_ssl-true"])
def test_redis_tls_without_ca_checks_the_system_store(tls_redis, scheme, broker_ssl):
    cfg = redis_config(tls_redis, broker_ssl, scheme=scheme)
    options = broker.ssl_options(cfg.broker_url, cfg.broker_ssl)
    assert options["ssl_cert_reqs"] == ssl.CERT_REQUIRED and options["ssl_check_hostname"] is True
    assert "certificate verify failed" in publish_fails(cfg)  # the installed store does not know the throwaway CA


@pytest.mark.redis
def test_redis_tls_without_ca_trusts_the_system_store(tls_redis, system_store_trusting_the_ca):
    cfg = redis_config(tls_redis, None)
    publish_batches(cfg, job_events(1), per_message=10)
    assert broker.queue_depths(cfg)[cfg.queue] == 1


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["ca", "system store"])
def test_redis_checks_the_host_name(wrong_host_redis, certs, kind, request):
    ca = trust(kind, certs, request)
    cfg = redis_config(wrong_host_redis, {"ca_certs": ca["ca"]} if ca else None)
    reason = publish_fails(cfg)
    assert "certificate verify failed" in reason and "mismatch" in reason, reason


@pytest.mark.redis
def test_redis_cert_reqs_none_connects_unverified_and_warns_once(tls_redis, caplog):
    caplog.set_level(logging.WARNING, logger="salt_engine_lib.broker")
    cfg = redis_config(tls_redis, {"cert_reqs": "none"})
    for _ in range(2):  # two publishers, two connections
        publish_batches(cfg, job_events(1), per_message=10)
    assert broker.queue_depths(cfg)[cfg.queue] == 2
    warnings = unverified_warnings(caplog, "salt_engine_lib.broker")
    assert len(warnings) == 1, warnings
    assert f"cert_reqs is none: TLS to the broker at 127.0.0.1:{tls_redis} does not check" in warnings[0]


# -- PostgreSQL ------------------------------------------------------------------

SSL_STATE = "SELECT ssl, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


@pytest.fixture(scope="module")
def tls_postgresql(certs):
    """Port of a private PostgreSQL that accepts TCP clients over TLS only.

    ``relay_client`` must present a client certificate (CN=relay_client);
    every other role is trusted once TLS is up. There is no ``host`` line:
    clear text is refused.
    """
    import psycopg

    hba = [
        "local all postgres trust",
        "hostssl all relay_client 127.0.0.1/32 cert",
        "hostssl all all 127.0.0.1/32 trust",
    ]
    with servers.postgresql_server(certs, hba) as (port, socket_dir):
        with psycopg.connect(host=socket_dir, port=port, user="postgres", dbname="postgres", autocommit=True) as admin:
            admin.execute("CREATE ROLE relay_client LOGIN")
            admin.execute("CREATE DATABASE relay")
            admin.execute("CREATE DATABASE relay_cert OWNER relay_client")
        yield port


def pg_url(port, user="postgres", database="relay", host="127.0.0.1"):
    return f"postgresql+psycopg://{user}@{host}:{port}/{database}"


@pytest.mark.postgresql
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_postgresql_over_verified_tls_stores_a_batch(tls_postgresql, certs, host):
    store = Store(pg_url(tls_postgresql, host=host), ssl={"ca": str(certs.ca), "verify": True})
    assert connection._connect_args(connection.make_url(store.database_url), store.ssl)["sslmode"] == "verify-full"
    jobs, returns, events = job_rows(5, start=0 if host == "127.0.0.1" else 100)
    store.write_batch(jobs, returns, events)
    assert store.read(queries.counts)["jobs"] >= 5
    in_use, client_dn = store.read(lambda conn: conn.exec_driver_sql(SSL_STATE).one())
    assert in_use is True
    assert client_dn is None  # no client certificate configured, none sent


@pytest.mark.postgresql
def test_postgresql_refuses_clear_text(tls_postgresql):
    # libpq would otherwise *prefer* TLS on its own; sslmode=disable forces clear text.
    store = Store(pg_url(tls_postgresql) + "?sslmode=disable")
    with pytest.raises(StoreError, match="no pg_hba.conf entry .* no encryption"):
        store.write_batch(*job_rows(1))


@pytest.mark.postgresql
def test_postgresql_with_an_unknown_ca_is_refused(tls_postgresql, other_certs):
    store = Store(pg_url(tls_postgresql), ssl={"ca": str(other_certs.ca), "verify": True})
    with pytest.raises(StoreError, match="certificate verify failed"):
        store.write_batch(*job_rows(1))


@pytest.mark.postgresql
def test_postgresql_client_certificate_is_presented(tls_postgresql, certs, other_certs):
    url = pg_url(tls_postgresql, user="relay_client", database="relay_cert")
    with pytest.raises(StoreError, match="requires a valid client certificate"):
        Store(url, ssl={"ca": str(certs.ca)}).write_batch(*job_rows(1))
    connection.dispose_all()
    with pytest.raises(StoreError, match="unknown ca"):  # signed by another CA: the server rejects the handshake
        Store(url, ssl={"ca": str(certs.ca), "cert": str(other_certs.client_cert), "key": str(other_certs.client_key)}).write_batch(
            *job_rows(1)
        )
    connection.dispose_all()
    store = Store(url, ssl={"ca": str(certs.ca), "cert": str(certs.client_cert), "key": str(certs.client_key)})
    store.write_batch(*job_rows(3))
    assert store.read(queries.counts)["jobs"] == 3
    in_use, client_dn = store.read(lambda conn: conn.exec_driver_sql(SSL_STATE).one())
    assert in_use is True
    assert "CN=relay_client" in client_dn


@pytest.fixture(scope="module")
def wrong_host_postgresql(certs):
    """Port of a private TLS-only PostgreSQL whose CA-signed certificate names wrong-host.invalid only."""
    hba = ["local all postgres trust", "hostssl all all 127.0.0.1/32 trust"]
    with servers.postgresql_server(certs.for_wrong_host(), hba) as (port, _socket_dir):
        yield port


@pytest.mark.postgresql
@pytest.mark.parametrize("database_ssl", [True, {"verify": True}], ids=["true", "mapping"])
def test_postgresql_tls_without_ca_checks_the_system_store(tls_postgresql, database_ssl):
    store = Store(pg_url(tls_postgresql), ssl=config.load({"database_ssl": database_ssl}).database_ssl)
    args = connection._connect_args(connection.make_url(store.database_url), store.ssl)
    assert args == {"sslmode": "verify-full", "sslrootcert": ssl.get_default_verify_paths().cafile}
    with pytest.raises(StoreError, match="certificate verify failed") as caught:
        store.write_batch(*job_rows(1))
    assert str(caught.value).startswith(f"postgresql+psycopg://postgres@127.0.0.1:{tls_postgresql}/relay: OperationalError: ")


@pytest.mark.postgresql
def test_postgresql_tls_without_ca_trusts_the_system_store(tls_postgresql, system_store_trusting_the_ca):
    store = Store(pg_url(tls_postgresql), ssl={})
    store.write_batch(*job_rows(2, start=200))
    assert store.read(lambda conn: conn.exec_driver_sql(SSL_STATE).one())[0] is True


@pytest.mark.postgresql
@pytest.mark.parametrize("kind", ["ca", "system store"])
def test_postgresql_checks_the_host_name(wrong_host_postgresql, certs, kind, request):
    store = Store(pg_url(wrong_host_postgresql, database="postgres"), ssl=trust(kind, certs, request))
    with pytest.raises(StoreError, match='server certificate for "wrong-host.invalid".* does not match host name "127.0.0.1"'):
        store.write_batch(*job_rows(1))


@pytest.mark.postgresql
def test_postgresql_verify_false_connects_unverified_and_warns_once(tls_postgresql, caplog):
    caplog.set_level(logging.WARNING, logger="salt_engine_lib.store.connection")
    for start in (300, 310):  # two engines, two connections
        store = Store(pg_url(tls_postgresql), ssl={"verify": False})
        assert connection._connect_args(connection.make_url(store.database_url), store.ssl) == {"sslmode": "require"}
        store.write_batch(*job_rows(1, start=start))
        assert store.read(lambda conn: conn.exec_driver_sql(SSL_STATE).one())[0] is True  # still encrypted
        connection.dispose_all()
    warnings = unverified_warnings(caplog, "salt_engine_lib.store.connection")
    assert len(warnings) == 1, warnings
    assert f"verify is false: TLS to the database at 127.0.0.1:{tls_postgresql} does not check" in warnings[0]


# -- MariaDB -------------------------------------------------------------------

MYSQL_PASSWORD = "relay-tls-pw"


@pytest.fixture(scope="module")
def tls_mariadb(certs, tmp_path_factory):
    """Port of a private MariaDB with TLS; ``relay`` REQUIRE SSL, ``relay_x509`` REQUIRE X509."""
    import pymysql

    with servers.mariadb_server(tmp_path_factory.mktemp("mariadb"), certs) as (port, sock):
        admin = pymysql.connect(unix_socket=sock, user="root", password="", autocommit=True)
        with admin.cursor() as cursor:
            for user, requirement in (("relay", "SSL"), ("relay_x509", "X509")):
                cursor.execute(f"CREATE DATABASE {user}")
                cursor.execute(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{MYSQL_PASSWORD}' REQUIRE {requirement}")
                cursor.execute(f"GRANT ALL ON {user}.* TO '{user}'@'127.0.0.1'")
        admin.close()
        yield port


def mysql_url(port, user="relay", host="127.0.0.1"):
    return f"mysql+pymysql://{user}:{MYSQL_PASSWORD}@{host}:{port}/{user}"


def mysql_cipher(store):
    return store.read(lambda conn: conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Ssl_cipher'").one()[1])


@pytest.mark.mysql
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_mariadb_over_verified_tls_stores_a_batch(tls_mariadb, certs, host):
    store = Store(mysql_url(tls_mariadb, host=host), ssl={"ca": str(certs.ca), "verify": True})
    context = connection._connect_args(connection.make_url(store.database_url), store.ssl)["ssl"]
    assert context.check_hostname is True and context.verify_mode == ssl.CERT_REQUIRED
    store.write_batch(*job_rows(5, start=0 if host == "127.0.0.1" else 100))
    assert store.read(queries.counts)["jobs"] >= 5
    assert mysql_cipher(store)  # non-empty: this session is encrypted


@pytest.mark.mysql
def test_mariadb_refuses_clear_text(tls_mariadb):
    store = Store(mysql_url(tls_mariadb) + "?ssl_disabled=true")
    with pytest.raises(StoreError, match="Access denied for user 'relay'"):
        store.write_batch(*job_rows(1))


@pytest.mark.mysql
def test_mariadb_with_an_unknown_ca_is_refused(tls_mariadb, other_certs):
    store = Store(mysql_url(tls_mariadb), ssl={"ca": str(other_certs.ca), "verify": True})
    with pytest.raises(StoreError, match="certificate verify failed"):
        store.write_batch(*job_rows(1))


@pytest.mark.mysql
def test_mariadb_client_certificate_is_presented(tls_mariadb, certs, other_certs):
    url = mysql_url(tls_mariadb, user="relay_x509")
    with pytest.raises(StoreError, match="Access denied for user 'relay_x509'"):
        Store(url, ssl={"ca": str(certs.ca)}).write_batch(*job_rows(1))
    connection.dispose_all()
    # Signed by another CA: the server drops the handshake (the client sees an SSL EOF).
    with pytest.raises(StoreError, match="SSL"):
        Store(url, ssl={"ca": str(certs.ca), "cert": str(other_certs.client_cert), "key": str(other_certs.client_key)}).write_batch(
            *job_rows(1)
        )
    connection.dispose_all()
    store = Store(url, ssl={"ca": str(certs.ca), "cert": str(certs.client_cert), "key": str(certs.client_key)})
    store.write_batch(*job_rows(3))
    assert store.read(queries.counts)["jobs"] == 3
    assert mysql_cipher(store)


@pytest.fixture(scope="module")
def wrong_host_mariadb(certs, tmp_path_factory):
    """Port of a private MariaDB whose CA-signed certificate names wrong-host.invalid only."""
    with servers.mariadb_server(tmp_path_factory.mktemp("mariadb-wrong-host"), certs.for_wrong_host()) as (port, _sock):
        yield port


@pytest.mark.mysql
@pytest.mark.parametrize("database_ssl", [True, {"verify": True}], ids=["true", "mapping"])
def test_mariadb_tls_without_ca_checks_the_system_store(tls_mariadb, database_ssl):
    store = Store(mysql_url(tls_mariadb), ssl=config.load({"database_ssl": database_ssl}).database_ssl)
    context = connection._connect_args(connection.make_url(store.database_url), store.ssl)["ssl"]
    assert context.check_hostname is True and context.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(StoreError, match="certificate verify failed") as caught:
        store.write_batch(*job_rows(1))
    assert str(caught.value).startswith(f"mysql+pymysql://relay:***@127.0.0.1:{tls_mariadb}/relay: OperationalError: ")


@pytest.mark.mysql
def test_mariadb_tls_without_ca_trusts_the_system_store(tls_mariadb, system_store_trusting_the_ca):
    store = Store(mysql_url(tls_mariadb), ssl={})
    store.write_batch(*job_rows(2, start=200))
    assert mysql_cipher(store)


@pytest.mark.mysql
@pytest.mark.parametrize("kind", ["ca", "system store"])
def test_mariadb_checks_the_host_name(wrong_host_mariadb, certs, kind, request):
    # Unverified, the handshake would pass and the login fail ("Access denied"): the server has no relay user.
    store = Store(mysql_url(wrong_host_mariadb), ssl=trust(kind, certs, request))
    with pytest.raises(StoreError, match="certificate verify failed: IP address mismatch"):
        store.write_batch(*job_rows(1))


@pytest.mark.mysql
def test_mariadb_verify_false_connects_unverified_and_warns_once(tls_mariadb, caplog):
    caplog.set_level(logging.WARNING, logger="salt_engine_lib.store.connection")
    for start in (300, 310):  # two engines, two connections
        store = Store(mysql_url(tls_mariadb), ssl={"verify": False})
        context = connection._connect_args(connection.make_url(store.database_url), store.ssl)["ssl"]
        assert context.verify_mode == ssl.CERT_NONE and context.check_hostname is False
        store.write_batch(*job_rows(1, start=start))
        assert mysql_cipher(store)  # still encrypted
        connection.dispose_all()
    warnings = unverified_warnings(caplog, "salt_engine_lib.store.connection")
    assert len(warnings) == 1, warnings
    assert f"verify is false: TLS to the database at 127.0.0.1:{tls_mariadb} does not check" in warnings[0]
    assert MYSQL_PASSWORD not in caplog.text


# -- RabbitMQ ------------------------------------------------------------------


def amqps_url(port, host="127.0.0.1"):
    """RABBITMQ_URL's user and vhost, over TLS to a private front on ``port``."""
    parts = urllib.parse.urlsplit(RABBITMQ_URL)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urllib.parse.urlunsplit(("amqps", f"{userinfo}{host}:{port}", parts.path, parts.query, ""))


@pytest.fixture(scope="module")
def shared_rabbitmq():
    """(host, port) of the shared clear-text RabbitMQ (skips when it does not answer)."""
    parts = urllib.parse.urlsplit(check_broker("rabbitmq"))
    return parts.hostname, parts.port or 5672


@pytest.fixture(scope="module")
def tls_rabbitmq(certs, shared_rabbitmq):
    """Port of a private TLS front (the throwaway CA's server certificate) to the shared RabbitMQ."""
    with servers.tls_front(certs, *shared_rabbitmq) as port:
        yield port


@pytest.fixture(scope="module")
def wrong_host_rabbitmq(certs, shared_rabbitmq):
    """Port of a private TLS front to the shared RabbitMQ with the wrong-host.invalid certificate."""
    with servers.tls_front(certs.for_wrong_host(), *shared_rabbitmq) as port:
        yield port


@pytest.fixture
def amqp_queue():
    name = f"relay-tls-{uuid.uuid4().hex[:8]}"
    yield name
    delete_queues(RABBITMQ_URL, name, f"{name}.dlq")


def amqp_config(port, broker_ssl, queue_name, host="127.0.0.1"):
    return config.load(
        {
            "broker_url": amqps_url(port, host),
            "broker_ssl": broker_ssl,
            "queue": queue_name,
            "dead_letter_queue": f"{queue_name}.dlq",
            "batch_max_wait": 0.05,
        }
    )


@pytest.mark.rabbitmq
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_rabbitmq_over_verified_tls_publishes(tls_rabbitmq, certs, amqp_queue, host):
    cfg = amqp_config(tls_rabbitmq, {"ca_certs": str(certs.ca)}, amqp_queue, host=host)
    options = broker.ssl_options(cfg.broker_url, cfg.broker_ssl)
    # The name as written in the URL (Kombu's own fill-in would turn localhost into 127.0.0.1).
    assert options["cert_reqs"] == ssl.CERT_REQUIRED and options["server_hostname"] == host
    publish_batches(cfg, job_events(3), per_message=10)
    assert broker.queue_depths(cfg)[cfg.queue] == 1


@pytest.mark.rabbitmq
@pytest.mark.parametrize("broker_ssl", [None, {"cert_reqs": "required"}], ids=["amqps-url", "broker_ssl"])
def test_rabbitmq_tls_without_ca_checks_the_system_store(tls_rabbitmq, amqp_queue, broker_ssl):
    cfg = amqp_config(tls_rabbitmq, broker_ssl, amqp_queue)
    reason = publish_fails(cfg)
    assert reason.startswith(f"{mask_url(cfg.broker_url)}: ") and "certificate verify failed" in reason, reason


@pytest.mark.rabbitmq
def test_rabbitmq_tls_without_ca_trusts_the_system_store(tls_rabbitmq, amqp_queue, system_store_trusting_the_ca):
    cfg = amqp_config(tls_rabbitmq, None, amqp_queue)
    publish_batches(cfg, job_events(1), per_message=10)
    assert broker.queue_depths(cfg)[cfg.queue] == 1


@pytest.mark.rabbitmq
@pytest.mark.parametrize("kind", ["ca", "system store"])
def test_rabbitmq_checks_the_host_name(wrong_host_rabbitmq, certs, amqp_queue, kind, request):
    ca = trust(kind, certs, request)
    reason = publish_fails(amqp_config(wrong_host_rabbitmq, {"ca_certs": ca["ca"]} if ca else None, amqp_queue))
    assert "certificate verify failed: IP address mismatch" in reason, reason


@pytest.mark.rabbitmq
def test_rabbitmq_cert_reqs_none_connects_unverified_and_warns_once(tls_rabbitmq, amqp_queue, caplog):
    caplog.set_level(logging.WARNING, logger="salt_engine_lib.broker")
    cfg = amqp_config(tls_rabbitmq, {"cert_reqs": "none"}, amqp_queue)
    assert "server_hostname" not in broker.ssl_options(cfg.broker_url, cfg.broker_ssl)
    for _ in range(2):  # two publishers, two connections
        publish_batches(cfg, job_events(1), per_message=10)
    assert broker.queue_depths(cfg)[cfg.queue] == 2
    warnings = unverified_warnings(caplog, "salt_engine_lib.broker")
    assert len(warnings) == 1, warnings
    assert f"cert_reqs is none: TLS to the broker at 127.0.0.1:{tls_rabbitmq} does not check" in warnings[0]
    assert f":{urllib.parse.urlsplit(RABBITMQ_URL).password}@" not in caplog.text
