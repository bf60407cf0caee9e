"""Job-cache reads. Every query is bound and served by an index.

jids sort by time, so "newest first" pages are keyset range scans on the
primary key: ``WHERE jid < :before ORDER BY jid DESC LIMIT :n``, never OFFSET.
Every read is limited to a :class:`Scope` (``relay:read_scope``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Iterable, Iterator, Optional

import sqlalchemy as sa

from salt_engine_lib import jids
from salt_engine_lib.store.schema import events, job_minions, jobs, relay_engines, returns

if TYPE_CHECKING:
    import datetime

    from salt_engine_lib import config as relay_config


@dataclasses.dataclass(frozen=True)
class Scope:
    """Whose rows a read (or a cleanup) sees.

    ``master``: the jobs this master published, and the returns and events of
    its namespace; ``cluster``: every row of the namespace (a master
    cluster's, or a lone master's own); ``all``: every row in the store.
    """

    kind: str = "all"
    namespace: str = ""
    master_id: Optional[str] = None

    @classmethod
    def of(cls, settings: relay_config.Settings) -> Scope:
        return cls(settings.read_scope, settings.namespace, settings.master_id or settings.namespace)

    @classmethod
    def owned_by(cls, settings: relay_config.Settings) -> Scope:
        """The rows retention may delete: the daemon's namespace, or every row with ``read_scope: all``."""
        return EVERY_ROW if settings.read_scope == "all" else cls("cluster", settings.namespace)

    def where(self, table: sa.Table) -> Optional[sa.ColumnElement]:
        """The condition that keeps ``table`` to this scope; None: every row."""
        if self.kind == "all":
            return None
        condition = table.c.namespace == self.namespace
        if self.kind == "master" and table is jobs:
            condition = sa.and_(condition, table.c.master_id == self.master_id)
        return condition

    def apply(self, query: sa.Select, table: sa.Table) -> sa.Select:
        condition = self.where(table)
        return query if condition is None else query.where(condition)


EVERY_ROW = Scope()

# Keys of the return document that job-cache readers expect beside "return"
# (what local_cache keeps in return.p and out.p).
_JID_ENTRY_KEYS = ("retcode", "success", "out")


def get_load(conn: sa.Connection, jid: str, scope: Scope = EVERY_ROW) -> dict:
    """The publish load of ``jid`` with ``Minions`` (the publisher's and every syndic's), or {} if unknown."""
    query = scope.apply(sa.select(jobs.c.namespace, jobs.c.load, jobs.c.minions).where(jobs.c.jid == str(jid)), jobs)
    # Two masters' jobs may share a jid in the "all" scope: the first namespace answers.
    row = conn.execute(query.order_by(jobs.c.namespace).limit(1)).first()
    if row is None:
        return {}
    load = dict(row.load or {})
    reported = conn.execute(
        sa.select(job_minions.c.minion_id).where(job_minions.c.jid == str(jid), job_minions.c.namespace == row.namespace)
    )
    minions = set(row.minions or ()) | {reported_row.minion_id for reported_row in reported}
    if row.minions is not None or minions:
        load["Minions"] = sorted(minions)
    return load


def get_jid(conn: sa.Connection, jid: str, scope: Scope = EVERY_ROW) -> dict:
    """``{minion_id: {"return": ..., "retcode": ..., "success": ..., "out": ...}}``."""
    query = sa.select(returns.c.minion_id, returns.c.ret, returns.c.document).where(returns.c.jid == str(jid))
    rows = conn.execute(scope.apply(query, returns).order_by(returns.c.minion_id, returns.c.namespace))
    result = {}
    for row in rows:
        if row.minion_id in result:
            continue  # "all" scope: another master's job with the same jid
        entry = {"return": row.ret}
        document = row.document or {}
        entry.update({key: document[key] for key in _JID_ENTRY_KEYS if key in document})
        result[row.minion_id] = entry
    return result


