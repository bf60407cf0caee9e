"""Alcali's reads of saltext-mysql's tables, a store to run them on, and their query plans.

Alcali (github.com/latenighttales/alcali, ``api/models.py``, ``api/views/salt.py``,
``api/utils/__init__.py``) maps ``jids``, ``salt_returns`` and ``salt_events``
with unmanaged Django models; :data:`QUERIES` is the SQL Django sends for each
read it makes, written out here because Django is no dependency of this
project. It was checked against what Django 5.2 sends for Alcali's models on
MariaDB and PostgreSQL, run on the views (2026-12-03, a probe kept outside the
repository): the same predicates, orderings and limits (``.get()`` adds
``LIMIT 21``). Every ``SaltReturns`` query goes through its ``FindJobManager``,
hence the ``NOT (fun = 'saltutil.find_job')``.

Used by tests/store/test_legacy_views.py and benchmarks/legacy_view_plans.py.
"""

from __future__ import annotations

import dataclasses
import datetime
import json

import sqlalchemy as sa

from salt_engine_lib import jids, records

#: What ``FindJobManager`` adds to every salt_returns query.
NOT_FIND_JOB = "NOT (fun = 'saltutil.find_job')"
#: Tables whose full scan a read must not need.
BIG_TABLES = ("jobs", "returns", "events")
MINIONS = tuple(f"minion-{number:03d}.example.com" for number in range(20))
FUNS = ("test.ping", "state.apply", "cmd.run", "state.highstate", "saltutil.find_job", "grains.items")
MINIONS_PER_JOB = 5
START = datetime.datetime(2026, 11, 1)


@dataclasses.dataclass(frozen=True)
class AlcaliQuery:
    name: str
    #: Where Alcali runs it.
    source: str
    sql: str


QUERIES = (
    AlcaliQuery(
        "returns of a minion, newest first",
        "SaltReturnsList (target[]), Minions.last_job: SaltReturns.objects.filter(id=...).order_by('-alter_time')[:limit]",
        f"SELECT fun, jid, `return`, id, success, full_ret, alter_time FROM salt_returns "
        f"WHERE {NOT_FIND_JOB} AND id = :minion ORDER BY alter_time DESC LIMIT 50",
    ),
    AlcaliQuery(
        "newest returns",
        "SaltReturnsList (no filter): SaltReturns.objects.all().order_by('-alter_time')[:50]",
        f"SELECT fun, jid, `return`, id, success, full_ret, alter_time FROM salt_returns "
        f"WHERE {NOT_FIND_JOB} ORDER BY alter_time DESC LIMIT 50",
    ),
    AlcaliQuery(
        "a job by jid",
        "SaltReturnsListJid: SaltReturns.objects.filter(jid=...).order_by('-alter_time')",
        f"SELECT fun, jid, `return`, id, success, full_ret, alter_time FROM salt_returns "
        f"WHERE {NOT_FIND_JOB} AND jid = :jid ORDER BY alter_time DESC",
    ),
    AlcaliQuery(
        "one minion's return of a job",
        "SaltReturnsRetrieve, job_rendered: SaltReturns.objects.get(jid=..., id=...)",
        f"SELECT fun, jid, `return`, id, success, full_ret, alter_time FROM salt_returns WHERE {NOT_FIND_JOB} AND jid = :jid AND id = :minion",
    ),
    AlcaliQuery(
        "the load of a job",
        "SaltReturns.user(): Jids.objects.get(jid=...)",
        "SELECT jid, `load` FROM jids WHERE jid = :jid",
    ),
    AlcaliQuery(
        "the last 50 events",
        "EventsViewSet: SaltEvents.objects.all().order_by('-alter_time')[:50]",
        "SELECT id, tag, data, alter_time, master_id FROM salt_events ORDER BY alter_time DESC LIMIT 50",
    ),
    AlcaliQuery(
        "highstate history of a minion",
        "Minions.last_highstate: SaltReturns.objects.filter(Q(fun='state.apply') | Q(fun='state.highstate'), id=...)",
        f"SELECT fun, jid, `return`, id, success, full_ret, alter_time FROM salt_returns "
        f"WHERE {NOT_FIND_JOB} AND (fun = 'state.apply' OR fun = 'state.highstate') AND id = :minion",
    ),
    AlcaliQuery(
        "a function's returns of a minion, newest first",
        "Minions.custom_conformity: SaltReturns.objects.filter(fun=..., id=...).order_by('-alter_time')",
        f"SELECT fun, jid, `return`, id, success, full_ret, alter_time FROM salt_returns "
        f"WHERE {NOT_FIND_JOB} AND fun = :fun AND id = :minion ORDER BY alter_time DESC",
    ),
    AlcaliQuery(
        "highstate graph of the last 7 days",
        "graph_data(fun='highstate'): filter(fun in state.apply/highstate, alter_time__gt=...).extra(day=date(alter_time))",
        "SELECT DATE(alter_time) AS day, COUNT(jid) AS count, COUNT(CASE WHEN success = '0' THEN success END) AS error "
        f"FROM salt_returns WHERE {NOT_FIND_JOB} AND (fun = 'state.apply' OR fun = 'state.highstate') "
        "AND alter_time > :since GROUP BY DATE(alter_time) ORDER BY day",
    ),
)


