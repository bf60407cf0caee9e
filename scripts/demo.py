#!/usr/bin/env python3
"""salt-relay demo: a throwaway salt-master and two salt-minions, real jobs, SQL job cache.

Starts a salt-master (engine ``relay`` + ``master_job_cache: relay``) and two
salt-minions from this Python's venv, all under /tmp/relay-demo-XXXX and on
127.0.0.1; runs ``test.ping``, ``cmd.run``, ``state.apply`` and a runner with
the ``salt`` / ``salt-run`` CLIs; then shows what salt-relay stored. Exit 0
only if every job returned from both minions, ``jobs.lookup_jid`` shows both
and the store holds the jobs, returns and events. Every process started is
stopped on exit (also on Ctrl-C); the temp dir (and the --db database) is
removed unless --keep is given. Daemons, databases and queues come from
``tests/support``, the harness of the tests and the benchmarks. Usually run
through scripts/demo.sh, which creates the venv first.
"""

import argparse
import datetime
import os
import pathlib
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # for tests.support

from salt_engine_lib import paths  # noqa: E402
from tests.support import brokers, databases, engine_stats, processes, salt_daemons  # noqa: E402
from tests.support.servers import ServerUnavailable  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402

MINIONS = ("demo-m1", "demo-m2")
MASTER_ID = "relay-demo-master"
BIN_DIR = salt_daemons.BIN_DIR  # the venv's bin: salt-master, salt, salt-relay, ...
PROGRAMS = ("salt-master", "salt-minion", "salt", "salt-run", "salt-relay")
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
CLI_TIMEOUT = 180  # hard limit for one salt/salt-run/salt-relay command
JOB_TIMEOUT = 30  # salt -t: seconds the salt CLI waits for minions
PING_WAIT = 60  # seconds to wait for both minions to answer test.ping
EVENTS_WAIT = 15  # seconds to wait for the engine to store the test.ping events
DB_LABELS = {"sqlite": "sqlite", "mysql": "mariadb", "postgresql": "postgresql"}
MASTER_OPTS = {"log_level": "warning", "auto_accept": True, "loop_interval": 5, "master_job_cache": "relay", "engines": [{"relay": {}}]}
EMBEDDED = "none (embedded mode: the engine writes to the store itself)"
NO_SALT = "not found: run this with the Python of a venv where salt-relay is installed (scripts/demo.sh does that)"

STATE_SLS = """\
# The demo state: one file per minion, plus a check that always succeeds.
relay-demo-file:
  file.managed:
    - name: {out_dir}/{{{{ grains['id'] }}}}.txt
    - contents: "managed by the salt-relay demo on {{{{ grains['id'] }}}}"
    - makedirs: True

relay-demo-check:
  test.succeed_without_changes:
    - name: salt-relay demo check
"""

# Salt 3008's CLIs log these at exit; they are noise here.
SALT_NOISE = re.compile(r"^(\[WARNING \] )?unclosed \w+ <[^>]*>; call ``destroy\(\)`` or use as a context manager$")


class DemoError(Exception):
    """A step failed in a way that makes the rest pointless."""


def section(title):
    print(f"\n=== {title} " + "=" * max(3, 72 - len(title)), flush=True)


def note(text):
    print(f"  {text}", flush=True)


def show_command(argv, result, seconds):
    print(f"\n$ {shlex.join([pathlib.Path(argv[0]).name, *argv[1:]])}", flush=True)
    lines = ((result.stdout or "") + (result.stderr or "")).rstrip("\n").splitlines()
    kept = [line for line in lines if not SALT_NOISE.match(line)]
    print("\n".join(kept) if any(line.strip() for line in kept) else "(no output)")
    hidden = len(lines) - len(kept)
    noise = f"; {hidden} lines of Salt's 'unclosed ... call destroy()' warnings hidden" if hidden else ""
    print(f"[exit {result.returncode}, {seconds:.1f} s{noise}]", flush=True)


def minion_headers(text):
    """Minion ids printed as top-level keys (``id:`` at column 0) by Salt's outputters."""
    return {line[:-1] for line in text.splitlines() if line.endswith(":") and not line[:1].isspace()}


