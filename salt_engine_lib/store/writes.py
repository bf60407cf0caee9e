"""Idempotent bulk writes: one executemany per table, per dialect.

Redelivered batches and multi-master duplicates hit the natural keys and
collapse into the existing row. A list of dicts given to ``conn.execute`` is
an executemany (PyMySQL rewrites it into multi-row INSERTs itself), never one
giant multi-VALUES statement built here. On MariaDB 10.6+ / MySQL 8.0+ the
rows go as one JSON parameter instead (:mod:`json_table`, the same upsert,
about twice as fast for the worker).
"""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Iterable, Sequence

from sqlalchemy.dialects import mysql, postgresql, sqlite

from salt_engine_lib.errors import BulkPathUnsupported
from salt_engine_lib.store import json_table, schema

if TYPE_CHECKING:
    import sqlalchemy as sa


class Rows(typing.NamedTuple):
    """What one or more events become (:func:`records.rows_from_event`): rows per table, ready for :func:`write_rows`."""

    jobs: list
    returns: list
    events: list
    authoritative_returns: tuple = ()  # the job cache's returns: replace bus copies
    authoritative_jobs: tuple = ()  # publish-time loads (save_load): replace bus copies
    job_minions: tuple = ()  # the minions syndics report for a job (save_minions)
    engines: tuple = ()  # engine reports: replace the engine's previous one

    @classmethod
    def merge(cls, many: Iterable[Rows]) -> Rows:
        merged = [[] for _field in cls._fields]
        for rows in many:
            for column, part in zip(merged, rows):
                column += part
        return cls(*merged)


_CONFLICT_KEYS = {
    schema.jobs.name: ("jid", "namespace"),
    schema.job_listings.name: ("jid", "namespace"),
    schema.returns.name: ("jid", "namespace", "minion_id"),
    schema.events.name: ("content_key",),
    schema.job_minions.name: ("jid", "namespace", "minion_id"),
    schema.relay_engines.name: ("master_id",),
}


def upsert_statement(conn: sa.Connection, table: sa.Table, update_columns: Sequence[str] = ()) -> sa.Insert:
    """INSERT that leaves existing rows alone, or refreshes ``update_columns``."""
    keys = _CONFLICT_KEYS[table.name]
    dialect = conn.dialect.name
    if dialect in ("mysql", "mariadb"):
        stmt = mysql.insert(table)
        # A no-op assignment of a key column rather than INSERT IGNORE, which
        # would also swallow truncation and NOT NULL errors.
        changes = {col: stmt.inserted[col] for col in update_columns} or {keys[0]: table.c[keys[0]]}
        return stmt.on_duplicate_key_update(changes)
    if dialect == "postgresql":
        stmt = postgresql.insert(table)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table)
    else:  # pragma: no cover - config validation rejects other dialects
        raise ValueError(f"unsupported dialect {dialect}")
    if update_columns:
        return stmt.on_conflict_do_update(index_elements=list(keys), set_={col: stmt.excluded[col] for col in update_columns})
    return stmt.on_conflict_do_nothing(index_elements=list(keys))


def insert_ignoring_duplicates(conn: sa.Connection, table: sa.Table, rows: list[dict], update_columns: Sequence[str] = ()) -> int:
    """Write ``rows`` (list of dicts with identical keys); return how many were given."""
    if not rows:
        return 0
    if json_table.supported(conn):
        try:
            json_table.upsert(conn, table, rows, update_columns, _CONFLICT_KEYS[table.name][0])
            return len(rows)
        except BulkPathUnsupported:
            pass  # e.g. lone surrogates: the executemany path writes them
    conn.execute(upsert_statement(conn, table, update_columns), list(rows))
    return len(rows)


# What a job-cache return refreshes in a row the engine wrote from the bus.
AUTHORITATIVE_RETURN_COLUMNS = ("fun", "ret", "retcode", "success", "document", "returned_at")
# What the publish-time save_load refreshes in a job row written from a bus event.
AUTHORITATIVE_JOB_COLUMNS = ("master_id", "fun", "tgt", "tgt_type", "user", "load", "minions")
# ... and in its job_listings row (rendered from the load).
AUTHORITATIVE_LISTING_COLUMNS = ("head",)
# What a newer report of an engine refreshes in its relay_engines row.
ENGINE_REPORT_COLUMNS = ("namespace", "mode", "host", "version", "stats", "reported_at")