def _job_page_query(limit, before=None, start=None, end=None, exclude_funs=(), scope=EVERY_ROW):
    query = scope.apply(sa.select(jobs.c.jid, jobs.c.namespace, jobs.c.master_id, jobs.c.load, jobs.c.minions, jobs.c.ended_at), jobs)
    if before is not None:
        query = query.where(jobs.c.jid < str(before))
    if start is not None:
        query = query.where(jobs.c.jid >= jids.time_to_jid(start))
    if end is not None:
        query = query.where(jobs.c.jid < jids.time_to_jid(end))
    if exclude_funs:
        # fun is NULL for loads without one; NOT IN would drop those rows.
        query = query.where(sa.or_(jobs.c.fun.is_(None), jobs.c.fun.not_in(list(exclude_funs))))
    query = query.order_by(jobs.c.jid.desc(), jobs.c.namespace.desc())  # the primary key, read backwards
    return query if limit is None else query.limit(int(limit))


def list_jobs(
    conn: sa.Connection,
    limit: Optional[int] = None,
    before: Optional[str] = None,
    start: Optional[datetime.datetime] = None,
    end: Optional[datetime.datetime] = None,
    exclude_funs: Iterable[str] = (),
    scope: Scope = EVERY_ROW,
) -> list[sa.Row]:
    """Newest first; pass the last jid seen as ``before`` for the next page.

    ``start``/``end`` are naive UTC datetimes bounding the job start time.
    """
    return list(conn.execute(_job_page_query(limit, before, start, end, exclude_funs, scope)))


def iter_all_jobs(conn: sa.Connection, page_size: int = 5000, scope: Scope = EVERY_ROW) -> Iterator[sa.Row]:
    """Every job, newest first, fetched in keyset pages (for get_jids)."""
    before = None
    while True:
        # Two masters' jobs with one jid may straddle pages in the "all" scope;
        # get_jids answers one job per jid anyway.
        page = list_jobs(conn, limit=page_size, before=before, scope=scope)
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


def latest_return_of_fun(conn: sa.Connection, fun: str, scope: Scope = EVERY_ROW) -> dict:
    """``{minion_id: return}`` of each minion's newest call of ``fun``."""
    newest = scope.apply(
        sa.select(returns.c.minion_id, sa.func.max(returns.c.jid).label("jid")).where(returns.c.fun == str(fun)), returns
    ).group_by(returns.c.minion_id)
    newest = newest.subquery()
    query = sa.select(returns.c.minion_id, returns.c.ret).join(
        newest, sa.and_(returns.c.minion_id == newest.c.minion_id, returns.c.jid == newest.c.jid)
    )
    return {row.minion_id: row.ret for row in conn.execute(scope.apply(query.where(returns.c.fun == str(fun)), returns))}


def minion_ids(conn: sa.Connection, scope: Scope = EVERY_ROW) -> list[str]:
    query = scope.apply(sa.select(returns.c.minion_id).distinct(), returns).order_by(returns.c.minion_id)
    return [row.minion_id for row in conn.execute(query)]


def set_endtime(conn: sa.Connection, jid: str, ended_at: Optional[datetime.datetime], namespace: str) -> None:
    """The end time of the job ``jid`` of ``namespace`` (the master's own: only it ends its jobs)."""
    conn.execute(sa.update(jobs).where(jobs.c.jid == str(jid), jobs.c.namespace == namespace).values(ended_at=ended_at))


def get_endtime(conn: sa.Connection, jid: str, scope: Scope = EVERY_ROW) -> Optional[datetime.datetime]:
    query = scope.apply(sa.select(jobs.c.ended_at).where(jobs.c.jid == str(jid)), jobs)
    return conn.execute(query.order_by(jobs.c.namespace).limit(1)).scalar()


def engines(conn: sa.Connection) -> list[sa.Row]:
    """Every engine that reported into this store (``relay_engines``), by master id."""
    return list(conn.execute(sa.select(relay_engines).order_by(relay_engines.c.master_id)))


def counts(conn: sa.Connection) -> dict[str, int]:
    """Row counts per table (for ``salt-relay status``)."""
    return {table.name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() for table in (jobs, returns, events)}
