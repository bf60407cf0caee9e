"""``salt-relay import mysql URL``: a saltext-mysql database (returner ``mysql``) into the store.

saltext-mysql's schema (its module docstring): ``jids(jid, load)``,
``salt_returns(fun, jid, return, id, success, full_ret, alter_time)`` and
``salt_events(id, tag, data, alter_time, master_id)``. Each ``jids`` row
becomes a job, each ``salt_returns`` row a return (its ``full_ret`` is the
return document the returner was given; its ``jid`` and ``id`` columns,
which saltext-mysql's ``get_jid`` reads by, name the job and the minion),
each ``salt_events`` row an event (its ``master_id`` kept). Where a return
or an event carries no ``_stamp``, its ``alter_time`` (read in UTC) is its time.

Read in pages, never whole: ``jids`` in keyset pages by jid, ``salt_events``
by id; ``salt_returns`` has no unique key to page by, so it is streamed
through a server-side cursor. saltext-mysql keeps every copy of a return
it was given; the first copy read of a (jid, minion) becomes the row and
the others count as skipped (saltext-mysql's get_jid answers the last).

saltext-mysql records no master for jobs and returns: they go to the
namespace of the master whose config is read (``-c``). Import each master's
database with that master's config.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Iterator, Optional

import sqlalchemy as sa

from salt_engine_lib import records
from salt_engine_lib.errors import ImportSourceError, RecordError
from salt_engine_lib.importers.common import (
    Item,
    Options,
    Refusal,
    Tally,
    Unit,
    importing_master,
    json_or_refusal,
    run_source,
    short_reason,
)
from salt_engine_lib.jids import utcnow
from salt_engine_lib.store.writes import Rows
from salt_engine_lib.urls import mask_url

if TYPE_CHECKING:
    from salt_engine_lib import config as relay_config

JIDS = sa.table("jids", sa.column("jid"), sa.column("load"))
RETURNS = sa.table(
    "salt_returns",
    sa.column("fun"),
    sa.column("jid"),
    sa.column("return"),
    sa.column("id"),
    sa.column("success"),
    sa.column("full_ret"),
    sa.column("alter_time"),
)
EVENTS = sa.table("salt_events", sa.column("id"), sa.column("tag"), sa.column("data"), sa.column("alter_time"), sa.column("master_id"))
REQUIRED_TABLES = ("jids", "salt_returns")


def source_engine(url: str) -> sa.Engine:
    """An engine on the saltext-mysql database; ``mysql://`` means PyMySQL, the driver salt-relay ships with."""
    parsed = sa.engine.make_url(url)
    if parsed.drivername in ("mysql", "mariadb"):
        parsed = parsed.set(drivername=f"{parsed.drivername}+pymysql")
    connect_args = {"charset": "utf8mb4"} if parsed.get_backend_name() in ("mysql", "mariadb") else {}
    try:
        return sa.create_engine(parsed, connect_args=connect_args, poolclass=sa.pool.NullPool)
    except (sa.exc.ArgumentError, ImportError) as err:
        raise ImportSourceError(f"cannot open {mask_url(url)}: {err}") from err


def _utc_session(conn):
    # alter_time is a TIMESTAMP: read it in UTC, as the store keeps times.
    if conn.dialect.name in ("mysql", "mariadb"):
        conn.exec_driver_sql("SET time_zone = '+00:00'")


def check(engine: sa.Engine) -> dict[str, int]:
    """Rows per source table ({} entries for an absent ``salt_events``); ImportSourceError if it is no saltext-mysql database."""
    try:
        with engine.connect() as conn:
            present = set(sa.inspect(conn).get_table_names())
            missing = [table for table in REQUIRED_TABLES if table not in present]
            if missing:
                raise ImportSourceError(f"{mask_url(str(engine.url))} has no saltext-mysql table {', '.join(missing)}")
            tables = [JIDS, RETURNS] + ([EVENTS] if "salt_events" in present else [])
            return {table.name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() for table in tables}
    except sa.exc.SQLAlchemyError as err:
        cause = getattr(err, "orig", None) or err
        raise ImportSourceError(f"{mask_url(str(engine.url))}: {type(cause).__name__}: {cause}") from err


