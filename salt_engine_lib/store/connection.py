"""SQLAlchemy engines: one per URL per process, created on first use.

Salt forks MWorkers after import, so an engine made before a fork must never
be used after it: engines are keyed by PID.
"""

import os
import pathlib
import threading

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from salt_engine_lib import jsonsafe
from salt_engine_lib.errors import ConfigError

_engines = {}
_lock = threading.Lock()


def _mysql_ssl(ssl):
    # PyMySQL enables TLS for any non-empty ``ssl`` dict (see its _create_ssl_ctx).
    verify = ssl.get("verify", True) and bool(ssl.get("ca"))
    options = {key: ssl[key] for key in ("ca", "cert", "key") if ssl.get(key)}
    options["check_hostname"] = verify
    options["verify_mode"] = verify
    return options


def _postgresql_ssl(ssl):
    args = {"sslmode": "verify-full" if ssl.get("verify", True) and ssl.get("ca") else "require"}
    for ours, libpq in (("ca", "sslrootcert"), ("cert", "sslcert"), ("key", "sslkey")):
        if ssl.get(ours):
            args[libpq] = ssl[ours]
    return args


def _connect_args(url, ssl):
    backend = url.get_backend_name()
    if backend in ("mysql", "mariadb"):
        args = {"charset": "utf8mb4"}
        if ssl is not None:
            args["ssl"] = _mysql_ssl(ssl)
        return args
    if backend == "postgresql":
        return _postgresql_ssl(ssl) if ssl is not None else {}
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


def create_engine(database_url, ssl=None):
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
        kwargs.update(pool_pre_ping=True, pool_recycle=3600, pool_size=2, max_overflow=4)
    engine = sa.create_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def get_engine(database_url, ssl=None):
    """The process's engine for this URL (new after a fork)."""
    key = (os.getpid(), database_url, repr(sorted((ssl or {}).items())))
    engine = _engines.get(key)
    if engine is None:
        with _lock:
            engine = _engines.get(key)
            if engine is None:
                engine = _engines[key] = create_engine(database_url, ssl)
    return engine


def dispose_all():
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()
