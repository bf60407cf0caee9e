"""Query plans of Alcali's reads on the saltext-mysql views (``relay:legacy_views``), MariaDB and PostgreSQL.

Run it from the repository root (servers as in ``scripts/ensure-services.sh``)::

    python benchmarks/legacy_view_plans.py                 # 20,000 jobs, writes benchmarks/results/legacy_views_plans.md
    python benchmarks/legacy_view_plans.py --jobs 2000 --output -   # print only

Per dialect, in a fresh database (created and dropped here): the schema at
head with the views, ``--jobs`` jobs each returned by 5 of 20 minions, a
publish event and an event per return (``tests/support/alcali.py``:
``fill``), fresh statistics; then ``EXPLAIN`` of each of Alcali's reads
(``alcali.QUERIES``, the SQL its Django models send) and its median time over
``--runs``; then a downgrade to 0003 (without 0004's indexes on
``returns.returned_at``, which is ``salt_returns.alter_time``), fresh
statistics, and the same again. A full scan is MariaDB's ``type: ALL`` or PostgreSQL's ``Seq Scan`` on
``jobs``, ``returns`` or ``events``.
"""

import argparse
import datetime
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _results  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from salt_engine_lib.store import Store, connection, migrate  # noqa: E402
from tests.support import alcali, databases  # noqa: E402

DIALECTS = ("mysql", "postgresql")
OUTPUT = _results.RESULTS / "legacy_views_plans.md"
#: The revision before the indexes this measures.
BEFORE_INDEXES = "0003"


def _median_ms(conn, query, params, runs):
    sql = sa.text(alcali.sql_for(conn, query))
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        conn.execute(sql, params).fetchall()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def _measure(engine, jobs, runs):
    params = alcali.parameters(jobs)
    with engine.connect() as conn:
        return [(alcali.explain(conn, query, params), _median_ms(conn, query, params, runs)) for query in alcali.QUERIES]


def _server_version(engine):
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT version()").scalar()


def run_dialect(dialect, jobs, runs):
    with databases.server_database(dialect, prefix="relay_bench_views") as url:
        engine = connection.get_engine(url)
        migrate.upgrade(engine, legacy_views=True)
        started = time.monotonic()
        alcali.fill(Store(url), jobs)
        _results.log(f"{dialect}: {jobs} jobs stored in {time.monotonic() - started:.1f} s")
        with engine.connect() as conn:
            counts = {table: conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar() for table in alcali.BIG_TABLES}
        after = _measure(engine, jobs, runs)
        _downgrade(engine, BEFORE_INDEXES)  # the same rows without 0004's indexes
        alcali.analyze(engine)
        before = _measure(engine, jobs, runs)
        return {"version": _server_version(engine), "counts": counts, "before": before, "after": after}


def _downgrade(engine, revision):
    from alembic import command

    with engine.connect() as conn:
        command.downgrade(migrate.alembic_config(conn), revision)
        conn.commit()


def _scan_note(plan):
    note = "full scan of " + ", ".join(plan.full_scans) if plan.full_scans else "index"
    return note + " + sort" if plan.sorts else note


def render(results, jobs, runs, command):
    head = migrate.head_revision()
    lines = [
        "# Alcali's reads on the saltext-mysql views: query plans",
        "",
        f"Written by `{command}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"(commit {_results.source().get('commit', 'unknown')[:12]}, load average {_results.loadavg()}).",
        "",
        f"Data: {jobs:,} jobs, each returned by 5 of 20 minions, a publish event and an event per return "
        "(`tests/support/alcali.py`: `fill`), statistics fresh (ANALYZE). The queries are the SQL Alcali's Django "
        "models send (`alcali.QUERIES`, from github.com/latenighttales/alcali `api/models.py`, `api/views/salt.py`, "
        "`api/utils/__init__.py`); parameters: minion `minion-003`, a jid in the middle, fun `state.apply`, "
        "graph window 7 days (a quarter of the data). Times are medians of "
        f"{runs} runs on the loopback server, for orientation only.",
        "",
        f"`{BEFORE_INDEXES}`: the views on the tables as they were; `{head}`: with migration 0004's indexes "
        "`ix_returns_minion_returned_at (minion_id, returned_at)` and `ix_returns_returned_at (returned_at)` "
        "(`salt_returns.alter_time` is `returns.returned_at`).",
        "",
        "| dialect | query | plan at " + BEFORE_INDEXES + " | ms | plan at " + head + " | ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for dialect, result in results.items():
        for (old, old_ms), (new, new_ms) in zip(result["before"], result["after"]):
            lines.append(f"| {dialect} | {old.query.name} | {_scan_note(old)} | {old_ms:.2f} | {_scan_note(new)} | {new_ms:.2f} |")
    for dialect, result in results.items():
        lines += ["", f"## {dialect}: {result['version']}", "", f"Rows: {result['counts']}."]
        for (old, _), (new, _) in zip(result["before"], result["after"]):
            lines += ["", f"### {old.query.name}", "", f"Alcali: {old.query.source}", "", "```sql", old.query.sql, "```"]
            for revision, plan in ((BEFORE_INDEXES, old), (head, new)):
                lines += ["", f"At {revision} ({_scan_note(plan)}):", "", "```", plan.text, "```"]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dialects", default=",".join(DIALECTS))
    parser.add_argument("--output", default=str(OUTPUT), help="markdown file to write; '-' prints it")
    args = parser.parse_args()
    results = {dialect: run_dialect(databases.dialect_of(dialect), args.jobs, args.runs) for dialect in args.dialects.split(",")}
    document = render(results, args.jobs, args.runs, "python " + " ".join(sys.argv))
    if args.output == "-":
        print(document)
    else:
        pathlib.Path(args.output).write_text(document)
        _results.log(f"wrote {args.output}")
    for dialect, result in results.items():
        for plan, _ in result["after"]:
            print(f"{dialect:10} {plan.query.name:50} {_scan_note(plan)}")


if __name__ == "__main__":
    main()
