"""The SQL store: schema, idempotent writes, job-cache reads, retention.

:class:`Store` is the one handle the returner, the worker, the engine and the
CLI use (:meth:`Store.from_settings`). Its engine is created on first use in
each process, and the schema is brought to the current Alembic revision then
(unless ``auto_upgrade`` is off) or at :meth:`Store.ensure_schema`.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional

import sqlalchemy.exc

from salt_engine_lib.errors import StoreError
from salt_engine_lib.store import connection, migrate, queries, retention, writes
from salt_engine_lib.urls import mask_url

if TYPE_CHECKING:
    import sqlalchemy as sa

    from salt_engine_lib import config as relay_config


@contextlib.contextmanager
def translate_errors(database_url: str) -> Iterator[None]:
    """Database driver errors become StoreError naming the (masked) URL."""
    try:
        yield
    except sqlalchemy.exc.SQLAlchemyError as err:
        cause = getattr(err, "orig", None) or err
        raise StoreError(f"{mask_url(database_url)}: {type(cause).__name__}: {cause}") from err


class Store:
    """The database of one URL. Creating it opens nothing: the first use connects.

    The schema is checked once per process before that first use (and, with
    ``auto_upgrade``, brought to the code's revision); :meth:`ensure_schema`
    does it at once, for a daemon that wants to fail at start rather than at
    its first write.
    """

    def __init__(self, database_url: str, ssl: Optional[dict] = None, auto_upgrade: bool = True, legacy_views: bool = False) -> None:
        self.database_url = database_url
        self.ssl = ssl
        self.auto_upgrade = auto_upgrade
        self.legacy_views = legacy_views  # relay:legacy_views (store/legacy_views.py)
        self._checked_pid = None

    def __repr__(self):
        return f"Store({mask_url(self.database_url)!r})"

    @classmethod
    def from_settings(cls, settings: relay_config.Settings, auto_upgrade: Optional[bool] = None) -> Store:
        """The store of these :class:`config.Settings` (``auto_upgrade`` overrides the configured one)."""
        config = settings.config
        return cls(
            settings.database_url,
            ssl=config.database_ssl,
            auto_upgrade=config.auto_upgrade if auto_upgrade is None else auto_upgrade,
            legacy_views=config.legacy_views,
        )

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine as it is, the schema not checked: for raw SQL in tools and tests."""
        return connection.get_engine(self.database_url, self.ssl)

    def ensure_schema(self) -> None:
        """Check the schema now (with auto_upgrade: bring it to the code's revision); StoreError if it is not right."""
        engine = self.engine
        with translate_errors(self.database_url):
            if self.auto_upgrade:
                migrate.ensure_current(engine, legacy_views=self.legacy_views)
            elif migrate.current_revision(engine) != migrate.head_revision():
                raise StoreError(
                    f"the database {mask_url(self.database_url)} is not at schema revision "
                    f"{migrate.head_revision()}: run `salt-relay db upgrade`"
                )
        self._checked_pid = os.getpid()

    def connect(self):
        """A connection for raw SQL (tools, tests), the schema checked first; driver errors are not translated."""
        return self._engine().connect()

    def _engine(self):
        """The SQLAlchemy engine, the schema checked once in this process first."""
        if self._checked_pid != os.getpid():
            self.ensure_schema()
        return self.engine

    def write_batch(
        self,
        jobs: Iterable[dict] = (),
        returns: Iterable[dict] = (),
        events: Iterable[dict] = (),
        authoritative_returns: bool = False,
        authoritative_jobs: bool = False,
    ) -> dict[str, int]:
        """Store one batch in one transaction; returns rows given per table."""
        with translate_errors(self.database_url), self._engine().begin() as conn:
            return writes.write_batch(conn, jobs, returns, events, authoritative_returns, authoritative_jobs)

    def write_rows(self, rows: writes.Rows) -> dict[str, int]:
        """Store a :class:`writes.Rows` in one transaction."""
        with translate_errors(self.database_url), self._engine().begin() as conn:
            return writes.write_rows(conn, rows)

    def reachable(self) -> bool:
        """True when the database answers a trivial query (tells "down" from "refused this")."""
        try:
            with translate_errors(self.database_url), self._engine().connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except StoreError:
            return False

    def read(self, query: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one of :mod:`queries` on a connection of the reads' pool.

        That pool skips the ping on checkout, so a connection the server
        dropped meanwhile (restart, wait_timeout) fails on first use: SQLAlchemy
        then discards the whole pool, and the read, which changes nothing, runs
        once more on a new connection.
        """
        self._engine()  # the schema checked once in this process
        engine = connection.get_engine(self.database_url, self.ssl, for_reads=True)
        with translate_errors(self.database_url):
            try:
                with engine.connect() as conn:
                    return query(conn, *args, **kwargs)
            except sqlalchemy.exc.DBAPIError as err:
                if not err.connection_invalidated:
                    raise
            with engine.connect() as conn:
                return query(conn, *args, **kwargs)

    def write(self, query: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one of :mod:`queries`' writes in its own transaction."""
        with translate_errors(self.database_url), self._engine().begin() as conn:
            return query(conn, *args, **kwargs)

    def purge(
        self,
        keep_jobs_seconds: Optional[int],
        keep_events_seconds: Optional[int],
        chunk_size: int = 5000,
        scope: queries.Scope = queries.EVERY_ROW,
    ) -> dict[str, int]:
        """Retention on the rows of ``scope``: {"jobs": n, "returns": n, "events": n} deleted."""
        with translate_errors(self.database_url):
            removed = retention.purge_jobs(self._engine(), keep_jobs_seconds, chunk_size, scope=scope)
            removed["events"] = retention.purge_events(self._engine(), keep_events_seconds, chunk_size, scope=scope)
        return removed


__all__ = ["Store", "queries", "writes", "migrate", "retention", "connection"]
