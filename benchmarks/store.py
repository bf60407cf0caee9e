"""Write throughput of the SQL store: batched idempotent writes vs. one row per transaction.

Run it from the repository root (servers as in ``scripts/ensure-services.sh``)::

    python benchmarks/store.py                                # all three dialects, 3 runs
    python benchmarks/store.py --dialects sqlite,postgresql --runs 5 --json /tmp/store-bench.json

A run writes ``benchmarks/results/store.json`` unless ``--json`` says otherwise
(every run, the medians, the load average at start and end; see ``_results.py``).

What one run does, per dialect, in a fresh database (``relay_test_<uuid8>`` on the
servers, a temporary file for SQLite; created and dropped here):

1. ``ping``: 10,000 ping-sized returns (100 jobs x 100 minions, ``test.ping``) and their
   100 job rows, written with ``Store.write_batch`` in batches of 500 returns, one
   transaction per batch -- what a relay worker does with a broker message.
2. ``state``: 1,000 state-like returns of ~20 KB each (10 jobs x 100 minions,
   ``state.apply``), the same way.
3. Each payload is written a second time (redelivery: every row hits its natural key).
   The row counts must not change; the script fails if they do.
4. Naive baseline, same run and same ``returns`` table: a plain ``INSERT`` of one row
   per ``engine.begin()`` (one transaction per return, as a returner that writes each
   return on its own would), capped at 2,000 rows per payload.

Rows/s count ``returns`` rows (the job rows ride along). Building the rows (records.py)
is done before the clock starts; the clock covers the statements and the commits.
The table shows medians over ``--runs``; ``first/naive`` is the speed-up of batching.
The servers' durability settings (fsync per commit or not) decide the naive numbers,
so they are printed under the table.
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

from salt_engine_lib import jids, records  # noqa: E402
from salt_engine_lib.store import Store, queries, schema  # noqa: E402
from tests.support import databases  # noqa: E402
from tests.support.servers import ServerUnavailable  # noqa: E402

DIALECTS = ("sqlite", "mysql", "postgresql")

BATCH_SIZE = 500
NAIVE_CAP = 2000
MINIONS_PER_JOB = 100
# payload -> (jobs, fun); returns = jobs * MINIONS_PER_JOB
PAYLOADS = {"ping": (100, "test.ping"), "state": (10, "state.apply")}
BASE_TIME = datetime.datetime(2026, 1, 2, 3, 4, 5)


def durability_settings(engine):
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            names = ("fsync", "synchronous_commit", "wal_sync_method")
            return {n: conn.execute(sa.text(f"SHOW {n}")).scalar() for n in names}
        if engine.dialect.name in ("mysql", "mariadb"):
            row = conn.execute(sa.text("SELECT @@version, @@innodb_flush_log_at_trx_commit, @@sync_binlog, @@log_bin")).one()
            return {"version": row[0], "innodb_flush_log_at_trx_commit": row[1], "sync_binlog": row[2], "log_bin": row[3]}
        return {n: conn.exec_driver_sql(f"PRAGMA {n}").scalar() for n in ("journal_mode", "synchronous")}


# --- payloads -------------------------------------------------------------------------------


def state_return_value(minion, job):
    """~20 KB, shaped like a state.apply return (20 file.managed states with diffs)."""
    diff = "".join(f"-old setting {n} = {n * 7}\n+new setting {n} = {n * 7 + job}\n" for n in range(12))
    value = {}
    for i in range(20):
        path = f"/etc/app/conf.d/{i:02d}-{minion}.conf"
        value[f"file_|-{path}_|-{path}_|-managed"] = {
            "name": path,
            "changes": {"diff": diff},
            "result": True,
            "comment": f"File {path} updated",
            "__sls__": "app.config",
            "__run_num__": i,
            "start_time": "03:04:05.123456",
            "duration": 12.5 + i,
            "__id__": path,
        }
    return value


def payload_rows(payload, jid_offset_seconds=0):
    """(batches, returns_total): batches of (job rows, return rows), built before timing."""
    jobs_count, fun = PAYLOADS[payload]
    now = jids.utcnow()
    minions = [f"minion-{m:03d}.example.com" for m in range(MINIONS_PER_JOB)]
    job_rows, return_rows = {}, []
    for j in range(jobs_count):
        when = BASE_TIME + datetime.timedelta(seconds=jid_offset_seconds + j, microseconds=j)
        jid = jids.time_to_jid(when)
        load = {"jid": jid, "fun": fun, "arg": [], "tgt": "minion-*", "tgt_type": "glob", "user": "root"}
        job_rows[jid] = records.job_row(jid, load, minions, master_id="master1", now=now)
        for m in minions:
            ret = True if payload == "ping" else state_return_value(m, j)
            doc = {
                "cmd": "_return",
                "id": m,
                "jid": jid,
                "fun": fun,
                "fun_args": [],
                "return": ret,
                "retcode": 0,
                "success": True,
                "_stamp": when.isoformat(),
            }
            return_rows.append(records.return_row(doc, master_id="master1", now=now))
    batches = []
    for start in range(0, len(return_rows), BATCH_SIZE):
        chunk = return_rows[start : start + BATCH_SIZE]
        chunk_jids = dict.fromkeys(row["jid"] for row in chunk)
        batches.append(([job_rows[jid] for jid in chunk_jids], chunk))
    return batches, len(return_rows), len(job_rows)


# --- measurements ---------------------------------------------------------------------------


def batched_pass(store, batches):
    started = time.perf_counter()
    for job_rows, return_rows in batches:
        store.write_batch(jobs=job_rows, returns=return_rows)
    return time.perf_counter() - started


def naive_pass(engine, rows):
    insert = schema.returns.insert()
    started = time.perf_counter()
    for row in rows:
        with engine.begin() as conn:
            conn.execute(insert, row)
    return time.perf_counter() - started


def run_once(dialect):
    """One run on a fresh database: {payload: {first, redelivery, naive, rows, naive_rows}}."""
    with databases.fresh_database(dialect) as url:
        store = Store(url)
        engine = store.engine  # schema created here, outside the timings
        settings = durability_settings(engine)
        results, expected = {}, {"jobs": 0, "returns": 0, "events": 0}
        for offset, payload in enumerate(PAYLOADS):
            batches, returns_total, jobs_total = payload_rows(payload, jid_offset_seconds=offset * 1000)
            first = batched_pass(store, batches)
            expected["jobs"] += jobs_total
            expected["returns"] += returns_total
            after_first = store.read(queries.counts)
            assert after_first == expected, f"{dialect}/{payload}: {after_first} != {expected}"
            redelivery = batched_pass(store, batches)
            after_redelivery = store.read(queries.counts)
            assert after_redelivery == after_first, (
                f"{dialect}/{payload}: redelivery changed the row counts: {after_first} -> {after_redelivery}"
            )
            results[payload] = {"rows": returns_total, "first": first, "redelivery": redelivery}

        for offset, payload in enumerate(PAYLOADS):
            # new jids (far from the batched ones) so the plain INSERTs never collide
            batches, _, _ = payload_rows(payload, jid_offset_seconds=100_000 + offset * 1000)
            rows = [row for _, chunk in batches for row in chunk][:NAIVE_CAP]
            results[payload].update(naive=naive_pass(engine, rows), naive_rows=len(rows))
        expected["returns"] += sum(r["naive_rows"] for r in results.values())
        assert store.read(queries.counts) == expected
        return results, settings


def summarize(dialect, runs):
    summary = []
    for payload in PAYLOADS:
        per_run = [run[payload] for run in runs]
        first = statistics.median(r["rows"] / r["first"] for r in per_run)
        redelivery = statistics.median(r["rows"] / r["redelivery"] for r in per_run)
        naive = statistics.median(r["naive_rows"] / r["naive"] for r in per_run)
        summary.append(
            {
                "dialect": dialect,
                "payload": payload,
                "rows": per_run[0]["rows"],
                "naive_rows": per_run[0]["naive_rows"],
                "first_rows_per_s": first,
                "redelivery_rows_per_s": redelivery,
                "naive_rows_per_s": naive,
                "first_over_naive": first / naive,
                "runs": per_run,
            }
        )
    return summary


def print_table(summary):
    header = ("dialect", "payload", "rows", "first pass rows/s", "redelivery rows/s", "naive rows/s", "first/naive")
    lines = [header] + [
        (
            s["dialect"],
            s["payload"],
            f"{s['rows']:,}",
            f"{s['first_rows_per_s']:,.0f}",
            f"{s['redelivery_rows_per_s']:,.0f}",
            f"{s['naive_rows_per_s']:,.0f}",
            f"{s['first_over_naive']:.3f}x",
        )
        for s in summary
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for n, line in enumerate(lines):
        print("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dialects", default=",".join(DIALECTS), help="comma-separated subset of sqlite,mysql,postgresql (default: all)")
    parser.add_argument("--runs", type=int, default=3, help="runs per dialect; the table shows medians (default: 3)")
    _results.add_json_argument(parser, "store")
    args = parser.parse_args(argv)
    recorder = _results.Recorder("store")
    dialects = [d.strip() for d in args.dialects.split(",") if d.strip()]
    unknown = sorted(set(dialects) - set(DIALECTS))
    if unknown or not dialects or args.runs < 1:
        parser.error(f"--dialects takes {', '.join(DIALECTS)}; --runs must be >= 1")

    summary, settings, unavailable = [], {}, []
    started = time.perf_counter()
    for dialect in dialects:
        runs = []
        try:
            for n in range(args.runs):
                t0 = time.perf_counter()
                results, settings[dialect] = run_once(dialect)
                runs.append(results)
                print(f"{dialect} run {n + 1}/{args.runs}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        except ServerUnavailable as err:
            print(f"skipped {dialect}: {err}", file=sys.stderr)
            unavailable.append(dialect)
            continue
        summary.extend(summarize(dialect, runs))

    print(
        f"\nbatches of {BATCH_SIZE} returns per transaction via Store.write_batch; naive = one INSERT "
        f"per transaction (<= {NAIVE_CAP:,} rows); medians of {args.runs} run(s)\n"
    )
    print_table(summary)
    print()
    for dialect, values in settings.items():
        print(f"{dialect}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    print(f"total {time.perf_counter() - started:.0f}s")
    recorder.write(
        _results.json_path(args, "store"),
        args,
        batch_size=BATCH_SIZE,
        naive_cap=NAIVE_CAP,
        versions=_results.versions("SQLAlchemy", "PyMySQL", "psycopg"),
        settings=settings,
        results=summary,
        unavailable=unavailable,
    )
    return 2 if unavailable else 0


if __name__ == "__main__":
    sys.exit(main())
