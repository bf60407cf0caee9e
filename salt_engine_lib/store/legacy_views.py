"""saltext-mysql's tables as views of the relay tables (``relay:legacy_views``).

Tools written for Salt's ``mysql`` returner (saltext-mysql) and its
``pgjsonb`` cousin, Alcali first, read three tables: ``jids``,
``salt_returns`` and ``salt_events``. With ``legacy_views: true`` the store
has three views of those names whose columns hold what saltext-mysql's
returner writes into them (``saltext/mysql/returners/mysql.py``):

``jids(jid, load)``
    ``load``: the publish load as JSON text (``jobs.load``).
``salt_returns(fun, jid, return, id, success, full_ret, alter_time)``
    ``return``: the return value as JSON text (``returns.ret``); ``id``: the
    minion id; ``success``: ``'1'`` if the return document's ``success`` is
    true, else ``'0'`` (saltext-mysql binds ``ret.get("success", False)``,
    which the MySQL drivers write as 1 or 0, into a VARCHAR; a return that
    has no ``success``, as ``salt-call`` ones, reads ``'0'`` there too);
    ``full_ret``: the whole return document, i.e. ``returns.document`` with
    ``returns.ret`` put back under ``"return"``; ``alter_time``: when the
    master received the return (``returns.returned_at``, the return's
    ``_stamp``). saltext-mysql's is the time of its INSERT, which it does as
    the return arrives; relay may store a return later (batches, a broker or
    database outage), so its store time would misorder history. NULL for a
    return that carried no ``_stamp`` (nor ``ts``).
``salt_events(id, tag, data, alter_time, master_id)``
    ``data``: the event data as JSON text; ``alter_time``: the event's
    ``_stamp`` (``events.stamp``); ``master_id``: the master that captured it.
    With relay as the master's job cache, the engine stores a minion return's
    bus event without its value (records.without_return_value): that
    ``data`` has no ``"return"``, which is in ``salt_returns.return``.

Several masters: saltext-mysql has one unscoped table per kind, so the
views show every row of every namespace (``read_scope: all``). Two
independent masters that generated the same jid both appear in ``jids``,
where saltext-mysql's UNIQUE key would have kept the first (a reader that
expects one row per jid, as Alcali's ``Jids.objects.get``, then gets two).

The JSON texts are the database's spelling of the stored JSON (PostgreSQL's
jsonb output, MariaDB's JSON_SET output for ``full_ret``): the same values as
saltext-mysql's ``json.dumps``, not always the same characters.

Lifecycle (:func:`before_upgrade`, :func:`after_upgrade`): the views are
dropped before an Alembic upgrade (PostgreSQL refuses to change the type of,
or drop, a column a view reads; SQLite's batch mode fails renaming a table
a view names) and created again after it. ``salt-relay db upgrade`` makes the
database match the setting, dropping the views when it is false; the
store's automatic upgrade only ever adds them, so a process whose config
lacks the key never removes views another one's users rely on. A table
(not a view) of one of these names, e.g. a saltext-mysql installation in the
same database, is never touched: :class:`LegacyViewConflict`.

Privileges: on MariaDB/MySQL the views are ``SQL SECURITY INVOKER``, so their
reader needs SELECT on ``jobs``, ``returns`` and ``events``; on PostgreSQL a
view reads its tables with its owner's rights, so SELECT on the views is enough.
"""

from __future__ import annotations

from typing import Optional

import sqlalchemy as sa

from salt_engine_lib.errors import LegacyViewConflict

VIEW_NAMES = ("jids", "salt_returns", "salt_events")


def _mysql_selects():
    # JSON_EXTRACT(x, '$') hands JSON_SET a JSON value, not a string to quote.
    # The success test is spelled out: MariaDB's JSON comparisons treat the
    # string "true" and the number 1 as true, which saltext-mysql does not.
    success = "JSON_EXTRACT(document, '$.success')"
    return {
        "jids": "SELECT jid, `load` FROM jobs",
        "salt_returns": (
            "SELECT fun, jid, COALESCE(ret, 'null') AS `return`, minion_id AS id, "
            f"CASE WHEN JSON_TYPE({success}) = 'BOOLEAN' AND CAST({success} AS CHAR) = 'true' THEN '1' ELSE '0' END AS success, "
            "JSON_SET(document, '$.return', JSON_EXTRACT(COALESCE(ret, 'null'), '$')) AS full_ret, "
            "returned_at AS alter_time FROM returns"
        ),
        "salt_events": "SELECT id, tag, data, stamp AS alter_time, COALESCE(master_id, '') AS master_id FROM events",
    }


