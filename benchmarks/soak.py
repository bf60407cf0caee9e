"""Soak: the pipeline under steady load for a long time; engine and worker memory over time.

Starts the same setup as ``benchmarks/pipeline.py`` (a real salt-master with
the relay engine, a broker, one ``salt-relay worker``, MariaDB; or the
embedded mode), fires events at a fixed rate in consecutive phases, and after
each phase prints the engine's and the worker's RSS (whole worker process
tree), events fired/accepted/stored and lag. Flat RSS columns = no leak.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--rate 3000] [--phase-seconds 30] \\
        [--variant rabbitmq|redis|embedded] [--master-opt pub_server_write_queue_size=100000] [--json PATH]

Writes ``benchmarks/results/soak.json`` (or ``--json PATH``; ``-`` for none): the
rows below, the load average at start and end (see ``_results.py``).

On demand only (not in CI): 10 minutes at 3k events/s is the issue's soak.
"""

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _results  # noqa: E402
import pipeline as bench  # noqa: E402

from tests.support.processes import tree_rss_mb  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=int, default=3000)
    parser.add_argument("--phase-seconds", type=float, default=30)
    parser.add_argument("--variant", default="rabbitmq", choices=["rabbitmq", "redis", "embedded"])
    parser.add_argument("--master-opt", action="append", default=[], metavar="KEY=YAML")
    _results.add_json_argument(parser, "soak")
    args = parser.parse_args()
    recorder = _results.Recorder("soak")
    phases = max(1, int(args.minutes * 60 // args.phase_seconds))
    pipe_args = ["--runs", "1", "--rates", str(args.rate), "--duration", str(args.phase_seconds), "--variants", args.variant]
    for option in args.master_opt:
        pipe_args += ["--master-opt", option]
    options = bench.parse_args(pipe_args)
    run = bench.Pipeline(args.variant, options)
    rows = []
    started = time.monotonic()
    try:
        run.start()
        print(
            f"{'phase':>5} {'min':>5} {'fired':>7} {'accepted':>9} {'stored':>7} {'lag p99 s':>9} {'engine RSS MB':>13} {'worker RSS MB':>13} {'disconnects':>11}"
        )
        for index in range(phases):
            result = run.phase(args.rate, args.phase_seconds, f"soak{index}")
            stats = run.engine_stats() or {}
            row = {
                "phase": index + 1,
                "minutes": round((time.monotonic() - started) / 60, 1),
                "fired": result.get("fired"),
                "accepted": result.get("engine_accepted"),
                "stored": result.get("rows_events"),
                "lag_p99_s": result.get("lag_p99_s"),
                "engine_rss_mb": tree_rss_mb(run.engine_pid),
                "worker_rss_mb": tree_rss_mb(run.worker.pid if run.worker is not None else None),
                "bus_disconnects": stats.get("bus_disconnects"),
            }
            rows.append(row)
            print(
                f"{row['phase']:>5} {row['minutes']:>5} {row['fired'] or 0:>7} {row['accepted'] or 0:>9} {row['stored'] or 0:>7} "
                f"{row['lag_p99_s'] or 0:>9.2f} {row['engine_rss_mb'] or 0:>13.1f} {row['worker_rss_mb'] or 0:>13.1f} {row['bus_disconnects'] or 0:>11}",
                flush=True,
            )
    finally:
        try:
            run.close()
        finally:
            run.remove_root()
    if rows:
        first, last = rows[0], rows[-1]
        print(
            f"\nengine RSS {first['engine_rss_mb']} -> {last['engine_rss_mb']} MB, worker RSS {first['worker_rss_mb']} -> {last['worker_rss_mb']} MB over {last['minutes']} min at {args.rate}/s ({args.variant})"
        )
    recorder.write(_results.json_path(args, "soak"), args, phases=rows)


if __name__ == "__main__":
    main()
