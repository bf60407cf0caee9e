"""End-to-end job listing: ``salt-run jobs.list_jobs`` and salt-api ``GET /jobs``, per job cache.

Run it from the repository root (servers as in ``scripts/ensure-services.sh``;
saltext-mysql from ``pip install 'salt-relay[bench]'``; CherryPy for salt-api's
rest_cherrypy, installed with ``--no-deps`` so that pip leaves Salt alone:
``pip install --no-deps cherrypy cheroot jaraco.collections jaraco.context
jaraco.functools jaraco.text more-itertools portend tempora zc.lockfile
backports.tarfile``, the set this was run with)::

    python benchmarks/list_jobs_e2e.py                     # 100,000 jobs, 3 runs
    python benchmarks/list_jobs_e2e.py --jobs 20000 --variants relay-mariadb,saltext-mysql
    python benchmarks/list_jobs_e2e.py --quick             # smoke run: 2,000 jobs, 1 run

``job_cache_reads.py`` times the returner functions through Salt's loader; this
script times what a person waits for when listing jobs, on the same synthetic
history (``job_cache_reads.job``: its fill functions write it, once per variant
before the first run): relay on MariaDB, PostgreSQL and SQLite, saltext-mysql
(returner ``mysql``, on MariaDB) and Salt's local_cache.

Each variant has a master config dir of its own (``master_job_cache`` and the
cache's settings, ``id`` = ``job_cache_reads.MASTER_ID``, the master whose jobs
relay reads by default). In each run, each variant in turn (the order rotates
from run to run) gets a salt-master and a salt-api (rest_cherrypy, no TLS) on
fresh 127.0.0.1 ports, and then:

1. ``salt-run -c DIR --out=json jobs.list_jobs``: one untimed call, then
   ``--calls`` timed ones, each a real subprocess timed from start to exit
   (interpreter start, Salt's loader, the job cache's ``get_jids``, the
   runner's formatting, the JSON output). salt-run runs the runner in its
   own process and does not need the master (only ``cachedir/proc``, which a
   master start creates); the master runs anyway, as on a real master: without
   one, salt-run waits about 1 s for the bus at each of its two job events, so
   a call would mostly measure those 2 s.
2. salt-api: ``POST /login`` (eauth ``auto``, Salt's always-yes test eauth,
   user ``benchuser`` with ``@runner``/``@jobs``), then ``GET /jobs`` with the
   token in ``X-Auth-Token``: one untimed request, then ``--requests`` timed
   ones, each from sending the request to the last byte of the body (plain
   JSON, no gzip; a new connection each). salt-api hands the runner to the
   master, whose MWorker runs it in a new process and sends the answer back
   over the event bus.

Every answer is checked: as many jobs listed as stored, and the function of
the first, middle and last job; a wrong answer fails the run loudly. The
masters have ``runner_returns: False`` and ``runnerclient_returns: False``
(each runner call, salt-run's and salt-api's, would otherwise add its own job
to the cache, and the listed count would grow from call to call)
and ``keep_jobs_seconds: 0`` (the history is dated January 2026: the
master's maintenance would otherwise start deleting it as too old).

Per run and tool: median and p99 (nearest rank: with a few calls, the
slowest) in seconds; ratios against saltext-mysql and local_cache are taken
between medians of the same run. The table shows medians over runs (the
ratio column: ratio of those medians); the JSON keeps every sample, each run's
ratios and the load average when each variant's measurement began.

Databases (``relay_bench_*``), daemons and temporary directories made here
are removed at the end, also on errors, Ctrl-C and SIGTERM. A full run writes
``benchmarks/results/list_jobs_e2e.json`` (``_results.py``); ``--quick``
writes nothing unless ``--json`` is given.
"""

import argparse
import http.client
import json
import os
import pathlib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _results  # noqa: E402
import _saltext_mysql  # noqa: E402
import job_cache_reads  # noqa: E402  (the history and its fills)

from salt_engine_lib.store import connection  # noqa: E402
from tests.support import databases, ports, processes, salt_daemons  # noqa: E402
from tests.support.stats import nearest_rank  # noqa: E402

from _results import log  # noqa: E402

VARIANTS = job_cache_reads.VARIANTS  # key -> table label
TOOLS = ("salt-run jobs.list_jobs", "salt-api GET /jobs")
API_USER = "benchuser"
SALTEXT = VARIANTS["saltext-mysql"]
LOCAL = VARIANTS["local_cache"]


