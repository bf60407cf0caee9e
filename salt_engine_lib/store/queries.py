"""Job-cache reads. Every query is bound and served by an index.

jids sort by time, so "newest first" pages are keyset range scans on the
primary key: ``WHERE jid < :before ORDER BY jid DESC LIMIT :n``, never OFFSET.
Every read is limited to a :class:`Scope` (``relay:read_scope``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
from typing import TYPE_CHECKING, Iterable, Optional

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

from salt_engine_lib import jids, listing
from salt_engine_lib.errors import StoreError
from salt_engine_lib.store.schema import events, job_listings, job_minions, jobs, relay_engines, returns

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
    """The publish load of ``jid`` with ``Minions`` (the publisher's and every syndic's), or {} if unknown.

    One round trip: the syndics' minions (job_minions) come joined, a row each.
    """
    rows = conn.execute(_load_statement(scope), {"jid": str(jid)}).all()
    if not rows:
        return {}
    first = rows[0]
    load = dict(first.load or {})
    reported_minions = {row.reported for row in rows if row.namespace == first.namespace and row.reported is not None}
    minions = set(first.minions or ()) | reported_minions
    if first.minions is not None or minions:
        load["Minions"] = sorted(minions)
    return load


# The point reads' statements are built once per scope: building one costs
# about as much as SQLAlchemy's cached compile and execute of it.


@functools.lru_cache(maxsize=32)
def _load_statement(scope):
    reported = job_minions.c.minion_id.label("reported")
    joined = jobs.outerjoin(job_minions, sa.and_(job_minions.c.jid == jobs.c.jid, job_minions.c.namespace == jobs.c.namespace))
    query = scope.apply(sa.select(jobs.c.namespace, jobs.c.load, jobs.c.minions, reported).select_from(joined), jobs)
    # Two masters' jobs may share a jid in the "all" scope: the first namespace answers.
    return query.where(jobs.c.jid == sa.bindparam("jid")).order_by(jobs.c.namespace)


@functools.lru_cache(maxsize=32)
def _returns_statement(scope):
    query = sa.select(returns.c.minion_id, returns.c.ret, returns.c.document).where(returns.c.jid == sa.bindparam("jid"))
    return scope.apply(query, returns).order_by(returns.c.minion_id, returns.c.namespace)


def get_jid(conn: sa.Connection, jid: str, scope: Scope = EVERY_ROW) -> dict:
    """``{minion_id: {"return": ..., "retcode": ..., "success": ..., "out": ...}}``."""
    result = {}
    for row in conn.execute(_returns_statement(scope), {"jid": str(jid)}):
        if row.minion_id in result:
            continue  # "all" scope: another master's job with the same jid
        entry = {"return": row.ret}
        document = row.document or {}
        entry.update({key: document[key] for key in _JID_ENTRY_KEYS if key in document})
        result[row.minion_id] = entry
    return result


@functools.lru_cache(maxsize=64)  # the newest-jobs page of get_jids_filter, mostly: see _load_statement
def _job_page_query(limit, before=None, start=None, end=None, exclude_funs=(), scope=EVERY_ROW, listing_only=False):
    """Jobs newest first: their rows, or (``listing_only``) each jid and its listing member."""
    if listing_only:
        # The member as a subquery on job_listings' key, not a join: with a
        # join PostgreSQL may hash both tables and sort, where this keeps
        # reading the jobs key backwards up to the LIMIT.
        member = (
            sa.select(_listing_member())
            .where(job_listings.c.jid == jobs.c.jid, job_listings.c.namespace == jobs.c.namespace)
            .scalar_subquery()
            .label("member")
        )
        columns = (jobs.c.jid, member)
    else:
        columns = (jobs.c.jid, jobs.c.namespace, jobs.c.master_id, jobs.c.load, jobs.c.minions, jobs.c.ended_at)
    query = scope.apply(sa.select(*columns), jobs)
    if before is not None:
        query = query.where(jobs.c.jid < str(before))
    if start is not None:
        query = query.where(jobs.c.jid >= jids.time_to_jid(start))
    if end is not None:
        query = query.where(jobs.c.jid < jids.time_to_jid(end))
    if exclude_funs:
        # fun is NULL for loads without one; NOT IN would drop those rows.
        query = query.where(sa.or_(jobs.c.fun.is_(None), jobs.c.fun.not_in(list(exclude_funs))))
    # The primary key (jid, namespace), read backwards. With the namespace
    # fixed by the scope, MariaDB only reads the key backwards for ORDER BY
    # jid alone (with namespace too it sorts the whole table).
    query = query.order_by(jobs.c.jid.desc()) if scope.kind != "all" else query.order_by(jobs.c.jid.desc(), jobs.c.namespace.desc())
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
    return list(conn.execute(_job_page_query(limit, before, start, end, tuple(exclude_funs), scope)))


def newest_listing(conn: sa.Connection, limit: int, exclude_funs: Iterable[str] = (), scope: Scope = EVERY_ROW) -> list[tuple[str, dict]]:
    """``(jid, get_jids entry)`` of the ``limit`` newest jobs, newest first (get_jids_filter): no load is read.

    A job stored before the listing whose upgrade could not render it is
    rendered from its load here, as in :func:`job_listing`.
    """
    rows = conn.execute(_job_page_query(limit, exclude_funs=tuple(exclude_funs), scope=scope, listing_only=True)).all()
    entries = listing.parse(",".join(row.member for row in rows if row.member is not None))
    unrendered = [row.jid for row in rows if row.member is None]
    if unrendered:
        query = scope.apply(sa.select(jobs.c.jid, jobs.c.load, jobs.c.ended_at, sa.null().label("member")), jobs)
        entries.update(listing_entries(conn.execute(query.where(jobs.c.jid.in_(unrendered)))))
    return [(row.jid, entries[row.jid]) for row in rows]


# -- the full job listing (get_jids) ---------------------------------------------
# Each job's entry is rendered when written (job_listings, salt_engine_lib.listing);
# a page of entries is one string aggregation over that narrow table,
# decoded by one json.loads, which is what makes the listing of every job fast.

# Jobs per page: 5,000 of the benchmark's were 1 MB of text, 7 ms to decode.
LISTING_PAGE_SIZE = 5000
# MariaDB cuts GROUP_CONCAT at group_concat_max_len (1 MiB by default), and
# a whole page can be bigger; the row itself stays bound by max_allowed_packet.
_MYSQL_AGGREGATE_LIMIT = 1 << 30


class _joined(sa.sql.functions.GenericFunction):
    """The non-NULL values of a group joined by commas, in the page's order."""

    type = sa.Text()
    inherit_cache = True


