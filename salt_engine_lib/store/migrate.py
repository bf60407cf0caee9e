"""Schema versions with Alembic, driven from code (``salt-relay db upgrade``).

Several processes may open an empty database at once (MWorkers, workers,
CLIs), so an upgrade runs under a lock that the database (or, for SQLite, a
lock file beside it) serialises; the loser finds the schema current.

Alembic is imported only to upgrade: every ``salt`` and ``salt-run`` call
with ``master_job_cache: relay`` opens the store, and importing Alembic took
0.23-0.30 s of such a call here, where checking the revision is one SELECT.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import pathlib
from typing import TYPE_CHECKING, Optional

import sqlalchemy
from sqlalchemy import text

from salt_engine_lib.errors import StoreError
from salt_engine_lib.store import legacy_views as saltext_mysql_views
from salt_engine_lib.urls import mask_url

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

_MIGRATIONS_DIR = pathlib.Path(__file__).resolve().parent / "migrations"
# Arbitrary constant shared by every salt-relay process (PostgreSQL advisory lock id).
_PG_LOCK_ID = 7_275_480_633
_MYSQL_LOCK_NAME = "salt_relay_schema_upgrade"
#: The newest migration in migrations/versions (tests/store/test_migrations.py checks it against Alembic's head).
HEAD_REVISION = "0005"


def alembic_config(connection: Optional[sqlalchemy.Connection] = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    return HEAD_REVISION


def alembic_head_revision() -> Optional[str]:
    """The head as Alembic reads it from the migration scripts."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: sqlalchemy.Engine) -> Optional[str]:
    """The database's revision (Alembic's version table), or None for an empty database."""
    with engine.connect() as conn:
        return _revision_of(conn)


def _revision_of(conn):
    if not sqlalchemy.inspect(conn).has_table("alembic_version"):
        return None
    versions = [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]
    if len(versions) > 1:
        raise RuntimeError(f"the database has several schema revisions: {versions}")
    return versions[0] if versions else None


@contextlib.contextmanager
def _upgrade_lock(engine, conn):
    dialect = engine.dialect.name
    if dialect == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
        yield
    elif dialect in ("mysql", "mariadb"):
        conn.execute(text("SELECT GET_LOCK(:name, 120)"), {"name": _MYSQL_LOCK_NAME})
        try:
            yield
        finally:
            conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": _MYSQL_LOCK_NAME})
    else:
        database = engine.url.database
        if not database or database == ":memory:":
            yield
            return
        with open(f"{database}.migrate-lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade(engine: sqlalchemy.Engine, revision: str = "head", legacy_views: Optional[bool] = None) -> tuple[Optional[str], Optional[str]]:
    """Apply migrations up to ``revision``; returns (before, after).

    ``legacy_views`` (relay:legacy_views, store/legacy_views.py): True
    (re)creates saltext-mysql's views, False drops them, None keeps them as
    they were. They are dropped around the migrations either way.
    """
    from alembic import command

    # Commit before the lock is released, so the next process to get it sees the new revision.
    with engine.connect() as conn:
        with _upgrade_lock(engine, conn):
            before = _revision_of(conn)
            had_views = saltext_mysql_views.before_upgrade(conn, legacy_views)
            command.upgrade(alembic_config(conn), revision)
            saltext_mysql_views.after_upgrade(conn, legacy_views, had_views)
            after = _revision_of(conn)
            conn.commit()
    if before != after:
        log.info(
            "salt-relay schema upgraded from %s to %s on %s", before, after, mask_url(engine.url.render_as_string(hide_password=False))
        )
    return before, after


def ensure_current(engine: sqlalchemy.Engine, legacy_views: bool = False) -> None:
    """Upgrade if behind; cheap (one SELECT, and a catalog query with ``legacy_views``) when the schema is current.

    ``legacy_views`` creates saltext-mysql's views if they are missing; this
    path never drops them (a process whose config lacks the key must not
    remove views that others read).
    """
    wanted = True if legacy_views else None
    current = current_revision(engine)
    if current is not None and current > head_revision():  # zero-padded counters: "0005" > "0004"
        raise StoreError(
            f"the database {mask_url(engine.url.render_as_string(hide_password=False))} is at schema revision {current}, "
            f"newer than this salt-relay's {head_revision()}: upgrade salt-relay here too (every process on one database together)"
        )
    if current != head_revision():
        upgrade(engine, legacy_views=wanted)
    elif legacy_views:
        with engine.connect() as conn:
            missing = saltext_mysql_views.missing(conn)
        if missing:
            upgrade(engine, legacy_views=True)