class WrongAnswer(Exception):
    """A tool listed the wrong jobs (or none): the run fails."""


def check_listing(listing, count, where):
    """``listing`` ({jid: job}) holds ``count`` jobs, and the right function for three of them."""
    if not isinstance(listing, dict):
        raise WrongAnswer(f"{where}: expected a dict of jobs, got {type(listing).__name__}: {str(listing)[:500]}")
    if len(listing) != count:
        raise WrongAnswer(f"{where}: listed {len(listing):,} jobs, {count:,} stored")
    for index in sorted({0, count // 2, count - 1}):
        jid, load, _minions, _returns = job_cache_reads.job(index)
        entry = listing.get(jid)
        if not isinstance(entry, dict) or entry.get("Function") != load["fun"]:
            raise WrongAnswer(f"{where}: job {jid} listed as {str(entry)[:300]}, stored with fun {load['fun']}")


# --- one variant: its store, its master config dir, its daemons ------------------------------


class Variant:
    """One job cache: the history stored once, then a salt-master + salt-api per run."""

    def __init__(self, key, root, res):
        self.key = key
        self.label = VARIANTS[key]
        self.root = root / key
        self.res = res
        self.master = None
        self.daemons = None
        self.api_port = None
        self.token = None
        self.jobs = None

    # -- setup, once ---------------------------------------------------------------------------

    def fill(self, count, args):
        """Store the history and write the master config; the fill's line for the report."""
        config = {
            "log_level_logfile": "warning",
            # See the module docstring: a constant job count. Salt reads "<class name>_returns":
            # runner_returns for salt-run (class Runner), runnerclient_returns for the master's
            # RunnerClient that runs salt-api's runner calls.
            "runner_returns": False,
            "runnerclient_returns": False,
            "keep_jobs_seconds": 0,  # the history is old: no maintenance deleting it
            "rest_timeout": int(args.timeout),  # salt-api's wait for the runner's answer (default 300 s)
            "netapi_enable_clients": ["runner"],  # GET /jobs is a runner call (Salt >= 3006 needs it enabled)
            "external_auth": {"auto": {API_USER: ["@runner", "@jobs"]}},
        }
        started = time.perf_counter()
        if self.key.startswith("relay-"):
            if self.key == "relay-sqlite":
                self.root.mkdir(parents=True, exist_ok=True)
                url = f"sqlite:///{self.root / 'relay.db'}"
            else:
                dialect = "mysql" if self.key == "relay-mariadb" else "postgresql"
                url = databases.server_url(dialect, self.res.database(dialect))
            job_cache_reads.fill_relay(url, count, args.batch)
            config.update(master_job_cache="relay", relay={"database_url": url})
        elif self.key == "saltext-mysql":
            name = self.res.database("saltext-mysql")
            job_cache_reads.fill_saltext_mysql(name, count, args.batch)
            config.update(master_job_cache="mysql", **_saltext_mysql.opts(name))
        else:
            config.update(master_job_cache="local_cache")
        self.master = salt_daemons.Master(self.root / "master", job_cache_reads.MASTER_ID, **config)
        if self.key == "local_cache":
            # Into the master's own cachedir, by local_cache itself (Salt's layout, Salt's hash_type).
            job_cache_reads.fill_local_cache(str(self.master.cachedir), count, args.fill_procs)
        elapsed = time.perf_counter() - started
        self.jobs = count
        return f"{self.label}: {count:,} jobs filled in {elapsed:.1f} s ({count / elapsed:,.0f} jobs/s)"

    # -- daemons, per run ----------------------------------------------------------------------

    def start(self, args):
        """salt-master and salt-api on fresh loopback ports, and a salt-api token."""
        # Fresh ports each start: a port free at the previous start may be taken by now.
        self.master.publish_port, self.master.ret_port, self.api_port = ports.free_ports(3)
        self.master.opts.update(
            publish_port=self.master.publish_port,
            ret_port=self.master.ret_port,
            api_pidfile=str(self.master.dir / "api.pid"),
            api_logfile=str(self.master.dir / "api.log"),
            rest_cherrypy={
                "host": ports.LOOPBACK,  # its default is 0.0.0.0
                "port": self.api_port,
                "disable_ssl": True,
                "log_access_file": str(self.master.dir / "api_access.log"),
                "log_error_file": str(self.master.dir / "api_error.log"),
            },
        )
        self.master.write()
        self.daemons = salt_daemons.Daemons(self.master.dir)
        master_proc = self.daemons.start("master", self.master.argv())
        self.master.wait_until_listening(master_proc, timeout=args.start_timeout)
        log_file = str(self.master.dir / "api.log")
        self.daemons.start("api", [salt_daemons.program("salt-api"), "-c", str(self.master.dir), "-l", "warning", "--log-file", log_file])
        deadline = time.monotonic() + args.start_timeout
        while not self._api_listening():
            self.daemons.check()
            if time.monotonic() > deadline:
                raise salt_daemons.DaemonError(f"salt-api did not listen on port {self.api_port} within {args.start_timeout} s")
            time.sleep(0.2)
        self.token = self._login(deadline)

    def _api_listening(self):
        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex((ports.LOOPBACK, self.api_port)) == 0

    def _request(self, method, path, body=None, headers=(), timeout=60):
        """(status, body bytes) of one request on a new connection."""
        conn = http.client.HTTPConnection(ports.LOOPBACK, self.api_port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers={"Accept": "application/json", **dict(headers)})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def _login(self, deadline):
        # The master's MWorkers may still be starting: retry until the deadline.
        body = json.dumps({"username": API_USER, "password": "bench", "eauth": "auto"})
        last = None
        while time.monotonic() < deadline:
            self.daemons.check()
            try:
                status, data = self._request("POST", "/login", body, {"Content-Type": "application/json"})
                if status == 200:
                    return json.loads(data)["return"][0]["token"]
                last = f"HTTP {status}: {data[:300]!r}"
            except (OSError, http.client.HTTPException, ValueError, KeyError, IndexError) as err:
                last = f"{type(err).__name__}: {err}"
            time.sleep(1)
        raise salt_daemons.DaemonError(f"salt-api login failed until the deadline; last answer: {last}")

    def stop(self):
        if self.daemons is not None:
            self.daemons.stop(30, timeouts={"master": 40}, report=log)
            self.daemons = None

    def log_tails(self):
        """The last lines of the master's and salt-api's logs, for a failure's report."""
        lines = []
        for name in ("master.log", "api.log", "master.console", "api.console"):
            path = self.master.dir / name if self.master else None
            if path and path.exists():
                tail = path.read_text(errors="replace").strip().splitlines()[-15:]
                if tail:
                    lines += [f"--- {path}"] + tail
        return "\n".join(lines)

    # -- the two tools -------------------------------------------------------------------------

    def salt_run(self, args):
        """Seconds from start to exit of one ``salt-run jobs.list_jobs``; its answer checked."""
        argv = [salt_daemons.program("salt-run"), "-c", str(self.master.dir), "--out=json", "jobs.list_jobs"]
        started = time.perf_counter()
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout, stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise WrongAnswer(f"salt-run jobs.list_jobs ({self.label}): no answer within {args.timeout} s") from None
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise WrongAnswer(f"salt-run jobs.list_jobs ({self.label}) exited with {proc.returncode}: {proc.stderr[-1500:]}")
        try:
            listing = json.loads(proc.stdout)
        except ValueError:
            output = f"{proc.stdout[:500]!r} {proc.stderr[-1000:]}"
            raise WrongAnswer(f"salt-run jobs.list_jobs ({self.label}) printed no JSON: {output}") from None
        # salt-run exits 0 after a runner exception too, printing the traceback as a string.
        check_listing(listing, self.jobs, f"salt-run jobs.list_jobs ({self.label})")
        return elapsed

    def get_jobs(self, args):
        """Seconds of one ``GET /jobs`` (request sent to body read); its answer checked."""
        started = time.perf_counter()
        try:
            status, body = self._request("GET", "/jobs", headers={"X-Auth-Token": self.token}, timeout=args.timeout)
        except (OSError, http.client.HTTPException) as err:
            raise WrongAnswer(f"GET /jobs ({self.label}): {type(err).__name__}: {err}") from None
        elapsed = time.perf_counter() - started
        if status != 200:
            raise WrongAnswer(f"GET /jobs ({self.label}): HTTP {status}: {body[:500]!r}")
        try:
            listing = json.loads(body)["return"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise WrongAnswer(f"GET /jobs ({self.label}): unexpected body {body[:500]!r}") from None
        check_listing(listing, self.jobs, f"GET /jobs ({self.label})")
        return elapsed

    def measure(self, args):
        """{tool: [seconds]} of one run: daemons started, one untimed call of each tool, the timed ones."""
        self.start(args)
        try:
            self.salt_run(args)  # untimed: the first process after a start reads Salt and the store from disk
            runs = [self.salt_run(args) for _ in range(args.calls)]
            # Untimed: salt-api's first request (its clients, the master's token check). Every
            # request's runner still runs in a new process, forked by the MWorker that took it.
            self.get_jobs(args)
            gets = [self.get_jobs(args) for _ in range(args.requests)]
        finally:
            self.stop()
        connection.dispose_all()
        return {TOOLS[0]: runs, TOOLS[1]: gets}


# --- resources made here -----------------------------------------------------------------------


class Resources:
    """The temporary root and the databases made here; all removed by close()."""

    def __init__(self):
        # Short and under /tmp: salt-master's unix sockets live in it (108-byte path limit).
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="lje-", dir="/tmp"))
        self.made = []  # (dialect, name)

    def database(self, kind):
        if kind == "saltext-mysql":
            with databases.mysql_admin() as admin:
                name = _saltext_mysql.create_database(admin)
            dialect = "mysql"
        else:
            dialect = kind
            name = databases.create_database(dialect, "relay_bench")
        self.made.append((dialect, name))
        return name

    def settings(self):
        """The servers' versions and buffer sizes (job_cache_reads' line), or why not."""
        try:
            self.mysql = databases.mysql_admin()
            self.postgresql = databases.postgresql_admin()
            try:
                return job_cache_reads.server_settings(self)
            finally:
                self.mysql.close()
                self.postgresql.close()
        except Exception as err:  # a report line only: a missing server fails where it is used
            return f"server settings unavailable: {err}"

    def close(self):
        connection.dispose_all()
        while self.made:
            dialect, name = self.made.pop()
            try:
                databases.drop_database(dialect, name)
            except Exception as err:  # go on: the rest must still be dropped
                log(f"could not drop {dialect} database {name}: {err}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        log(f"removed {self.tmp} and the databases made here")


# --- report ------------------------------------------------------------------------------------


def summarize(per_run, loads_per_run, variants):
    """{label: {tool: {median_s, p99_s, calls_per_run, vs_*, runs}}} from [{label: {tool: [s]}}] per run.

    ``loads_per_run``: [{label: load average when its measurement began}], kept with each run.
    """
    summary = {}
    for tool in TOOLS:
        run_stats = []
        for run in per_run:
            stats = {label: (statistics.median(s[tool]), nearest_rank(s[tool], 0.99), s[tool]) for label, s in run.items()}
            for label, (median, _p99, _samples) in stats.items():
                ratios = {}
                for key, reference in (("vs_saltext_mysql", SALTEXT), ("vs_local_cache", LOCAL)):
                    ratios[key] = median / stats[reference][0] if reference in stats else None
                stats[label] += (ratios,)
            run_stats.append(stats)
        for label in (VARIANTS[v] for v in variants):
            runs = [(stats[label], loads[label]) for stats, loads in zip(run_stats, loads_per_run)]
            entry = {
                "median_s": statistics.median(r[0] for r, _ in runs),
                "p99_s": statistics.median(r[1] for r, _ in runs),
                "calls_per_run": len(runs[0][0][2]),
                "runs": [{"median_s": r[0], "p99_s": r[1], "samples_s": r[2], **r[3], "loadavg": load} for r, load in runs],
            }
            summary.setdefault(label, {})[tool] = entry
        for label in summary:
            for key, reference in (("vs_saltext_mysql", SALTEXT), ("vs_local_cache", LOCAL)):
                entry = summary[label][tool]
                entry[key] = entry["median_s"] / summary[reference][tool]["median_s"] if reference in summary else None
    return summary


def print_table(count, summary, fills, settings, args):
    print()
    print(
        f"== {count:,} jobs ({count + count // 2:,} returns), {args.runs} run(s); a run: {args.calls} salt-run calls, "
        f"{args.requests} GET /jobs (+1 untimed each); seconds, medians over runs =="
    )
    for line in fills:
        print(f"   fill: {line}")
    print(f"   {settings}")
    header = f"{'tool':24} {'variant':24} {'jobs':>9} {'n':>3} {'median s':>9} {'p99 s':>9} {'vs saltext-mysql':>17} {'vs local_cache':>15}"
    print(header)
    print("-" * len(header))
    for tool in TOOLS:
        for label, tools in summary.items():
            entry = tools[tool]
            vs_mysql = f"{entry['vs_saltext_mysql']:16.3f}x" if entry["vs_saltext_mysql"] is not None else f"{'-':>17}"
            vs_local = f"{entry['vs_local_cache']:14.3f}x" if entry["vs_local_cache"] is not None else f"{'-':>15}"
            print(
                f"{tool:24} {label:24} {count:>9,} {entry['calls_per_run']:>3} {entry['median_s']:9.3f} {entry['p99_s']:9.3f} "
                f"{vs_mysql} {vs_local}"
            )
        print()
    sys.stdout.flush()


MAIN_PID = os.getpid()


def on_sigterm(signum, _frame):
    """SIGTERM leaves through the same finally blocks as Ctrl-C: daemons stopped, databases dropped.

    Not ``processes.interrupt_on``: local_cache's fill pool inherits the handler, and
    multiprocessing ends its workers with SIGTERM, which should end them quietly, as by default.
    """
    if os.getpid() != MAIN_PID:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs in the history (default 100000)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3, help="timed salt-run calls per variant and run (after one untimed)")
    parser.add_argument("--requests", type=int, default=5, help="timed GET /jobs per variant and run (after one untimed)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    parser.add_argument("--batch", type=int, default=5000, help="jobs per fill transaction (relay, saltext-mysql)")
    parser.add_argument("--fill-procs", type=int, default=2, help="processes filling local_cache")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one salt-run call or GET may take")
    parser.add_argument("--start-timeout", type=float, default=120.0, help="seconds salt-master and salt-api may take to start")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2,000 jobs, 1 run")
    _results.add_json_argument(parser, "list_jobs_e2e")
    args = parser.parse_args()
    recorder = _results.Recorder("list_jobs_e2e")
    if args.quick:
        args.jobs, args.runs = 2000, 1
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown or not args.variants:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    if min(args.jobs, args.runs, args.calls, args.requests) < 1:
        parser.error("--jobs, --runs, --calls and --requests must be at least 1")
    if "saltext-mysql" in args.variants:
        _saltext_mysql.schema_statements()  # fail early if it is not installed
    try:
        import cherrypy  # noqa: F401  (salt-api's rest_cherrypy)
    except ImportError as err:
        raise SystemExit(f"salt-api's rest_cherrypy needs CherryPy ({err}): see this script's docstring") from None
    path = _results.json_path(args, "list_jobs_e2e", args.quick)
    signal.signal(signal.SIGTERM, on_sigterm)
    res = Resources()
    variants = {}
    interrupted = False
    try:
        settings = res.settings()
        fills = []
        for key in args.variants:
            variants[key] = Variant(key, res.tmp, res)
            fills.append(variants[key].fill(args.jobs, args))
            log(f"fill {fills[-1]}")
        connection.dispose_all()
        per_run, loads_per_run = [], []
        for run in range(args.runs):
            order = args.variants[run % len(args.variants) :] + args.variants[: run % len(args.variants)]
            results, loads = {}, {}
            for key in order:
                variant = variants[key]
                loads[variant.label] = _results.loadavg()
                try:
                    results[variant.label] = variant.measure(args)
                except Exception:
                    log(f"{variant.label} failed; end of its logs:\n{variant.log_tails()}")
                    raise
                log(
                    f"run {run + 1}/{args.runs} {variant.label}: "
                    + ", ".join(f"{tool} {statistics.median(s):.3f} s" for tool, s in results[variant.label].items())
                )
            per_run.append(results)
            loads_per_run.append(loads)
        summary = summarize(per_run, loads_per_run, args.variants)
        print_table(args.jobs, summary, fills, settings, args)
        recorder.write(
            path,
            args,
            versions=_results.versions("saltext.mysql", "PyMySQL", "psycopg", "SQLAlchemy", "CherryPy", "cheroot"),
            servers=settings,
            jobs=args.jobs,
            returns=args.jobs + args.jobs // 2,
            fills=fills,
            unit="seconds per call; medians over runs of each run's median / p99 (nearest rank); ratios of medians",
            results=summary,
        )
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (interrupt_on): clean up below, then exit 130
        log(f"interrupted ({err or 'SIGINT'}): stopping daemons, dropping databases")
        interrupted = True
    finally:
        with processes.signals_ignored(signal.SIGTERM, signal.SIGINT):  # a teardown nothing may cut short
            for variant in variants.values():
                try:
                    variant.stop()
                except Exception as err:
                    log(f"could not stop {variant.label}'s daemons: {err}")
            res.close()
    if interrupted:
        sys.exit(130)


if __name__ == "__main__":
    main()
