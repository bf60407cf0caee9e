"""TLS to the broker and the database, on private servers that speak nothing else.

Each server here is started by the test module on a free port with a
throwaway CA (tests/security/certs.py) and stopped afterwards:

* Redis: a TLS port only (``--port 0``), so whatever reaches it is TLS;
* PostgreSQL: ``hostssl`` lines only in pg_hba.conf, so clear text is refused;
* MariaDB: users created ``REQUIRE SSL`` / ``REQUIRE X509``.

Each positive test has its negatives: an unknown CA is refused (no silent
fallback to an unverified or clear-text connection), and the server refuses
a client that does not do TLS.
"""

import uuid

import pytest

from salt_engine_lib import broker, config, message, records
from salt_engine_lib.errors import BrokerUnavailable, StoreError
from salt_engine_lib.store import Store, connection, queries
from tests.pipeline_helpers import WorkerThread, job_events, publish_batches
from tests.security import servers
from tests.waiting import wait_for


@pytest.fixture(autouse=True)
def _dispose_engines():
    yield
    connection.dispose_all()  # no pooled connection outlives its test (or the private server)


def job_rows(count, start=0):
    jobs, returns, events = [], [], []
    for tag, data in job_events(count, start):
        new_jobs, new_returns, new_events, _ = records.rows_from_event(tag, data, "master-1")
        jobs += new_jobs
        returns += new_returns
        events += new_events
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
        Store(url, ssl={"ca": str(certs.ca), "cert": str(other_certs.client_cert), "key": str(other_certs.client_key)}).write_batch(*job_rows(1))
    connection.dispose_all()
    store = Store(url, ssl={"ca": str(certs.ca), "cert": str(certs.client_cert), "key": str(certs.client_key)})
    store.write_batch(*job_rows(3))
    assert store.read(queries.counts)["jobs"] == 3
    in_use, client_dn = store.read(lambda conn: conn.exec_driver_sql(SSL_STATE).one())
    assert in_use is True
    assert "CN=relay_client" in client_dn


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
    args = connection._connect_args(connection.make_url(store.database_url), store.ssl)["ssl"]
    assert args["check_hostname"] is True and args["verify_mode"] is True
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
        Store(url, ssl={"ca": str(certs.ca), "cert": str(other_certs.client_cert), "key": str(other_certs.client_key)}).write_batch(*job_rows(1))
    connection.dispose_all()
    store = Store(url, ssl={"ca": str(certs.ca), "cert": str(certs.client_cert), "key": str(certs.client_key)})
    store.write_batch(*job_rows(3))
    assert store.read(queries.counts)["jobs"] == 3
    assert mysql_cipher(store)
