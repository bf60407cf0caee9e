"""``salt-relay import local-cache``: jobs/s and the importer's peak RSS (GitHub issue #18).

Run it from the repository root (servers as in ``scripts/ensure-services.sh``)::

    python benchmarks/import_rate.py                          # 100,000 jobs, SQLite
    python benchmarks/import_rate.py --jobs 10000 --db sqlite,mariadb,postgresql
    python benchmarks/import_rate.py --quick                  # smoke run: 1,000 jobs, writes no file

The job history is job_cache_reads.py's (``job(index)``: a publish load and 1
or 2 minion returns, 1.5 a job, one in ten a ``saltutil.find_job``), written
by Salt's own local_cache functions (``prep_jid``/``save_load``/``returner``
through Salt's loader, ``fill_local_cache`` there), so the jobs dir is laid
out as Salt lays it out. It is filled once and imported into each database.

Per database, the real CLI runs as a child process (``salt-relay -c <dir>
--database-url URL import local-cache --json``) into a fresh database, then
once more over the same database (the idempotent re-run: everything skipped).
Timed: the child's wall time (Salt's import and the loader included, the
fill excluded). Peak RSS: ``ru_maxrss`` of that child from ``os.wait4``.
The import's own summary gives the counts, which are checked (every job
imported once, nothing refused; the re-run imports nothing).

Writes ``benchmarks/results/import_rate.json`` (``_results.py``).
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _results  # noqa: E402
from job_cache_reads import MASTER_ID, fill_local_cache, job  # noqa: E402

from tests.support import databases  # noqa: E402

NAME = "import_rate"


def write_config(config_dir, cachedir):
    """A master config dir whose cachedir holds the jobs (its id: the namespace the jobs are filed under)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "master").write_text(json.dumps({"id": MASTER_ID, "cachedir": str(cachedir)}) + "\n")


def expected_returns(count):
    return sum(len(job(index)[3]) for index in range(count))


def run_import(config_dir, url, batch_size, workdir):
    """(wall seconds, peak RSS MiB, summary document) of one ``salt-relay import local-cache`` child."""
    argv = [
        os.path.join(os.path.dirname(sys.executable), "salt-relay"),
        "-c",
        str(config_dir),
        "--database-url",
        url,
        "import",
        "local-cache",
        "--json",
        "--batch-size",
        str(batch_size),
        "--progress-interval",
        "30",
    ]
    out_path = workdir / "summary.json"
    started = time.monotonic()
    with open(out_path, "w") as out:
        child = subprocess.Popen(argv, stdout=out, cwd=workdir)
        _pid, status, usage = os.wait4(child.pid, 0)
    elapsed = time.monotonic() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    text = out_path.read_text()
    if child.returncode != 0:
        raise SystemExit(f"import failed (exit {child.returncode}): {text}")
    return elapsed, usage.ru_maxrss / 1024, json.loads(text.strip().splitlines()[-1])


def measure(dialect, config_dir, count, returns, batch_size, workdir):
    with databases.fresh_database(dialect, workdir) as url:
        first_s, first_rss, first = run_import(config_dir, url, batch_size, workdir)
        if first["imported"]["jobs"] != count or first["imported"]["returns"] != returns or first["refused_total"]:
            raise SystemExit(f"{dialect}: unexpected first import: {first}")
        again_s, again_rss, again = run_import(config_dir, url, batch_size, workdir)
        if any(again["imported"].values()) or again["skipped"]["jobs"] != count:
            raise SystemExit(f"{dialect}: the re-run imported something: {again}")
    result = {
        "db": dialect,
        "first": {
            "seconds": round(first_s, 2),
            "jobs_per_s": round(count / first_s, 1),
            "peak_rss_mib": round(first_rss, 1),
            "summary": first,
        },
        "rerun": {
            "seconds": round(again_s, 2),
            "jobs_per_s": round(count / again_s, 1),
            "peak_rss_mib": round(again_rss, 1),
            "summary": again,
        },
    }
    _results.log(
        f"{dialect}: {count} jobs in {first_s:.1f} s = {count / first_s:.0f} jobs/s, peak RSS {first_rss:.0f} MiB; "
        f"re-run {again_s:.1f} s = {count / again_s:.0f} jobs/s, peak RSS {again_rss:.0f} MiB"
    )
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="local_cache jobs to import [100000]")
    parser.add_argument("--db", default="sqlite", help="comma-separated: sqlite, mariadb, postgresql [sqlite]")
    parser.add_argument("--batch-size", type=int, default=1000, help="the importer's --batch-size (rows) [1000]")
    parser.add_argument("--fill-procs", type=int, default=4, help="processes writing the local_cache jobs [4]")
    parser.add_argument("--quick", action="store_true", help="1,000 jobs; writes no result file unless --json")
    _results.add_json_argument(parser, NAME)
    args = parser.parse_args()
    if args.quick:
        args.jobs = 1000
    recorder = _results.Recorder(NAME)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="relay-bench-import-"))
    try:
        cachedir = workdir / "cache"
        started = time.monotonic()
        fill_local_cache(str(cachedir), args.jobs, args.fill_procs)
        fill_s = time.monotonic() - started
        _results.log(f"local_cache: {args.jobs} jobs written by Salt's local_cache in {fill_s:.1f} s")
        config_dir = workdir / "etc"
        write_config(config_dir, cachedir)
        returns = expected_returns(args.jobs)
        results = [
            measure(databases.dialect_of(name), config_dir, args.jobs, returns, args.batch_size, workdir) for name in args.db.split(",")
        ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    recorder.write(
        _results.json_path(args, NAME, args.quick),
        args,
        versions=_results.versions(),
        jobs=args.jobs,
        returns=returns,
        fill_seconds=round(fill_s, 1),
        results=results,
    )


if __name__ == "__main__":
    main()
