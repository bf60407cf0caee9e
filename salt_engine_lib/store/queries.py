"""Job-cache reads. Every query is bound and served by an index.

jids sort by time, so "newest first" pages are keyset range scans on the
primary key: ``WHERE jid < :before ORDER BY jid DESC LIMIT :n``, never OFFSET.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Iterator, Optional

import sqlalchemy as sa

from salt_engine_lib import jids
from salt_engine_lib.store.schema import jobs, returns

if TYPE_CHECKING:
    import datetime

# Keys of the return document that job-cache readers expect beside "return"
# (what local_cache keeps in return.p and out.p).
_JID_ENTRY_KEYS = ("retcode", "success", "out")


def get_load(conn: sa.Connection, jid: str) -> dict:
    """The publish load of ``jid`` with ``Minions``, or {} if unknown."""
    row = conn.execute(sa.select(jobs.c.load, jobs.c.minions).where(jobs.c.jid == str(jid))).first()
    if row is None:
        return {}
    load = dict(row.load or {})
    if row.minions is not None:
        load["Minions"] = list(row.minions)
    return load


def get_jid(conn: sa.Connection, jid: str) -> dict:
    """``{minion_id: {"return": ..., "retcode": ..., "success": ..., "out": ...}}``."""
    rows = conn.execute(
        sa.select(returns.c.minion_id, returns.c.ret, returns.c.document).where(returns.c.jid == str(jid)).order_by(returns.c.minion_id)
    )
    result = {}
    for row in rows:
        entry = {"return": row.ret}
        document = row.document or {}
        entry.update({key: document[key] for key in _JID_ENTRY_KEYS if key in document})
        result[row.minion_id] = entry
    return result


def _job_page_query(limit, before=None, start=None, end=None, exclude_funs=()):
    query = sa.select(jobs.c.jid, jobs.c.load, jobs.c.minions, jobs.c.ended_at)
    if before is not None:
        query = query.where(jobs.c.jid < str(before))
    if start is not None:
        query = query.where(jobs.c.jid >= jids.time_to_jid(start))
    if end is not None:
        query = query.where(jobs.c.jid < jids.time_to_jid(end))
    if exclude_funs:
        # fun is NULL for loads without one; NOT IN would drop those rows.
        query = query.where(sa.or_(jobs.c.fun.is_(None), jobs.c.fun.not_in(list(exclude_funs))))
    query = query.order_by(jobs.c.jid.desc())
    return query if limit is None else query.limit(int(limit))


def list_jobs(
    conn: sa.Connection,
    limit: Optional[int] = None,
    before: Optional[str] = None,
    start: Optional[datetime.datetime] = None,
    end: Optional[datetime.datetime] = None,
    exclude_funs: Iterable[str] = (),
) -> list[sa.Row]:
    """Newest first; pass the last jid seen as ``before`` for the next page.

    ``start``/``end`` are naive UTC datetimes bounding the job start time.
    """
    return list(conn.execute(_job_page_query(limit, before, start, end, exclude_funs)))


def iter_all_jobs(conn: sa.Connection, page_size: int = 5000) -> Iterator[sa.Row]:
    """Every job, newest first, fetched in keyset pages (for get_jids)."""
    before = None
    while True:
        page = list_jobs(conn, limit=page_size, before=before)
        yield from page
        if len(page) < page_size:
            return
        before = page[-1].jid


def returns_of_minion(conn: sa.Connection, minion_id: str, limit: int = 50, before: Optional[str] = None) -> list[sa.Row]:
    query = sa.select(returns).where(returns.c.minion_id == str(minion_id))
    if before is not None:
        query = query.where(returns.c.jid < str(before))
    return list(conn.execute(query.order_by(returns.c.jid.desc()).limit(int(limit))))


def failed_returns(conn: sa.Connection, since_jid: str, limit: int = 100) -> list[sa.Row]:
    query = (
        sa.select(returns).where(returns.c.success.is_(False), returns.c.jid >= str(since_jid)).order_by(returns.c.jid).limit(int(limit))
    )
    return list(conn.execute(query))


def latest_return_of_fun(conn: sa.Connection, fun: str) -> dict:
    """``{minion_id: return}`` of each minion's newest call of ``fun``."""
    newest = (
        sa.select(returns.c.minion_id, sa.func.max(returns.c.jid).label("jid"))
        .where(returns.c.fun == str(fun))
        .group_by(returns.c.minion_id)
        .subquery()
    )
    query = sa.select(returns.c.minion_id, returns.c.ret).join(
        newest, sa.and_(returns.c.minion_id == newest.c.minion_id, returns.c.jid == newest.c.jid)
    )
    return {row.minion_id: row.ret for row in conn.execute(query)}


def minion_ids(conn: sa.Connection) -> list[str]:
    query = sa.select(returns.c.minion_id).distinct().order_by(returns.c.minion_id)
    return [row.minion_id for row in conn.execute(query)]


def set_endtime(conn: sa.Connection, jid: str, ended_at: Optional[datetime.datetime]) -> None:
    conn.execute(sa.update(jobs).where(jobs.c.jid == str(jid)).values(ended_at=ended_at))


def get_endtime(conn: sa.Connection, jid: str) -> Optional[datetime.datetime]:
    return conn.execute(sa.select(jobs.c.ended_at).where(jobs.c.jid == str(jid))).scalar()


def counts(conn: sa.Connection) -> dict[str, int]:
    """Row counts per table (for ``salt-relay status``)."""
    from salt_engine_lib.store.schema import events

    return {table.name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() for table in (jobs, returns, events)}
