"""Delete old jobs, returns and events in bounded chunks.

Each chunk is its own short transaction, so cleanup never holds locks long
and a cleanup with nothing to delete costs one indexed probe per table.
A cleanup sees the rows of its :class:`queries.Scope`: a master deletes the
rows of its own namespace, and leaves the other masters' to them.
"""

from __future__ import annotations

import datetime
from typing import Optional

import sqlalchemy as sa

from salt_engine_lib import jids
from salt_engine_lib.store.queries import EVERY_ROW, Scope
from salt_engine_lib.store.schema import events, job_listings, job_minions, jobs, returns


def _delete_in_chunks(engine, select_keys, delete_for_keys, chunk_size):
    deleted = 0
    while True:
        with engine.begin() as conn:
            keys = list(conn.execute(select_keys.limit(chunk_size)))
            if not keys:
                return deleted
            conn.execute(delete_for_keys(keys))
            deleted += len(keys)
        if len(keys) < chunk_size:
            return deleted


def purge_jobs(
    engine: sa.Engine,
    keep_seconds: Optional[int],
    chunk_size: int = 5000,
    now: Optional[datetime.datetime] = None,
    scope: Scope = EVERY_ROW,
) -> dict[str, int]:
    """Delete the returns, syndic minion lists, listing entries and jobs whose jid is older than ``keep_seconds``."""
    if not keep_seconds:
        return {"jobs": 0, "returns": 0}
    cutoff = jids.time_to_jid((now or jids.utcnow()) - datetime.timedelta(seconds=keep_seconds))
    removed = {}
    for name, table, key in (
        ("returns", returns, ("jid", "namespace", "minion_id")),
        ("job_minions", job_minions, ("jid", "namespace", "minion_id")),
        ("job_listings", job_listings, ("jid", "namespace")),
        ("jobs", jobs, ("jid", "namespace")),
    ):
        columns = [table.c[column] for column in key]
        removed[name] = _delete_in_chunks(
            engine,
            scope.apply(sa.select(*columns).where(table.c.jid < cutoff), table).order_by(table.c.jid),
            lambda keys, table=table, columns=columns: sa.delete(table).where(sa.tuple_(*columns).in_([tuple(k) for k in keys])),
            chunk_size,
        )
    del removed["job_minions"], removed["job_listings"]  # parts of the jobs
    return removed


def purge_events(
    engine: sa.Engine,
    keep_seconds: Optional[int],
    chunk_size: int = 5000,
    now: Optional[datetime.datetime] = None,
    scope: Scope = EVERY_ROW,
) -> int:
    if not keep_seconds:
        return 0
    cutoff = (now or jids.utcnow()) - datetime.timedelta(seconds=keep_seconds)
    return _delete_in_chunks(
        engine,
        scope.apply(sa.select(events.c.id).where(events.c.stamp < cutoff), events).order_by(events.c.stamp),
        lambda keys: sa.delete(events).where(events.c.id.in_([k.id for k in keys])),
        chunk_size,
    )
