"""SQLAlchemy engines: one per URL per process, created on first use.

Salt forks MWorkers after import, so an engine made before a fork must never
be used after it: engines are keyed by PID.

TLS (relay:database_ssl) verifies the server by default: its certificate
against ``ca``, or against the system CA store when ``ca`` is not given, and
its host name. ``verify: false`` keeps the encryption but drops both checks;
that is logged at WARNING once per process.
"""

from __future__ import annotations

import logging
import os
import pathlib
import ssl as _ssl
import threading
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from salt_engine_lib import jsonsafe
from salt_engine_lib.errors import ConfigError

log = logging.getLogger(__name__)

_engines = {}
_lock = threading.Lock()
_unverified_warned_pid = None  # the PID that logged the verify: false warning


def _verify(ssl, url):
    """True unless relay:database_ssl:verify is false (then warned, once per process)."""
    global _unverified_warned_pid
    if ssl.get("verify", True) is not False:
        return True
    if _unverified_warned_pid != os.getpid():
        _unverified_warned_pid = os.getpid()
        # Host and port only: the URL may carry a password.
        log.warning(
            "relay:database_ssl:verify is false: TLS to the database at %s:%s does not check the "
            "server certificate or host name, so anyone on the path can pose as the server",
            url.host or "localhost",
            url.port or "default port",
        )
    return False


def _mysql_ssl(ssl, url):
    """The ssl.SSLContext PyMySQL gets (with one, PyMySQL always requires TLS).

    Not PyMySQL's dict form: given no ``ca`` it turns the host name check off
    (``check_hostname = not hasnoca and ...`` in its ``_create_ssl_ctx``).
    """
    # No ca: create_default_context loads the system store (load_default_certs).
    context = _ssl.create_default_context(cafile=ssl.get("ca") or None)
    # As PyMySQL does: Python 3.13's strict X.509 checks refuse the CA MySQL generates for itself.
    context.verify_flags &= ~_ssl.VERIFY_X509_STRICT
    if not _verify(ssl, url):
        context.check_hostname = False
        context.verify_mode = _ssl.CERT_NONE
    if ssl.get("cert"):
        context.load_cert_chain(ssl["cert"], keyfile=ssl.get("key") or None)
    return context


def _system_ca_bundle():
    """The system CA bundle file for libpq: the one Python's OpenSSL (so PyMySQL, Kombu) uses.

    Not ``sslrootcert=system`` (libpq >= 16): psycopg[binary] bundles its own
    OpenSSL whose default store (/usr/lib/psycopg-openssl) does not exist on
    the system, so "system" would trust nothing. A file path works with every
    libpq. ``SSL_CERT_FILE`` is honoured, as OpenSSL honours it.
    """
    cafile = _ssl.get_default_verify_paths().cafile
    if cafile:
        return cafile
    raise ConfigError(
        "relay:database_ssl: no system CA bundle found (ssl.get_default_verify_paths() has no cafile); "
        "set relay:database_ssl:ca to the CA file that signed the database server's certificate"
    )


def _postgresql_ssl(ssl, url):
    if not _verify(ssl, url):
        args = {"sslmode": "require"}  # encrypted, server not checked
    else:
        args = {"sslmode": "verify-full", "sslrootcert": ssl.get("ca") or _system_ca_bundle()}
    for ours, libpq in (("cert", "sslcert"), ("key", "sslkey")):
        if ssl.get(ours):
            args[libpq] = ssl[ours]
    return args


def _connect_args(url, ssl):
    backend = url.get_backend_name()
    if backend in ("mysql", "mariadb"):
        args = {"charset": "utf8mb4"}
        if ssl is not None:
            args["ssl"] = _mysql_ssl(ssl, url)
        return args
    if backend == "postgresql":
        return _postgresql_ssl(ssl, url) if ssl is not None else {}
    if ssl is not None:
        raise ConfigError("relay:database_ssl does not apply to sqlite URLs")
    # Several processes (MWorkers, workers, CLIs) share the file.
    return {"timeout": 30}


def _sqlite_pragmas(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the one writer; NORMAL is durable across
    # process crashes (kill -9), which is the failure we guarantee against.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_engine(database_url: str, ssl: Optional[dict] = None, for_reads: bool = False) -> sa.Engine:
    """An engine for ``database_url``; ``for_reads``: the job-cache reads' own pool.

    A point read is a round trip or two, and each extra one is a large part
    of it: so the reads' connections are checked out without a ping (a read
    that meets a dropped connection is retried once on a new one instead,
    :meth:`salt_engine_lib.store.Store.read`) and run in autocommit, so that
    neither a BEGIN (psycopg) nor a ROLLBACK when the connection goes back
    to the pool costs one. Each statement then reads its own snapshot, which
    a read of committed, keyed rows does not mind. Writes keep transactions.
    """
    url = make_url(database_url)
    kwargs = {
        "connect_args": _connect_args(url, ssl),
        "json_serializer": jsonsafe.dumps,
        "future": True,
    }
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            pathlib.Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    else:
        kwargs.update(pool_pre_ping=not for_reads, pool_recycle=3600, pool_size=2, max_overflow=4)
        if for_reads:
            kwargs.update(isolation_level="AUTOCOMMIT", skip_autocommit_rollback=True)
    engine = sa.create_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def get_engine(database_url: str, ssl: Optional[dict] = None, for_reads: bool = False) -> sa.Engine:
    """The process's engine for this URL (new after a fork); ``for_reads``: see :func:`create_engine`."""
    # None (no TLS) and {} (TLS, defaults) are different engines.
    key = (os.getpid(), database_url, None if ssl is None else repr(sorted(ssl.items())), for_reads)
    engine = _engines.get(key)
    if engine is None:
        with _lock:
            engine = _engines.get(key)
            if engine is None:
                engine = _engines[key] = create_engine(database_url, ssl, for_reads)
    return engine


def dispose_all() -> None:
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()