@compiles(_joined, "mysql")
@compiles(_joined, "mariadb")
def _joined_mysql(element, compiler, **kw):
    return f"GROUP_CONCAT({compiler.process(element.clauses, **kw)} SEPARATOR ',')"


@compiles(_joined, "postgresql")
def _joined_postgresql(element, compiler, **kw):
    return f"string_agg({compiler.process(element.clauses, **kw)}, ',')"


@compiles(_joined, "sqlite")
def _joined_sqlite(element, compiler, **kw):
    return f"group_concat({compiler.process(element.clauses, **kw)}, ',')"


def _listing_member():
    """The row's member, head and tail (NULL while the job has no head: rendered on read)."""
    return job_listings.c.head.concat(sa.func.coalesce(job_listings.c.tail, listing.OPEN_TAIL))


def job_listing(conn: sa.Connection, scope: Scope = EVERY_ROW, page_size: int = LISTING_PAGE_SIZE) -> dict[str, dict]:
    """Every job as Salt's ``get_jids`` answers it: ``{jid: format_jid_instance(jid, load) + EndTime}``.

    With two namespaces' jobs under one jid (``all`` scope), one of them answers.
    """
    answer: dict[str, dict] = {}
    with _collector_paused():
        for page in _listing_pages(conn, scope, page_size):
            entries = listing.parse(page.members) if page.members else {}
            entries.update(listing_entries(page.unrendered))
            if len(entries) != page.jobs:
                raise StoreError(f"the job listing page of {page.jobs} jobs decoded to {len(entries)} entries")
            answer.update(entries)
    return answer


@dataclasses.dataclass
class _ListingPage:
    jobs: int  # distinct jids in the page
    members: Optional[str]  # the rendered members, joined by commas
    unrendered: list  # rows of jobs stored before the listing whose upgrade could not render them (jid, load, ended_at, member)


