"""Delete old jobs, returns and events in bounded chunks.

Each chunk is its own short transaction, so cleanup never holds locks long
and a cleanup with nothing to delete costs one indexed probe per table.
"""

from __future__ import annotations

import datetime
from typing import Optional

import sqlalchemy as sa

from salt_engine_lib import jids
from salt_engine_lib.store.schema import events, jobs, returns


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
    engine: sa.Engine, keep_seconds: Optional[int], chunk_size: int = 5000, now: Optional[datetime.datetime] = None
) -> dict[str, int]:
    """Delete returns and jobs whose jid is older than ``keep_seconds``."""
    if not keep_seconds:
        return {"jobs": 0, "returns": 0}
    cutoff = jids.time_to_jid((now or jids.utcnow()) - datetime.timedelta(seconds=keep_seconds))
    removed_returns = _delete_in_chunks(
        engine,
        sa.select(returns.c.jid, returns.c.minion_id).where(returns.c.jid < cutoff).order_by(returns.c.jid),
        lambda keys: sa.delete(returns).where(sa.tuple_(returns.c.jid, returns.c.minion_id).in_([tuple(k) for k in keys])),
        chunk_size,
    )
    removed_jobs = _delete_in_chunks(
        engine,
        sa.select(jobs.c.jid).where(jobs.c.jid < cutoff).order_by(jobs.c.jid),
        lambda keys: sa.delete(jobs).where(jobs.c.jid.in_([k.jid for k in keys])),
        chunk_size,
    )
    return {"jobs": removed_jobs, "returns": removed_returns}


def purge_events(engine: sa.Engine, keep_seconds: Optional[int], chunk_size: int = 5000, now: Optional[datetime.datetime] = None) -> int:
    if not keep_seconds:
        return 0
    cutoff = (now or jids.utcnow()) - datetime.timedelta(seconds=keep_seconds)
    return _delete_in_chunks(
        engine,
        sa.select(events.c.id).where(events.c.stamp < cutoff).order_by(events.c.stamp),
        lambda keys: sa.delete(events).where(events.c.id.in_([k.id for k in keys])),
        chunk_size,
    )