def write_batch(
    conn: sa.Connection,
    jobs: Iterable[dict] = (),
    returns: Iterable[dict] = (),
    events: Iterable[dict] = (),
    authoritative_returns: bool = False,
    authoritative_jobs: bool = False,
) -> dict[str, int]:
    """Store one batch in the caller's transaction (``engine.begin()``).

    Jobs are insert-if-absent: the publish load wins over later return loads
    (Salt calls save_load again for every minion return) and over the copy
    the engine captured from the bus; only the publish-time ``save_load``
    (``authoritative_jobs``) replaces an existing job row. Returns from the
    job cache (``authoritative_returns``) replace a row captured from the
    bus, whose big values Salt may have trimmed to "VALUE_TRIMMED"; bus
    copies never replace an existing row.
    """
    update = AUTHORITATIVE_RETURN_COLUMNS if authoritative_returns else ()
    job_rows, listing_rows = _split_listings(jobs)
    written = _write(conn, schema.jobs, job_rows, AUTHORITATIVE_JOB_COLUMNS if authoritative_jobs else ())
    _write(conn, schema.job_listings, listing_rows, AUTHORITATIVE_LISTING_COLUMNS if authoritative_jobs else ())
    return {
        "jobs": written,
        "returns": _write(conn, schema.returns, returns, update),
        "events": _write(conn, schema.events, events),
    }


def write_rows(conn: sa.Connection, rows: Rows) -> dict[str, int]:
    """Store a :class:`Rows` in the caller's transaction.

    The job cache's returns and publish loads go last, so they replace a bus
    copy of the same return or job written by this very batch.
    """
    counts = write_batch(conn, rows.jobs, rows.returns, rows.events)
    if rows.authoritative_returns:
        counts["returns"] += write_batch(conn, returns=rows.authoritative_returns, authoritative_returns=True)["returns"]
    if rows.authoritative_jobs:
        counts["jobs"] += write_batch(conn, jobs=rows.authoritative_jobs, authoritative_jobs=True)["jobs"]
    if rows.job_minions:
        _write(conn, schema.job_minions, rows.job_minions)
    if rows.engines:
        write_engine_reports(conn, rows.engines)
    return counts


def write_engine_reports(conn: sa.Connection, reports: Iterable[dict]) -> None:
    """Each engine's row takes a report only if it is newer: a redelivered old report changes nothing.

    A handful of rows per batch at most (one per engine every 30 s), so a
    conditional UPDATE each, and an insert-if-absent for an engine's first.
    """
    table = schema.relay_engines
    for report in sorted(reports, key=lambda row: row["reported_at"]):
        changes = {column: report[column] for column in ENGINE_REPORT_COLUMNS}
        updated = conn.execute(
            table.update().where(table.c.master_id == report["master_id"], table.c.reported_at < report["reported_at"]).values(changes)
        )
        if updated.rowcount == 0:
            _write(conn, table, [report])


def _split_listings(jobs):
    """Job rows (records.job_row) -> (their jobs rows, their job_listings rows)."""
    job_rows, listing_rows = [], []
    for row in jobs:
        job = dict(row)
        listing_rows.append({"jid": job["jid"], "namespace": job["namespace"], "head": job.pop("listing_head", None), "tail": None})
        job_rows.append(job)
    return job_rows, listing_rows


def _write(conn, table, rows, update_columns=()):
    return insert_ignoring_duplicates(conn, table, _dedupe(rows, _CONFLICT_KEYS[table.name]), update_columns)


def _dedupe(rows, keys):
    # PostgreSQL refuses an ON CONFLICT batch that hits one key twice in a
    # single statement; the first occurrence wins, as it would in the table.
    seen, unique = set(), []
    for row in rows:
        key = tuple(row[k] for k in keys)
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique
