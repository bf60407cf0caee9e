"""Fresh databases for one test, benchmark or demo run, on the shared servers or in SQLite files.

The servers are the ones scripts/ensure-services.sh sets up on 127.0.0.1:
MariaDB as ``root`` without a password, PostgreSQL as ``postgres`` (trust).
Each database gets a unique name (``<prefix>_<hex8>``) and is dropped
afterwards, so the long-lived servers never see leftovers from another run;
an unreachable server raises :class:`~tests.support.servers.ServerUnavailable`.
"""

import contextlib
import datetime
import os
import pathlib
import shutil
import sqlite3
import tempfile
import uuid

from tests.support.servers import CONNECT_TIMEOUT, ServerUnavailable

MYSQL_HOST = os.environ.get("RELAY_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("RELAY_TEST_MYSQL_PORT", "3306"))
MYSQL_USER = "root"
POSTGRESQL_HOST = os.environ.get("RELAY_TEST_POSTGRESQL_HOST", "127.0.0.1")
POSTGRESQL_PORT = int(os.environ.get("RELAY_TEST_POSTGRESQL_PORT", "5432"))
POSTGRESQL_USER = "postgres"

#: The names people give a dialect -> the SQLAlchemy dialect name used here.
ALIASES = {
    "sqlite": "sqlite",
    "mysql": "mysql",
    "mariadb": "mysql",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "pg": "postgresql",
}


def dialect_of(name):
    """``sqlite``, ``mysql`` or ``postgresql`` for any name in :data:`ALIASES`; ValueError otherwise."""
    try:
        return ALIASES[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown database {name!r}: choose sqlite, mariadb or postgresql") from None


def unique_name(prefix="relay_test"):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def mysql_admin(**options):
    """An autocommit PyMySQL connection to the MariaDB server as root (``options`` override)."""
    import pymysql

    settings = dict(
        host=MYSQL_HOST,
        port=MYSQL_PORT,
        user=MYSQL_USER,
        password="",
        charset="utf8mb4",
        connect_timeout=CONNECT_TIMEOUT,
        autocommit=True,
    )
    try:
        return pymysql.connect(**{**settings, **options})
    except pymysql.err.OperationalError as err:
        raise ServerUnavailable("mysql", MYSQL_HOST, MYSQL_PORT, err) from None


def postgresql_admin():
    """An autocommit psycopg connection to the PostgreSQL server's ``postgres`` database."""
    try:
        import psycopg
    except ImportError as err:  # the driver is an extra: only PostgreSQL runs need it
        raise ImportError(f"PostgreSQL needs psycopg ({err}): pip install -e '.[postgres]'") from err

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
        raise ServerUnavailable("postgresql", POSTGRESQL_HOST, POSTGRESQL_PORT, err) from None


def _admin_execute(dialect, statement):
    if dialect == "mysql":
        with mysql_admin() as admin, admin.cursor() as cursor:
            cursor.execute(statement)
    else:
        with postgresql_admin() as admin:
            admin.execute(statement)


def server_url(dialect, name):
    """SQLAlchemy URL of database ``name`` on the MariaDB (``mysql``) or PostgreSQL server."""
    if dialect == "mysql":
        return f"mysql+pymysql://{MYSQL_USER}@{MYSQL_HOST}:{MYSQL_PORT}/{name}"
    return f"postgresql+psycopg://{POSTGRESQL_USER}@{POSTGRESQL_HOST}:{POSTGRESQL_PORT}/{name}"


def create_database(dialect, prefix="relay_test"):
    """The name of a new, empty database on the server of ``dialect``."""
    dialect = dialect_of(dialect)
    name = unique_name(prefix)
    # The schema sets each table's collation itself (store/migrations); the database's default does not matter.
    _admin_execute(dialect, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4" if dialect == "mysql" else f'CREATE DATABASE "{name}"')
    return name


def drop_database(dialect, name):
    """Drop ``name``, even while a connection is open to it (PostgreSQL: ``WITH (FORCE)``)."""
    from salt_engine_lib.store import connection

    dialect = dialect_of(dialect)
    connection.dispose_all()  # the store's pooled connections to it
    _admin_execute(dialect, f"DROP DATABASE IF EXISTS `{name}`" if dialect == "mysql" else f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class RunDatabase:
    """The store one run points salt-relay at: a database created on a server for it, or a SQLite file.

    ``sqlite_path`` is where the SQLite store is (or will be: salt-relay creates
    the file, e.g. the engine's embedded default). :attr:`reader` reads it back;
    :meth:`drop` drops the server database (a SQLite file goes with its directory).
    """

    def __init__(self, dialect, sqlite_path, prefix="relay_test"):
        self.dialect = dialect_of(dialect)
        self.sqlite_path = pathlib.Path(sqlite_path)
        self.prefix = prefix
        self.name = None  # of the server database, once created
        self._reader = None

    def create(self):
        if self.dialect != "sqlite":
            self.name = create_database(self.dialect, self.prefix)
        return self

    @property
    def url(self):
        return server_url(self.dialect, self.name) if self.name else f"sqlite:///{self.sqlite_path}"

    @property
    def reader(self):
        """A :class:`Reader` of this database, made on first use."""
        if self._reader is None:
            self._reader = Reader(self.url)
        return self._reader

    def exists(self):
        return self.name is not None or self.sqlite_path.exists()

    def drop(self):
        from salt_engine_lib.store import connection

        if self._reader is not None:
            self._reader.dispose()
        connection.dispose_all()  # the store's pooled connections to it
        if self.name:
            drop_database(self.dialect, self.name)
            self.name = None


@contextlib.contextmanager
def fresh_database(dialect, directory=None, prefix="relay_test"):
    """URL of a fresh, empty database of any dialect (no schema yet), gone afterwards.

    SQLite: a new file in ``directory`` (left to its owner), or in a
    temporary directory removed afterwards.
    """
    where = pathlib.Path(directory) if directory else pathlib.Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    database = RunDatabase(dialect, where / f"{unique_name(prefix)}.db", prefix).create()
    try:
        yield database.url
    finally:
        database.drop()
        if not directory:
            shutil.rmtree(where, ignore_errors=True)


def server_database(dialect, prefix="relay_test"):
    """URL of a fresh, empty database on the MariaDB (``mysql``) or PostgreSQL server, dropped afterwards."""
    return fresh_database(dialect, prefix=prefix)


def epoch(value):
    """A stored timestamp (naive UTC ``datetime``, or ISO text on SQLite) as seconds since the epoch."""
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    return value.replace(tzinfo=datetime.timezone.utc).timestamp()


class Reader:
    """Reads of a relay database from outside salt-relay (the demo's checks, the benchmarks' counts).

    Its own engine, not the store's: every read runs in autocommit and so sees
    the latest commit, and nothing here creates a schema. A SQLite file is
    opened read-only (a missing one reads as empty rather than being
    created), and a table the engine has not created yet reads as no rows.
    """

    def __init__(self, url):
        import sqlalchemy as sa

        self._sa = sa
        self.url = url
        self.sqlite_path = None
        if url.startswith("sqlite"):
            self.sqlite_path = pathlib.Path(sa.engine.make_url(url).database)
            uri = f"file:{self.sqlite_path}?mode=ro"
            self.engine = sa.create_engine(
                "sqlite://",
                creator=lambda: sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False),
                poolclass=sa.pool.NullPool,
            )
        else:
            self.engine = sa.create_engine(url).execution_options(isolation_level="AUTOCOMMIT")

    def exists(self):
        return self.sqlite_path is None or self.sqlite_path.exists()

    def rows(self, sql, **params):
        """[tuple] of ``sql`` with named ``:params``; [] while the database or the table does not exist."""
        if not self.exists():
            return []
        sa = self._sa
        with self.engine.connect() as conn:
            try:
                return [tuple(row) for row in conn.execute(sa.text(sql), params)]
            except (sa.exc.OperationalError, sa.exc.ProgrammingError) as err:
                if "no such table" in str(err) or "exist" in str(err):
                    return []
                raise

    def scalar(self, sql, **params):
        found = self.rows(sql, **params)
        return found[0][0] if found else None

    def counts(self, tables=("jobs", "returns", "events")):
        return {table: self.scalar(f"SELECT COUNT(*) FROM {table}") or 0 for table in tables}

    def dispose(self):
        self.engine.dispose()