def sql_for(conn: sa.Connection, query: AlcaliQuery) -> str:
    """The query in the connection's quoting (Django quotes `return` and `load` with backticks on MySQL only)."""
    return query.sql if conn.dialect.name in ("mysql", "mariadb") else query.sql.replace("`", '"')


def parameters(job_count: int) -> dict:
    """Values for the queries' parameters that hit rows of a store filled by :func:`fill`."""
    # A job in the middle that minion 3 returned (job n goes to minions n .. n+4, modulo 20).
    middle = job_count // 2 // len(MINIONS) * len(MINIONS)
    return {
        "minion": MINIONS[3],
        "jid": _jid(middle),
        "fun": "state.apply",
        "since": _when(job_count) - datetime.timedelta(days=7),
    }


def _when(number):
    # One job every two minutes: 20,000 jobs span about four weeks.
    return START + datetime.timedelta(minutes=2 * number, microseconds=number)


def _jid(number):
    return jids.time_to_jid(_when(number))


def fill(store, job_count: int, batch: int = 500) -> None:
    """``job_count`` jobs, each returned by 5 of 20 minions, with a publish event and an event per return."""
    for first in range(0, job_count, batch):
        jobs, returns, events = [], [], []
        for number in range(first, min(first + batch, job_count)):
            when, jid, fun = _when(number), _jid(number), FUNS[number % len(FUNS)]
            targets = [MINIONS[(number + offset) % len(MINIONS)] for offset in range(MINIONS_PER_JOB)]
            load = {"jid": jid, "fun": fun, "arg": [], "tgt": targets, "tgt_type": "list", "user": "root"}
            jobs.append(records.job_row(jid, load, targets, "master1"))
            events.append(records.event_row(f"salt/job/{jid}/new", dict(load, _stamp=when.isoformat()), "master1"))
            for offset, minion in enumerate(targets):
                stamp = (when + datetime.timedelta(seconds=1 + offset)).isoformat()
                ret = {
                    "id": minion,
                    "jid": jid,
                    "fun": fun,
                    "fun_args": [],
                    "return": {"n": number},
                    "retcode": 0,
                    "success": number % 7 != 0,
                }
                returns.append(records.return_row(dict(ret, _stamp=stamp), "master1"))
                events.append(records.event_row(f"salt/job/{jid}/ret/{minion}", dict(ret, _stamp=stamp), "master1"))
        store.write_batch(jobs=jobs, returns=returns, events=events)
    analyze(store.engine)


def analyze(engine: sa.Engine) -> None:
    """Fresh statistics, as a long-lived database has: the planner's choices depend on them."""
    with engine.connect() as conn:
        for table in BIG_TABLES:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"ANALYZE {table}")
            elif conn.dialect.name in ("mysql", "mariadb"):
                conn.exec_driver_sql(f"ANALYZE TABLE {table}").fetchall()
        conn.commit()


@dataclasses.dataclass(frozen=True)
class Plan:
    query: AlcaliQuery
    #: The EXPLAIN output as the database prints it.
    text: str
    #: Big tables read in full (MariaDB type ALL, PostgreSQL Seq Scan).
    full_scans: tuple
    #: The rows found are sorted after reading (MariaDB filesort, PostgreSQL Sort): not in index order.
    sorts: bool


def explain(conn: sa.Connection, query: AlcaliQuery, params: dict) -> Plan:
    sql = sql_for(conn, query)
    if conn.dialect.name == "postgresql":
        document = conn.execute(sa.text(f"EXPLAIN (FORMAT JSON) {sql}"), params).scalar()
        document = json.loads(document) if isinstance(document, str) else document
        text = "\n".join(row[0] for row in conn.execute(sa.text(f"EXPLAIN {sql}"), params))
        nodes = list(_postgresql_nodes(document[0]["Plan"]))
        scans = {node["Relation Name"] for node in nodes if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in BIG_TABLES}
        sorts = any(node["Node Type"] in ("Sort", "Incremental Sort") for node in nodes)
        return Plan(query, text, tuple(sorted(scans)), sorts)
    result = conn.execute(sa.text(f"EXPLAIN {sql}"), params)
    columns = list(result.keys())
    rows = [dict(zip(columns, row)) for row in result]
    text = "\n".join(" | ".join(str(row[column]) for column in columns) for row in [dict(zip(columns, columns))] + rows)
    scans = sorted({row["table"] for row in rows if row["type"] == "ALL" and row["table"] in BIG_TABLES})
    return Plan(query, text, tuple(scans), any("filesort" in (row["Extra"] or "") for row in rows))


def _postgresql_nodes(node):
    yield node
    for child in node.get("Plans", ()):
        yield from _postgresql_nodes(child)