class Demo:
    def __init__(self, args):
        self.args = args
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="relay-demo-", dir="/tmp"))
        self.queue = f"relay-demo-{self.root.name.rsplit('-', 1)[-1]}"
        self.master = salt_daemons.Master(self.root / "master", MASTER_ID, **MASTER_OPTS)
        # --db: a database created for the run; sqlite: the embedded default (the engine creates the file)
        self.db = databases.RunDatabase(args.db, paths.default_database(self.master.cachedir), "relay_demo")
        self.daemons = salt_daemons.Daemons(self.root)
        self.failures = []
        self.jids = {}  # label -> jid

    def describe_store(self):
        if not self.db.name:
            return f"SQLite file {self.db.sqlite_path} (embedded default: no database_url)"
        return f"{DB_LABELS[self.db.dialect]} database {self.db.name} ({self.db.url})"

    # -- configuration and daemons
    def write_configs(self):
        relay = {"database_url": self.db.url} if self.db.name else {}
        if self.args.broker_url:
            relay.update(broker_url=self.args.broker_url, queue=self.queue, dead_letter_queue=f"{self.queue}.dlq")
        if relay:
            self.master.opts["relay"] = relay
        self.master.write()
        (self.master.file_root / "demo.sls").write_text(STATE_SLS.format(out_dir=self.root / "state-output"))
        self.minions = [
            salt_daemons.Minion(self.root / mid, mid, self.master, log_level="warning", multiprocessing=False).write() for mid in MINIONS
        ]

    def start_daemon(self, name, argv):
        proc = self.daemons.start(name, argv)
        note(f"started {name:8} pid {proc.pid:<7} {shlex.join([pathlib.Path(argv[0]).name, *argv[1:]])}")

    # -- commands
    def run(self, program, *args):
        """``program -c <master dir> args``, printed with its output."""
        started = time.monotonic()
        result = self.master.cli(program, *args, timeout=CLI_TIMEOUT)
        show_command(result.args, result, time.monotonic() - started)
        return result

    def fail(self, message):
        self.failures.append(message)
        print(f"FAILED: {message}", flush=True)

    def expect_success(self, result, command):
        if result.returncode != 0:
            self.fail(f"`{command}` exited with {result.returncode}")

    def salt_job(self, label, *salt_args):
        """Run a job on '*', print it, check both minions returned; remember its jid."""
        result = self.run("salt", "--show-jid", "-t", str(JOB_TIMEOUT), "*", *salt_args)
        match = re.search(r"^jid: (\S+)$", result.stdout or "", re.M)
        if match:
            self.jids[label] = match.group(1)
        missing = sorted(set(MINIONS) - minion_headers(result.stdout or ""))
        command = f"`salt '*' {' '.join(salt_args)}`"
        self.expect_success(result, command.strip("`"))
        if missing or "Minion did not return" in (result.stdout or ""):
            self.fail(f"{command}: no return from {', '.join(missing) or 'a minion'}")
        if not match:
            self.fail(f"{command}: no jid printed")

    def wait_for_events(self, jid):
        wanted = {f"salt/job/{jid}/new"} | {f"salt/job/{jid}/ret/{m}" for m in MINIONS}

        def missing():
            try:
                return wanted - {row[0] for row in self.db.reader.rows("SELECT tag FROM events WHERE tag LIKE :p", p=f"salt/job/{jid}/%")}
            except Exception as err:  # e.g. the SQLite file locked: try again
                return {f"(last error: {type(err).__name__}: {err})"}

        if wait_for(lambda: not missing(), timeout=EVENTS_WAIT, interval=0.5):
            note(f"the engine stored the {len(wanted)} events of the test.ping job {jid}")
        else:
            self.fail(f"the engine did not store the events of job {jid} within {EVENTS_WAIT} s; missing: {sorted(missing())}")

    def show_stats(self):
        path, stats = engine_stats.path(self.master.opts), engine_stats.read(self.master.opts)
        if stats is None:
            note(f"(cannot read {path})" if path.exists() else f"(no engine stats file at {path})")
            return
        age = max(0.0, time.time() - stats.get("updated", 0))
        print(f"\nengine stats ({path}, written {age:.1f} s ago by pid {stats.get('pid')}):")
        for line in engine_stats.summary(stats):
            note(line)

    def check_store(self):
        print(f"\nstore: {self.describe_store()}")
        if not self.db.exists():
            self.fail(f"the SQLite file {self.db.sqlite_path} does not exist")
            return
        for table, count in self.db.reader.counts().items():
            note(f"{table:8} {count:6} rows")
        for label, jid in self.jids.items():
            job = self.db.reader.rows("SELECT fun FROM jobs WHERE jid = :jid", jid=jid)
            minions = sorted(row[0] for row in self.db.reader.rows("SELECT minion_id FROM returns WHERE jid = :jid", jid=jid))
            expected = [MASTER_ID] if label == "runner" else sorted(MINIONS)
            ok = bool(job) and set(expected) <= set(minions)
            note(
                f"{'ok     ' if ok else 'MISSING'} {jid}  {job[0][0] if job else '(no job row)':22} returns from: {', '.join(minions) or 'none'}"
            )
            if not ok:
                self.fail(f"the store lacks job {jid} ({label}) or returns of {', '.join(expected)}")

    def problems_in_logs(self):
        """ERROR/CRITICAL lines of the daemons' logs."""
        return [
            f"{log.relative_to(self.root)}: {line}"
            for log in sorted(self.root.glob("*/*.log"))
            for line in log.read_text(errors="replace").splitlines()
            if re.search(r"\[(ERROR|CRITICAL)\s*\]", line)
        ]

    # -- the whole run
    def main(self):
        section("salt-relay demo")
        note(f"temp dir   {self.root}")
        note(f"salt from  {BIN_DIR}")
        try:
            self.db.create()
        except (ServerUnavailable, ImportError) as err:  # scripts/demo.sh installs psycopg for --db postgresql
            raise DemoError(str(err)) from None
        note(f"store      {self.describe_store()}")
        note(f"broker     {f'{self.args.broker_name} (queue {self.queue})' if self.args.broker_url else EMBEDDED}")
        self.write_configs()

        section("Starting a salt-master and two salt-minions")
        note(
            f"127.0.0.1, publish_port {self.master.publish_port}, ret_port {self.master.ret_port}; "
            "master config: master_job_cache: relay, engines: [relay: {}]"
        )
        self.start_daemon("master", self.master.argv())
        if self.args.broker_url:
            self.start_daemon("worker", self.master.worker_argv())  # reads the same relay: block
        time.sleep(1)
        for minion in self.minions:
            self.start_daemon(minion.opts["id"], minion.argv())
        started = time.monotonic()
        try:
            self.master.wait_for_minions(
                MINIONS,
                PING_WAIT,
                check=self.daemons.check,
                progress=lambda ids: note(f"waiting for minions (answered: {', '.join(ids) or 'none'})"),
                target="*",  # as the jobs below: jobs.list_jobs shows these pings too
            )
        except salt_daemons.DaemonError as err:
            raise DemoError(f"{err}\n  logs: {self.root}/*/*.log") from None
        note(f"both minions answer test.ping ({time.monotonic() - started:.1f} s; keys auto-accepted)")

        section("Running jobs with the salt and salt-run CLIs")
        for job in (["test.ping"], ["cmd.run", "uname -a"], ["state.apply", "demo"]):
            self.salt_job(job[0], *job)
        self.jids["runner"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d%H%M%S%f")  # a Salt jid
        result = self.run("salt-run", "--jid", self.jids["runner"], "test.arg", "demo-runner")
        if result.returncode != 0 or "demo-runner" not in result.stdout:
            self.fail(f"`salt-run test.arg demo-runner` exited with {result.returncode}")

        section("Waiting for the relay engine to store the events")
        ping_jid = self.jids.get("test.ping")
        if ping_jid:
            self.wait_for_events(ping_jid)
            engine_stats.wait_for_update(self.master.opts, time.time(), timeout=5)

        section("The job cache, answered from SQL by the relay returner")
        self.expect_success(self.run("salt-run", "jobs.list_jobs"), "salt-run jobs.list_jobs")
        if ping_jid:
            result = self.run("salt-run", "jobs.lookup_jid", ping_jid)
            missing = sorted(set(MINIONS) - minion_headers(result.stdout or ""))
            if result.returncode != 0 or missing:
                absent = f", no result of {', '.join(missing)}" if missing else ""
                self.fail(f"`salt-run jobs.lookup_jid {ping_jid}` exited with {result.returncode}{absent}")

        section("What salt-relay stored")
        self.expect_success(self.run("salt-relay", "status"), "salt-relay status")
        self.show_stats()
        self.check_store()

        problems = self.problems_in_logs()
        if problems:
            section("ERROR/CRITICAL lines in the daemons' logs")
            print("\n".join(problems[:30]))
            if len(problems) > 30:
                note(f"... {len(problems) - 30} more")
        return not self.failures

    def cleanup(self):
        if self.daemons.procs:
            print(f"\nstopping {', '.join(self.daemons.procs)} (SIGTERM, SIGKILL after {STOP_TIMEOUT:.0f} s) ...", flush=True)
            self.daemons.stop(STOP_TIMEOUT, report=note)
            leftovers = processes.find(mentioning=str(self.root))
            note(f"WARNING: processes still running: {leftovers}" if leftovers else "all demo processes stopped")
        if self.args.keep:
            print(f"\nkept (--keep): {self.root}")
            note(f"logs:   {self.master.log_file}, {self.root}/demo-m*/minion.log")
            where = f"{self.db.url}   (drop the database {self.db.name} when done)" if self.db.name else f"sqlite3 {self.db.sqlite_path}"
            note(f"store:  {where}")
            note(f"status: {BIN_DIR / 'salt-relay'} -c {self.master.dir} status")
            return
        try:
            self.db.drop()
        except Exception as err:  # reported; the temp dir goes anyway
            print(f"  WARNING: could not drop the database {self.db.name}: {err}")
        try:
            if self.args.broker_url:
                brokers.delete_queues(self.args.broker_url, self.queue, f"{self.queue}.dlq")
        except Exception as err:  # reported; the temp dir goes anyway
            print(f"  WARNING: could not delete the queues {self.queue}(.dlq): {err}")
        shutil.rmtree(self.root, ignore_errors=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Start a throwaway salt-master with the relay engine and job cache plus two "
        "salt-minions (all under /tmp/relay-demo-XXXX, 127.0.0.1 only), run a few jobs "
        "and show what salt-relay stored. Exit 0 if every check passed.",
        epilog="Environment: DB and BROKER give the defaults of --db and --broker. "
        "The salt daemons and CLIs come from the venv of the Python running this script.",
    )
    parser.add_argument(
        "--db",
        default=os.environ.get("DB", "sqlite"),
        metavar="{sqlite,mariadb,postgresql}",
        help="the store: sqlite = the embedded default (<cachedir>/relay/relay.db); "
        "mariadb (127.0.0.1:3306, root) or postgresql (127.0.0.1:5432, postgres): a "
        "database created for the run and dropped at the end (default: $DB or sqlite)",
    )
    parser.add_argument(
        "--broker",
        default=os.environ.get("BROKER", ""),
        metavar="{rabbitmq,redis,URL}",
        help="run the broker pipeline: the engine publishes to RabbitMQ (127.0.0.1:5672, "
        "guest) or Redis (127.0.0.1:6379) and a `salt-relay worker` stores; a "
        "queue is created for the run and deleted at the end (default: $BROKER, "
        "empty = the embedded mode, no broker)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, SQLite file) and the --db database")
    args = parser.parse_args(argv)
    try:
        args.db = databases.dialect_of(args.db or "sqlite")
    except ValueError:
        parser.error(f"--db {args.db!r}: choose sqlite, mariadb or postgresql")
    broker = args.broker.strip()
    args.broker_name, args.broker_url = "", ""
    if broker.lower() in brokers.URLS:
        args.broker_name, args.broker_url = broker.lower(), brokers.URLS[broker.lower()]
    elif "://" in broker:
        args.broker_name, args.broker_url = broker.split("://", 1)[0], broker
    elif broker and broker.lower() not in ("none", "embedded"):
        parser.error(f"--broker {broker!r}: choose rabbitmq, redis or give a broker URL")
    return args


def main(argv=None):
    args = parse_args(argv)
    missing = [BIN_DIR / program for program in PROGRAMS if not (BIN_DIR / program).exists()]
    if missing:
        print(f"error: {missing[0]} {NO_SALT}", file=sys.stderr)
        return 2
    processes.interrupt_on(signal.SIGTERM, signal.SIGHUP)  # leave through the cleanup, as Ctrl-C does
    begin = time.monotonic()
    demo = Demo(args)
    ok = False
    try:
        ok = demo.main()
    except KeyboardInterrupt as err:
        print(f"\ninterrupted ({str(err) or 'Ctrl-C'})", flush=True)
        demo.failures.append("interrupted")
    except (DemoError, salt_daemons.DaemonError) as err:
        print(f"\nERROR: {err}", flush=True)
        demo.failures.append(str(err).splitlines()[0])
    finally:
        # Nothing may interrupt the cleanup: it stops the daemons and is bounded (~25 s).
        with processes.signals_ignored(signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            demo.cleanup()
    section("Result")
    seconds = time.monotonic() - begin
    if ok and not demo.failures:
        print(
            f"OK: every job returned from {' and '.join(MINIONS)}, jobs.lookup_jid shows both, and the "
            f"store holds the jobs, returns and events ({seconds:.0f} s)"
        )
        return 0
    print(f"FAILED ({seconds:.0f} s):")
    for failure in demo.failures:
        print(f"  - {failure}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
