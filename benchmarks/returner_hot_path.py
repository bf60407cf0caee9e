"""Per-return cost of the job cache on the master's hot path.

Calls, through Salt's own loader with master opts, the
sequence ``salt.utils.job.store_job`` runs for every minion return:
``prep_jid(False, passed_jid=jid)``, ``save_load(jid, return_load)``,
``returner(return_load)``; for Salt's local_cache, salt-relay with a live
engine (write-behind outbox), salt-relay writing directly (no engine) to
SQLite and MariaDB, and saltext-mysql's ``mysql`` returner on MariaDB (its
documented schema, created in a fresh database); each variant and run in a
forked process of its own (see ``in_process``). Prints median and p99
microseconds per return, and ratios against local_cache and against
saltext-mysql measured in the same run (medians over ``--runs``).

    .venv/bin/python benchmarks/returner_hot_path.py [--returns 2000] [--runs 3] [--quick] [--json PATH]

A full run writes ``benchmarks/results/returner_hot_path.json`` (every run, the
medians, the ratios, the load average at start and end; see ``_results.py``).

saltext-mysql comes with ``pip install 'salt-relay[bench]'``; the MariaDB
databases created here (``relay_bench_*``) are dropped at the end.
"""

import argparse
import pathlib
import statistics
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import _results  # noqa: E402
import _saltext_mysql  # noqa: E402
import salt.config  # noqa: E402
import salt.minion  # noqa: E402

from salt_engine_lib import paths  # noqa: E402
from tests.support import databases  # noqa: E402
from tests.support.processes import in_forked_process  # noqa: E402
from tests.support.stats import nearest_rank  # noqa: E402


def minion_for(tmp, job_cache, relay_block=None, engine_alive=False, extra_opts=None):
    opts = salt.config.master_config("/dev/null")
    opts["cachedir"] = str(tmp / job_cache / str(uuid.uuid4())[:8])
    opts["master_job_cache"] = job_cache
    if relay_block:
        opts["relay"] = relay_block
    opts.update(extra_opts or {})
    if engine_alive:
        heartbeat = paths.engine_stats(opts)
        heartbeat.parent.mkdir(parents=True)
        heartbeat.write_text("{}")
    return salt.minion.MasterMinion(opts)


def measure_variant(tmp, name, options, count):
    """One variant in a process of its own (see ``in_forked_process``)."""
    minion = minion_for(tmp, name, **options)
    stop = threading.Event()
    if options.get("engine_alive"):
        # As the engine does (every paths.HEARTBEAT_SECONDS): the returner counts it as gone
        # once the stats file is older than paths.HEARTBEAT_STALE_SECONDS, and would
        # switch to direct writes in the middle of a long measurement.
        stats = paths.engine_stats(minion.opts)
        threading.Thread(target=_keep_fresh, args=(stats, stop), daemon=True).start()
    try:
        return measure(minion.returners, name, count)
    finally:
        stop.set()
        minion.destroy()


def _keep_fresh(path, stop):
    while not stop.wait(2.0):
        path.touch()


def measure(returners, name, count):
    prep, save, ret = (returners[f"{name}.{fn}"] for fn in ("prep_jid", "save_load", "returner"))
    base = time.time_ns() // 1000
    jids = [f"2026112512{(base + i) % 10**10:010d}" for i in range(count)]
    for jid in jids:  # the publish: load stored before returns arrive
        save(jid, {"cmd": "publish", "fun": "test.ping", "arg": [], "tgt": "*", "tgt_type": "glob", "jid": jid}, ["m1"])
    costs = []
    for jid in jids:
        load = {
            "cmd": "_return",
            "id": "m1",
            "jid": jid,
            "fun": "test.ping",
            "fun_args": [],
            "return": True,
            "retcode": 0,
            "success": True,
            "_stamp": "2026-11-25T12:00:00.000000+00:00",
        }
        start = time.perf_counter_ns()
        prep(False, passed_jid=jid)
        save(jid, load)
        ret(load)
        costs.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(costs), nearest_rank(costs, 0.99)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--returns", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run: 300 returns, 1 run")
    _results.add_json_argument(parser, "returner_hot_path")
    args = parser.parse_args()
    recorder = _results.Recorder("returner_hot_path")
    if args.quick:
        args.returns, args.runs = 300, 1
    database = databases.create_database("mysql", "relay_bench")
    mysql_database = None
    results = {}
    try:
        with databases.mysql_admin() as admin:
            mysql_database = _saltext_mysql.create_database(admin)
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = pathlib.Path(tmpdir)
            variants = {  # label -> (returner, minion_for options)
                "local_cache": ("local_cache", {}),
                "relay, engine alive (outbox)": (
                    "relay",
                    {"relay_block": {"database_url": f"sqlite:///{tmp}/outbox.db"}, "engine_alive": True},
                ),
                "relay, no engine, SQLite": ("relay", {"relay_block": {"database_url": f"sqlite:///{tmp}/direct.db"}}),
                "relay, no engine, MariaDB": ("relay", {"relay_block": {"database_url": databases.server_url("mysql", database)}}),
                "saltext-mysql, MariaDB": ("mysql", {"extra_opts": _saltext_mysql.opts(mysql_database)}),
            }
            for _ in range(args.runs):
                for label, (name, options) in variants.items():
                    results.setdefault(label, []).append(in_forked_process(measure_variant, tmp, name, options, args.returns))
    finally:
        databases.drop_database("mysql", database)
        if mysql_database:
            databases.drop_database("mysql", mysql_database)
    base = statistics.median(r[0] for r in results["local_cache"])
    mysql_base = statistics.median(r[0] for r in results["saltext-mysql, MariaDB"])
    print(
        f"{'variant':32} {'median us':>10} {'p99 us':>10} {'vs local_cache':>15} {'vs saltext-mysql':>17}   ({args.returns} returns x {args.runs} runs, medians)"
    )
    summary = {}
    for label, runs in results.items():
        median = statistics.median(r[0] for r in runs)
        p99 = statistics.median(r[1] for r in runs)
        summary[label] = {
            "median_us": median,
            "p99_us": p99,
            "vs_local_cache": median / base,
            "vs_saltext_mysql": median / mysql_base,
            "runs": [{"median_us": r[0], "p99_us": r[1]} for r in runs],
        }
        print(f"{label:32} {median:10.1f} {p99:10.1f} {median / base:14.3f}x {median / mysql_base:16.3f}x")
    recorder.write(
        _results.json_path(args, "returner_hot_path", args.quick),
        args,
        versions=_results.versions("saltext.mysql", "PyMySQL", "SQLAlchemy"),
        unit="microseconds per return (prep_jid + save_load + returner), medians over runs of each run's median/p99",
        results=summary,
    )


if __name__ == "__main__":
    main()
