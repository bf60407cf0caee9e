"""The SQL store: schema, idempotent writes, job-cache reads, retention.

:class:`Store` is the one handle the returner, the worker and the CLI use.
Its engine is created on first use in each process, and the schema is
brought to the current Alembic revision then (unless ``auto_upgrade`` is off).
"""

import contextlib
import os

import sqlalchemy.exc

from salt_engine_lib.errors import StoreError
from salt_engine_lib.store import connection, migrate, queries, retention, writes
from salt_engine_lib.urls import mask_url


@contextlib.contextmanager
def translate_errors(database_url):
    """Database driver errors become StoreError naming the (masked) URL."""
    try:
        yield
    except sqlalchemy.exc.SQLAlchemyError as err:
        cause = getattr(err, "orig", None) or err
        raise StoreError(f"{mask_url(database_url)}: {type(cause).__name__}: {cause}") from err


class Store:
    def __init__(self, database_url, ssl=None, auto_upgrade=True):
        self.database_url = database_url
        self.ssl = ssl
        self.auto_upgrade = auto_upgrade
        self._checked_pid = None

    def __repr__(self):
        return f"Store({mask_url(self.database_url)!r})"

    @classmethod
    def from_config(cls, config, database_url):
        return cls(database_url, ssl=config.database_ssl, auto_upgrade=config.auto_upgrade)

    @property
    def engine(self):
        engine = connection.get_engine(self.database_url, self.ssl)
        if self._checked_pid != os.getpid():
            with translate_errors(self.database_url):
                self._check_schema(engine)
        return engine

    def ensure_schema(self):
        """Check (or, with auto_upgrade, bring) the schema to the code's revision now, not at the first write."""
        self.engine  # noqa: B018  # the property checks the schema once per process

    def _check_schema(self, engine):
        if self.auto_upgrade:
            migrate.ensure_current(engine)
        elif migrate.current_revision(engine) != migrate.head_revision():
            raise StoreError(
                f"the database {mask_url(self.database_url)} is not at schema revision "
                f"{migrate.head_revision()}: run `salt-relay db upgrade`"
            )
        self._checked_pid = os.getpid()

    def write_batch(self, jobs=(), returns=(), events=(), authoritative_returns=False, authoritative_jobs=False):
        """Store one batch in one transaction; returns rows given per table."""
        with translate_errors(self.database_url), self.engine.begin() as conn:
            return writes.write_batch(conn, jobs, returns, events, authoritative_returns, authoritative_jobs)

    def write_rows(self, rows):
        """Store a :class:`records.Rows` in one transaction."""
        with translate_errors(self.database_url), self.engine.begin() as conn:
            return writes.write_rows(conn, rows)

    def reachable(self):
        """True when the database answers a trivial query (tells "down" from "refused this")."""
        try:
            with translate_errors(self.database_url), self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except StoreError:
            return False

    def read(self, query, *args, **kwargs):
        """Run one of :mod:`queries` on a fresh connection."""
        with translate_errors(self.database_url), self.engine.connect() as conn:
            return query(conn, *args, **kwargs)

    def write(self, query, *args, **kwargs):
        """Run one of :mod:`queries`' writes in its own transaction."""
        with translate_errors(self.database_url), self.engine.begin() as conn:
            return query(conn, *args, **kwargs)

    def purge(self, keep_jobs_seconds, keep_events_seconds, chunk_size=5000):
        with translate_errors(self.database_url):
            removed = retention.purge_jobs(self.engine, keep_jobs_seconds, chunk_size)
            removed["events"] = retention.purge_events(self.engine, keep_events_seconds, chunk_size)
        return removed


__all__ = ["Store", "queries", "writes", "migrate", "retention", "connection"]