def _listing_pages(conn, scope, page_size):
    """The listing's pages, newest first, fetched (every database round trip of job_listing is here).

    A page is about ``page_size`` jobs: its oldest jid is found on the primary
    key (``LIMIT 1 OFFSET page_size - 1``), then its members are aggregated
    over that key range. An aggregate over a ``LIMIT`` subquery instead made
    MariaDB copy the page into a temporary table first: half again as long.
    """
    if conn.dialect.name in ("mysql", "mariadb"):
        conn.exec_driver_sql(f"SET SESSION group_concat_max_len = {_MYSQL_AGGREGATE_LIMIT}")
    before = None
    while True:
        bounds = {"before": before} if before is not None else {}
        oldest = conn.execute(_listing_statement(scope, "bound", page_size, before is not None), bounds).scalar()
        if oldest is not None:
            bounds["oldest"] = oldest
        kinds = (scope, page_size, before is not None, oldest is not None)
        rows, rendered, jobs_in_page, members = conn.execute(_listing_statement(scope, "aggregate", *kinds[1:]), bounds).one()
        unrendered = conn.execute(_listing_statement(scope, "unrendered", *kinds[1:]), bounds).all() if rendered < rows else []
        yield _ListingPage(jobs_in_page, members, unrendered)
        if oldest is None:
            return
        before = oldest


@functools.lru_cache(maxsize=64)
def _listing_statement(scope, kind, page_size, before, oldest=False):
    """One of the listing's statements, built once (as _load_statement), bound by :before and :oldest."""
    query = scope.apply(sa.select(job_listings.c.jid), job_listings)
    if before:
        query = query.where(job_listings.c.jid < sa.bindparam("before"))
    if kind == "bound":
        return query.order_by(job_listings.c.jid.desc()).limit(1).offset(page_size - 1)
    if oldest:
        query = query.where(job_listings.c.jid >= sa.bindparam("oldest"))
    if kind == "unrendered":
        listed = job_listings.join(jobs, sa.and_(jobs.c.jid == job_listings.c.jid, jobs.c.namespace == job_listings.c.namespace))
        unrendered = query.with_only_columns(jobs.c.jid, jobs.c.load, jobs.c.ended_at, sa.null().label("member"))
        return unrendered.select_from(listed).where(job_listings.c.head.is_(None))
    member = _listing_member()
    # Only the "all" scope can hold one jid twice (two namespaces); counting
    # distinct jids costs the database a sort of the page.
    jobs_in_page = sa.func.count(sa.distinct(job_listings.c.jid)) if scope.kind == "all" else sa.func.count()
    return query.with_only_columns(sa.func.count(), sa.func.count(member), jobs_in_page, _joined(member))


@contextlib.contextmanager
def _collector_paused():
    """No cyclic garbage collection while the listing's dicts are built.

    They hold no cycles, but each few hundred new containers start a
    collection that walks the ever larger answer: with it running, decoding
    100,000 entries took 40 % longer. Reference counting still frees
    everything meanwhile.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def listing_entries(rows: Iterable[sa.Row]) -> dict[str, dict]:
    """``{jid: entry}`` of job rows read one by one (``jid``, ``load``, ``ended_at``, and ``member``, NULL where unrendered)."""
    entries = {}
    for row in rows:
        entries.update(listing.parse(row.member or listing.member(listing.head(row.jid, row.load), listing.tail(row.ended_at))))
    return entries


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
    set_endtimes(conn, [(jid, namespace, ended_at)])


def set_endtimes(conn: sa.Connection, endtimes: Iterable[tuple[str, str, Optional[datetime.datetime]]]) -> None:
    """``(jid, namespace, ended_at)`` each: the jobs' end times and their listing tails, one statement per table."""
    params = [
        {"b_jid": str(jid), "b_namespace": namespace, "b_ended": ended, "b_tail": listing.tail(ended)} for jid, namespace, ended in endtimes
    ]
    if not params:
        return
    for table, values in ((jobs, {"ended_at": sa.bindparam("b_ended")}), (job_listings, {"tail": sa.bindparam("b_tail")})):
        keyed = table.update().where(table.c.jid == sa.bindparam("b_jid"), table.c.namespace == sa.bindparam("b_namespace"))
        conn.execute(keyed.values(values), params)


def get_endtime(conn: sa.Connection, jid: str, scope: Scope = EVERY_ROW) -> Optional[datetime.datetime]:
    query = scope.apply(sa.select(jobs.c.ended_at).where(jobs.c.jid == str(jid)), jobs)
    return conn.execute(query.order_by(jobs.c.namespace).limit(1)).scalar()


def engines(conn: sa.Connection) -> list[sa.Row]:
    """Every engine that reported into this store (``relay_engines``), by master id."""
    return list(conn.execute(sa.select(relay_engines).order_by(relay_engines.c.master_id)))


def counts(conn: sa.Connection) -> dict[str, int]:
    """Row counts per table (for ``salt-relay status``)."""
    return {table.name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() for table in (jobs, returns, events)}