class RowReader:
    """Source rows -> :class:`Unit` / :class:`Refusal`, in the importing master's namespace."""

    def __init__(self, settings: relay_config.Settings, now: Optional[datetime.datetime] = None) -> None:
        self.master_id = settings.master_id
        self.namespace = settings.namespace
        self.now = now

    def job(self, jid, load_text) -> Item:
        key = {"table": "jids", "jid": jid}
        load = json_or_refusal(load_text, "job", key, "load")
        if isinstance(load, Refusal):
            return load
        if not isinstance(load, dict):
            return Refusal("job", key, "load is not a JSON object", type(load).__name__, load, steps=1)
        try:
            # No minion list: saltext-mysql keeps none (its get_load answers the load alone).
            row = records.job_row(jid, load, None, self.master_id, self.now or utcnow(), self.namespace)
        except RecordError as err:
            return Refusal("job", key, short_reason(err), str(err), load, steps=1)
        return Unit("job", f"jids {jid}", Rows([row], [], []), data={**key, "load": load})

    def return_(self, row) -> Item:
        key = {"table": "salt_returns", "jid": row.jid, "id": row.id}
        document = json_or_refusal(row.full_ret, "return", key, "full_ret")
        if isinstance(document, Refusal):
            return document
        if not isinstance(document, dict):
            return Refusal("return", key, "full_ret is not a JSON object", type(document).__name__, document, steps=1)
        document = {**document, "jid": row.jid, "id": row.id}
        try:
            stored = records.return_row(document, self.master_id, self.now or utcnow(), self.namespace)
        except RecordError as err:
            return Refusal("return", key, short_reason(err), str(err), document, steps=1)
        if stored["returned_at"] is None:
            stored["returned_at"] = row.alter_time
        return Unit("return", f"salt_returns {row.jid}/{row.id}", Rows([], [stored], []), data=document)

    def event(self, row) -> Item:
        key = {"table": "salt_events", "id": row.id}
        data = json_or_refusal(row.data, "event", key, "data")
        if isinstance(data, Refusal):
            return data
        try:
            stored = records.event_row(row.tag, data, row.master_id or self.master_id, self.now or utcnow(), self.namespace)
        except RecordError as err:
            return Refusal("event", key, short_reason(err), str(err), {"tag": row.tag, "data": data}, steps=1)
        if not (isinstance(data, dict) and data.get("_stamp")) and row.alter_time is not None:
            stored["stamp"] = row.alter_time
        return Unit("event", f"salt_events {row.id}", Rows([], [], [stored]), data={"tag": row.tag, "data": data})


def _keyset_pages(engine, query, column, page_size):
    last = None
    while True:
        with engine.connect() as conn:
            _utc_session(conn)
            paged = query if last is None else query.where(column > last)
            page = list(conn.execute(paged.order_by(column).limit(page_size)))
        yield from page
        if len(page) < page_size:
            return
        last = getattr(page[-1], column.name)


def _streamed(engine, query, page_size):
    with engine.connect() as conn:
        _utc_session(conn)
        result = conn.execution_options(stream_results=True, max_row_buffer=page_size).execute(query)
        yield from result


def items(engine: sa.Engine, settings: relay_config.Settings, page_size: int, tables: dict) -> Iterator[Item]:
    """Jobs, then returns, then events (those of ``tables``, from :func:`check`)."""
    reader = RowReader(settings)
    for row in _keyset_pages(engine, sa.select(JIDS.c.jid, JIDS.c.load), JIDS.c.jid, page_size):
        yield reader.job(row.jid, row.load)
    for row in _streamed(engine, sa.select(RETURNS), page_size):
        yield reader.return_(row)
    if "salt_events" in tables:
        for row in _keyset_pages(engine, sa.select(EVENTS), EVENTS.c.id, page_size):
            yield reader.event(row)


def import_into(store, settings: relay_config.Settings, url: str, options: Options) -> Tally:
    """Import the saltext-mysql database at ``url`` into ``store``."""
    importing_master(settings)
    engine = source_engine(url)
    try:
        tables = check(engine)
        rows = items(engine, settings, options.batch_size, tables)
        return run_source(store, rows, "mysql", sum(tables.values()), "rows", options)
    except sa.exc.SQLAlchemyError as err:  # the source's (the store's errors are StoreError)
        cause = getattr(err, "orig", None) or err
        raise ImportSourceError(f"reading {mask_url(url)} failed (a re-run resumes): {type(cause).__name__}: {cause}") from err
    finally:
        engine.dispose()