def _postgresql_selects():
    return {
        "jids": "SELECT jid, load::text AS load FROM jobs",
        "salt_returns": (
            "SELECT fun, jid, COALESCE(ret, 'null'::jsonb)::text AS \"return\", minion_id AS id, "
            "CASE WHEN document -> 'success' = 'true'::jsonb THEN '1' ELSE '0' END AS success, "
            "(document || jsonb_build_object('return', ret))::text AS full_ret, "
            "returned_at AS alter_time FROM returns"
        ),
        "salt_events": "SELECT id, tag, data::text AS data, stamp AS alter_time, COALESCE(master_id, '') AS master_id FROM events",
    }


def _sqlite_selects():
    # A JSON column has NUMERIC affinity in SQLite: a stored 5 comes back as an
    # integer unless cast; json() makes json_set insert JSON rather than a string.
    return {
        "jids": 'SELECT jid, CAST("load" AS TEXT) AS "load" FROM jobs',
        "salt_returns": (
            "SELECT fun, jid, CAST(COALESCE(ret, 'null') AS TEXT) AS \"return\", minion_id AS id, "
            "CASE WHEN json_type(document, '$.success') = 'true' THEN '1' ELSE '0' END AS success, "
            "json_set(document, '$.return', json(COALESCE(ret, 'null'))) AS full_ret, "
            "returned_at AS alter_time FROM returns"
        ),
        "salt_events": "SELECT id, tag, CAST(data AS TEXT) AS data, stamp AS alter_time, COALESCE(master_id, '') AS master_id FROM events",
    }


def _is_mysql(conn):
    return conn.dialect.name in ("mysql", "mariadb")


def create_statements(conn: sa.Connection) -> list[str]:
    """The DDL that (re)creates the three views on this connection's dialect."""
    if _is_mysql(conn):
        # MERGE: a query on the view is rewritten onto the table, so its WHERE and
        # ORDER BY use the table's indexes. INVOKER: a reader needs SELECT on the
        # relay tables, and the views keep working when the account that ran the
        # upgrade is dropped (DEFINER views break then).
        return [
            f"CREATE OR REPLACE ALGORITHM = MERGE SQL SECURITY INVOKER VIEW {name} AS {select}" for name, select in _mysql_selects().items()
        ]
    selects = _postgresql_selects() if conn.dialect.name == "postgresql" else _sqlite_selects()
    # Dropped first: PostgreSQL's CREATE OR REPLACE cannot change a column's type.
    return [
        statement for name, select in selects.items() for statement in (f"DROP VIEW IF EXISTS {name}", f"CREATE VIEW {name} AS {select}")
    ]


def present(conn: sa.Connection) -> set[str]:
    """Which of the three names exist as views."""
    return set(VIEW_NAMES) & set(sa.inspect(conn).get_view_names())


def refuse_tables(conn: sa.Connection) -> None:
    """LegacyViewConflict if a table (not a view) has one of the three names."""
    tables = sorted(set(VIEW_NAMES) & set(sa.inspect(conn).get_table_names()))
    if tables:
        raise LegacyViewConflict(
            f"relay:legacy_views is true, but this database already has the table(s) {', '.join(tables)} "
            "(a saltext-mysql or pgjsonb job cache?): salt-relay will not replace them by views. "
            "Point relay:database_url at another database, move those tables away, or set relay:legacy_views: false"
        )


def create(conn: sa.Connection) -> None:
    refuse_tables(conn)
    for statement in create_statements(conn):
        conn.exec_driver_sql(statement)


def drop(conn: sa.Connection) -> None:
    """Drop the views that exist; a table of the same name is left alone."""
    for name in sorted(present(conn)):
        conn.exec_driver_sql(f"DROP VIEW {name}")


def missing(conn: sa.Connection) -> bool:
    """True when at least one of the three views does not exist (cheap: one catalog query)."""
    return present(conn) != set(VIEW_NAMES)


def before_upgrade(conn: sa.Connection, enabled: Optional[bool]) -> bool:
    """Drop the views ahead of the migrations; returns whether there were any.

    Refuses first, so a conflicting table stops the upgrade before anything changed.
    """
    if enabled:
        refuse_tables(conn)
    had_views = bool(present(conn))
    drop(conn)
    return had_views


def after_upgrade(conn: sa.Connection, enabled: Optional[bool], had_views: bool) -> None:
    """Create the views if ``enabled``, or if it is None (setting unknown) and they existed before."""
    if enabled or (enabled is None and had_views):
        create(conn)
