#!/usr/bin/env python3
"""salt-relay demo: a throwaway salt-master and two salt-minions, real jobs, SQL job cache.

Starts a salt-master (engine ``relay`` + ``master_job_cache: relay``) and two
salt-minions as real daemons from this Python's venv, everything under a temp
dir (/tmp/relay-demo-XXXX) and on 127.0.0.1 with free ports; runs
``test.ping``, ``cmd.run``, ``state.apply`` and a runner with the ``salt`` /
``salt-run`` CLIs; then shows what salt-relay stored: ``jobs.list_jobs`` and
``jobs.lookup_jid`` (answered from SQL by the relay returner),
``salt-relay status``, the engine's stats and the row counts of the store.

Exit status 0 only if every job returned from both minions, ``jobs.lookup_jid``
shows both and the store holds the jobs, returns and the engine's events.
Every process started here is stopped on exit (also on Ctrl-C): SIGTERM, then
SIGKILL after 10 s. The temp dir (and the --db database) is removed unless
--keep is given.

Usually run through scripts/demo.sh, which creates the venv first.
"""

import argparse
import contextlib
import ctypes
import datetime
import getpass
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid

from salt_engine_lib import paths

MINIONS = ("demo-m1", "demo-m2")
MASTER_ID = "relay-demo-master"
BIN_DIR = pathlib.Path(sys.executable).parent  # the venv's bin: salt-master, salt, salt-relay, ...
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
CLI_TIMEOUT = 180  # hard limit for one salt/salt-run/salt-relay command
JOB_TIMEOUT = 30  # salt -t: seconds the salt CLI waits for minions
PING_WAIT = 60  # seconds to wait for both minions to answer test.ping
EVENTS_WAIT = 15  # seconds to wait for the engine to store the test.ping events

# The servers scripts/ensure-services.sh provides (root/postgres without password on 127.0.0.1).
DATABASES = {
    "mariadb": {"host": "127.0.0.1", "port": 3306, "user": "root"},
    "postgresql": {"host": "127.0.0.1", "port": 5432, "user": "postgres"},
}
BROKER_URLS = {"rabbitmq": "amqp://guest:guest@127.0.0.1:5672//", "redis": "redis://127.0.0.1:6379/0"}
DB_ALIASES = {
    "": "sqlite",
    "sqlite": "sqlite",
    "mariadb": "mariadb",
    "mysql": "mariadb",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "pg": "postgresql",
}

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


class Interrupted(Exception):
    """SIGTERM/SIGHUP received: leave through the finally blocks."""


class DemoError(Exception):
    """A step failed in a way that makes the rest pointless."""


# --------------------------------------------------------------------------- output


def section(title):
    print(f"\n=== {title} " + "=" * max(3, 72 - len(title)), flush=True)


def note(text):
    print(f"  {text}", flush=True)


# Salt 3008's CLIs log these at exit; they are noise here.
SALT_NOISE = re.compile(r"^(\[WARNING \] )?unclosed \w+ <[^>]*>; call ``destroy\(\)`` or use as a context manager$")


def show_command(argv, result, seconds):
    shown = [pathlib.Path(argv[0]).name] + list(argv[1:])
    print(f"\n$ {shlex.join(shown)}", flush=True)
    lines = ((result.stdout or "") + (result.stderr or "")).rstrip("\n").splitlines()
    kept = [line for line in lines if not SALT_NOISE.match(line)]
    print("\n".join(kept) if any(line.strip() for line in kept) else "(no output)")
    hidden = len(lines) - len(kept)
    noise = f"; {hidden} lines of Salt's 'unclosed ... call destroy()' warnings hidden" if hidden else ""
    print(f"[exit {result.returncode}, {seconds:.1f} s{noise}]", flush=True)


# --------------------------------------------------------------------------- helpers


def free_ports(count):
    """Ports free on 127.0.0.1 right now (all held open until chosen, so distinct)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def new_jid():
    """A Salt jid (UTC YYYYmmddHHMMSSffffff), for ``salt-run --jid``."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d%H%M%S%f")


def write_yaml(path, data):
    import yaml  # PyYAML comes with salt

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, default_flow_style=False, sort_keys=False))


def _set_parent_death_signal():
    """Child side of Popen: get SIGTERM if this script dies without cleaning up (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def minion_headers(text):
    """Minion ids printed as top-level keys (``id:`` at column 0) by Salt's outputters."""
    return {line[:-1] for line in text.splitlines() if line.endswith(":") and not line[:1].isspace()}


# --------------------------------------------------------------------------- databases


class Database:
    """The SQL store the demo points salt-relay at: embedded SQLite, or a scratch database."""

    def __init__(self, kind, cachedir):
        self.kind = kind
        self.name = None
        self.url = None  # relay: database_url; None = embedded default
        self.sqlite_path = paths.default_database(cachedir)
        self.created = False
        self._engine = None

    def describe(self):
        if self.kind == "sqlite":
            return f"SQLite file {self.sqlite_path} (embedded default: no database_url)"
        return f"{self.kind} database {self.name} ({self.url})"

    # -- scratch database on a server
    def create(self):
        if self.kind == "sqlite":
            return
        self.name = f"relay_demo_{uuid.uuid4().hex[:10]}"
        server = DATABASES[self.kind]
        if self.kind == "mariadb":
            self.url = f"mysql+pymysql://{server['user']}@{server['host']}:{server['port']}/{self.name}"
            self._admin(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        else:
            self.url = f"postgresql+psycopg://{server['user']}@{server['host']}:{server['port']}/{self.name}"
            self._admin(f'CREATE DATABASE "{self.name}"')
        self.created = True

    def drop(self):
        if not self.created:
            return
        if self._engine is not None:
            self._engine.dispose()
        if self.kind == "mariadb":
            self._admin(f"DROP DATABASE IF EXISTS `{self.name}`")
        else:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def _admin(self, statement):
        server = DATABASES[self.kind]
        where = f"{self.kind} at {server['host']}:{server['port']} as {server['user']}"
        try:
            if self.kind == "mariadb":
                import pymysql

                conn = pymysql.connect(
                    host=server["host"], port=server["port"], user=server["user"], password="", connect_timeout=5, autocommit=True
                )
            else:
                try:
                    import psycopg
                except ImportError:
                    raise DemoError(
                        "--db postgresql needs psycopg: pip install -e '.[postgres]' (scripts/demo.sh does this when given --db postgresql)"
                    ) from None
                conn = psycopg.connect(
                    host=server["host"], port=server["port"], user=server["user"], dbname="postgres", connect_timeout=5, autocommit=True
                )
        except DemoError:
            raise
        except Exception as err:  # pylint: disable=broad-except
            raise DemoError(f"cannot connect to {where}: {err}\n  (scripts/ensure-services.sh --setup starts and configures it)") from None
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    # -- reads
    def exists(self):
        return self.kind != "sqlite" or self.sqlite_path.exists()

    def query(self, sql, params=None):
        """Rows of ``sql`` (named :params); [] while the store does not exist yet."""
        params = params or {}
        if self.kind == "sqlite":
            if not self.sqlite_path.exists():
                return []
            conn = sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=10)
            try:
                return [tuple(row) for row in conn.execute(sql, params)]
            except sqlite3.OperationalError as err:
                if "no such table" in str(err):
                    return []
                raise
            finally:
                conn.close()
        import sqlalchemy as sa

        if self._engine is None:
            self._engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        with self._engine.connect() as conn:
            try:
                return [tuple(row) for row in conn.execute(sa.text(sql), params)]
            except sa.exc.ProgrammingError as err:  # tables not created yet
                if "exist" in str(err):
                    return []
                raise

    def counts(self):
        return {table: self.query(f"SELECT COUNT(*) FROM {table}")[0][0] for table in ("jobs", "returns", "events")}


# --------------------------------------------------------------------------- the demo


class Demo:
    def __init__(self, args):
        self.args = args
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="relay-demo-", dir="/tmp"))
        self.master_dir = self.root / "master"
        self.master_log = self.master_dir / "master.log"
        self.cachedir = self.master_dir / "cache"
        self.stats_file = paths.engine_stats({"cachedir": str(self.cachedir)})
        self.db = Database(args.db, self.cachedir)
        self.procs = {}  # name -> Popen of the daemons
        self.failures = []
        self.jids = {}  # label -> jid
        self.queue = f"relay-demo-{self.root.name.rsplit('-', 1)[-1]}"

    # -- configuration
    def write_configs(self):
        publish_port, ret_port = free_ports(2)
        self.publish_port, self.ret_port = publish_port, ret_port
        user = getpass.getuser()
        srv = self.root / "srv"
        out_dir = self.root / "state-output"
        (srv / "salt").mkdir(parents=True)
        (srv / "pillar").mkdir(parents=True)
        (srv / "salt" / "demo.sls").write_text(STATE_SLS.format(out_dir=out_dir))
        m = self.master_dir
        master = {
            "id": MASTER_ID,
            "user": user,
            "interface": "127.0.0.1",
            "publish_port": publish_port,
            "ret_port": ret_port,
            "root_dir": str(m),
            "pki_dir": str(m / "pki"),
            "cachedir": str(self.cachedir),
            "sock_dir": str(m / "sock"),
            "extension_modules": str(m / "extmods"),
            "pidfile": str(m / "master.pid"),
            "log_file": str(self.master_log),
            "key_logfile": str(m / "key.log"),
            "log_level": "warning",
            "auto_accept": True,
            "loop_interval": 5,
            "master_job_cache": "relay",
            "engines": [{"relay": {}}],
            "file_roots": {"base": [str(srv / "salt")]},
            "pillar_roots": {"base": [str(srv / "pillar")]},
        }
        if self.db.url:
            master["relay"] = {"database_url": self.db.url}
        if self.args.broker_url:
            master.setdefault("relay", {}).update(
                {
                    "broker_url": self.args.broker_url,
                    "queue": self.queue,
                    "dead_letter_queue": f"{self.queue}.dlq",
                }
            )
        write_yaml(m / "master", master)
        for minion_id in MINIONS:
            d = self.root / minion_id
            write_yaml(
                d / "minion",
                {
                    "id": minion_id,
                    "user": user,
                    "master": "127.0.0.1",
                    "master_port": ret_port,
                    "publish_port": publish_port,
                    "root_dir": str(d),
                    "pki_dir": str(d / "pki"),
                    "cachedir": str(d / "cache"),
                    "sock_dir": str(d / "sock"),
                    "extension_modules": str(d / "extmods"),
                    "pidfile": str(d / "minion.pid"),
                    "log_file": str(d / "minion.log"),
                    "log_level": "warning",
                    "multiprocessing": False,
                    "acceptance_wait_time": 1,
                    "random_reauth_delay": 0,
                },
            )

    # -- daemons
    def start_daemon(self, name, program, config_dir, log_file, argv=None):
        argv = argv or [str(BIN_DIR / program), "-c", str(config_dir), "-l", "warning", "--log-file", str(log_file)]
        out = open(self.root / f"{name}.console", "wb")  # pylint: disable=consider-using-with
        try:
            self.procs[name] = subprocess.Popen(  # pylint: disable=consider-using-with
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C goes to this script, which stops them in order
                preexec_fn=_set_parent_death_signal,
            )
        finally:
            out.close()
        note(f"started {name:8} pid {self.procs[name].pid:<7} {shlex.join([program] + argv[1:])}")

    def check_daemons(self):
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                console = (self.root / f"{name}.console").read_text(errors="replace")[-2000:]
                raise DemoError(f"{name} exited with status {proc.returncode}:\n{console}")

    def stop_daemons(self):
        running = {name: proc for name, proc in self.procs.items() if proc.poll() is None}
        if not self.procs:
            return
        print(f"\nstopping {', '.join(self.procs)} (SIGTERM, SIGKILL after {STOP_TIMEOUT:.0f} s) ...", flush=True)
        for proc in running.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            alive = [name for name, proc in self.procs.items() if proc.poll() is None or _group_members(proc.pid)]
            if not alive:
                break
            time.sleep(0.2)
        for name, proc in self.procs.items():
            members = _group_members(proc.pid)
            if proc.poll() is None or members:
                print(
                    f"  {name}: still running after {STOP_TIMEOUT:.0f} s, sending SIGKILL to pids {sorted(members) or [proc.pid]}",
                    flush=True,
                )
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        leftovers = _processes_mentioning(str(self.root))
        if leftovers:
            print(f"  WARNING: processes still running: {leftovers}", flush=True)
        else:
            print("  all demo processes stopped", flush=True)

    def delete_queues(self):
        import kombu  # pylint: disable=import-outside-toplevel

        from salt_engine_lib import broker  # pylint: disable=import-outside-toplevel

        try:
            with kombu.Connection(self.args.broker_url, connect_timeout=5) as conn:
                for name in (self.queue, f"{self.queue}.dlq"):
                    with contextlib.suppress(Exception):
                        broker.queue(name).bind(conn.channel()).delete()
        except Exception as err:  # pylint: disable=broad-except
            print(f"  WARNING: could not delete the queues {self.queue}(.dlq): {err}")

    # -- commands
    def run(self, program, *args, show=True, timeout=CLI_TIMEOUT):
        argv = [str(BIN_DIR / program), "-c", str(self.master_dir), *args]
        started = time.monotonic()
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired as err:
            result = subprocess.CompletedProcess(argv, 124, _text(err.stdout), _text(err.stderr) + f"\n(timed out after {timeout} s)")
        if show:
            show_command(argv, result, time.monotonic() - started)
        return result

    def fail(self, message):
        self.failures.append(message)
        print(f"FAILED: {message}", flush=True)

    def wait_for_minions(self):
        deadline = time.monotonic() + PING_WAIT
        last = ""
        while True:
            self.check_daemons()
            result = self.run("salt", "--out=json", "--static", "-t", "5", "*", "test.ping", show=False, timeout=60)
            answered = []
            with contextlib.suppress(ValueError):
                answered = sorted(k for k, v in json.loads(result.stdout or "{}").items() if v is True)
            if set(MINIONS) <= set(answered):
                return
            status = f"answered: {', '.join(answered) or 'none'}"
            if status != last:
                note(f"waiting for minions ({status})")
                last = status
            if time.monotonic() > deadline:
                raise DemoError(
                    f"the minions did not all answer test.ping within {PING_WAIT} s ({status});"
                    f" logs: {self.root}/*/*.log\n{result.stdout}{result.stderr}"
                )
            time.sleep(1)

    def salt_job(self, label, *salt_args):
        """Run a job on '*', print it, check both minions returned; remember its jid."""
        result = self.run("salt", "--show-jid", "-t", str(JOB_TIMEOUT), "*", *salt_args)
        match = re.search(r"^jid: (\S+)$", result.stdout or "", re.M)
        if match:
            self.jids[label] = match.group(1)
        missing = sorted(set(MINIONS) - minion_headers(result.stdout or ""))
        if result.returncode != 0:
            self.fail(f"`salt '*' {' '.join(salt_args)}` exited with {result.returncode}")
        if missing or "Minion did not return" in (result.stdout or ""):
            self.fail(f"`salt '*' {' '.join(salt_args)}`: no return from {', '.join(missing) or 'a minion'}")
        if not match:
            self.fail(f"`salt '*' {' '.join(salt_args)}`: no jid printed")

    def wait_for_events(self, jid):
        wanted = {f"salt/job/{jid}/new"} | {f"salt/job/{jid}/ret/{m}" for m in MINIONS}
        deadline = time.monotonic() + EVENTS_WAIT
        found, error = set(), ""
        while time.monotonic() < deadline:
            try:
                found = {row[0] for row in self.db.query("SELECT tag FROM events WHERE tag LIKE :prefix", {"prefix": f"salt/job/{jid}/%"})}
            except Exception as err:  # pylint: disable=broad-except  # e.g. locked: retry
                error = f" (last error: {type(err).__name__}: {err})"
            if wanted <= found:
                note(f"the engine stored the {len(wanted)} events of the test.ping job {jid}")
                return True
            time.sleep(0.5)
        self.fail(f"the engine did not store the events of job {jid} within {EVENTS_WAIT} s; missing: {sorted(wanted - found)}{error}")
        return False

    def wait_for_fresh_stats(self, since):
        """The engine writes its stats every ~2 s: wait for one written after ``since``."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                if json.loads(self.stats_file.read_text()).get("updated", 0) >= since:
                    return
            time.sleep(0.3)

    def show_stats(self):
        if not self.stats_file.exists():
            note(f"(no engine stats file at {self.stats_file})")
            return
        try:
            stats = json.loads(self.stats_file.read_text())
        except (OSError, ValueError) as err:
            note(f"(cannot read {self.stats_file}: {err})")
            return
        print(
            f"\nengine stats ({self.stats_file}, written "
            f"{max(0.0, time.time() - stats.get('updated', 0)):.1f} s ago by pid {stats.get('pid')}):"
        )
        for key in ("mode", "captured", "accepted", "journaled", "forwarded", "rejected", "pending", "reader_overflowed"):
            if key in stats:
                note(f"{key:20} {stats[key]}")
        dropped = stats.get("dropped") or {}
        note(f"{'dropped':20} {sum(dropped.values())}" + ("" if not dropped else "  by reason:"))
        for reason, count in sorted(dropped.items(), key=lambda item: (-item[1], item[0])):
            note(f"{'':22} {count:5}  {reason}")
        extra = {
            k: v
            for k, v in stats.items()
            if k
            not in (
                "mode",
                "captured",
                "accepted",
                "journaled",
                "forwarded",
                "rejected",
                "pending",
                "reader_overflowed",
                "dropped",
                "pid",
                "updated",
            )
        }
        for key, value in extra.items():
            note(f"{key:20} {value}")

    def check_store(self):
        print(f"\nstore: {self.db.describe()}")
        if not self.db.exists():
            self.fail(f"the SQLite file {self.db.sqlite_path} does not exist")
            return
        counts = self.db.counts()
        for table, count in counts.items():
            note(f"{table:8} {count:6} rows")
        for label, jid in self.jids.items():
            job = self.db.query("SELECT fun FROM jobs WHERE jid = :jid", {"jid": jid})
            minions = sorted(row[0] for row in self.db.query("SELECT minion_id FROM returns WHERE jid = :jid", {"jid": jid}))
            expected = [MASTER_ID] if label == "runner" else sorted(MINIONS)
            ok = bool(job) and set(expected) <= set(minions)
            note(
                f"{'ok     ' if ok else 'MISSING'} {jid}  {job[0][0] if job else '(no job row)':22}"
                f" returns from: {', '.join(minions) or 'none'}"
            )
            if not ok:
                self.fail(f"the store lacks job {jid} ({label}) or returns of {', '.join(expected)}")

    def problems_in_logs(self):
        """ERROR/CRITICAL lines of the daemons' logs (salt-relay's own first)."""
        lines = []
        for log in sorted(self.root.glob("*/*.log")):
            for line in log.read_text(errors="replace").splitlines():
                if re.search(r"\[(ERROR|CRITICAL)\s*\]", line):
                    lines.append(f"{log.relative_to(self.root)}: {line}")
        return lines

    # -- the whole run
    def main(self):
        section("salt-relay demo")
        note(f"temp dir   {self.root}")
        note(f"salt from  {BIN_DIR}")
        if self.db.kind != "sqlite":
            self.db.create()
        note(f"store      {self.db.describe()}")
        note(
            f"broker     {self.args.broker_name + ' (queue ' + self.queue + ')' if self.args.broker_url else 'none (embedded mode: the engine writes to the store itself)'}"
        )
        self.write_configs()

        section("Starting a salt-master and two salt-minions")
        note(
            f"127.0.0.1, publish_port {self.publish_port}, ret_port {self.ret_port}; "
            "master config: master_job_cache: relay, engines: [relay: {}]"
        )
        self.start_daemon("master", "salt-master", self.master_dir, self.master_log)
        if self.args.broker_url:
            # The worker reads the same relay: block from the master config.
            self.start_daemon(
                "worker",
                "salt-relay",
                self.master_dir,
                None,
                argv=[str(BIN_DIR / "salt-relay"), "-c", str(self.master_dir), "-l", "info", "worker"],
            )
        time.sleep(1)
        for minion_id in MINIONS:
            self.start_daemon(minion_id, "salt-minion", self.root / minion_id, self.root / minion_id / "minion.log")
        started = time.monotonic()
        self.wait_for_minions()
        note(f"both minions answer test.ping ({time.monotonic() - started:.1f} s; keys auto-accepted)")

        section("Running jobs with the salt and salt-run CLIs")
        self.salt_job("test.ping", "test.ping")
        self.salt_job("cmd.run", "cmd.run", "uname -a")
        self.salt_job("state.apply", "state.apply", "demo")
        self.jids["runner"] = new_jid()
        result = self.run("salt-run", "--jid", self.jids["runner"], "test.arg", "demo-runner")
        if result.returncode != 0 or "demo-runner" not in result.stdout:
            self.fail(f"`salt-run test.arg demo-runner` exited with {result.returncode}")

        section("Waiting for the relay engine to store the events")
        ping_jid = self.jids.get("test.ping")
        if ping_jid:
            self.wait_for_events(ping_jid)
            self.wait_for_fresh_stats(time.time())

        section("The job cache, answered from SQL by the relay returner")
        result = self.run("salt-run", "jobs.list_jobs")
        if result.returncode != 0:
            self.fail(f"`salt-run jobs.list_jobs` exited with {result.returncode}")
        if ping_jid:
            result = self.run("salt-run", "jobs.lookup_jid", ping_jid)
            missing = sorted(set(MINIONS) - minion_headers(result.stdout or ""))
            if result.returncode != 0 or missing:
                self.fail(
                    f"`salt-run jobs.lookup_jid {ping_jid}` exited with {result.returncode}"
                    + (f", no result of {', '.join(missing)}" if missing else "")
                )

        section("What salt-relay stored")
        result = self.run("salt-relay", "status")
        if result.returncode != 0:
            self.fail(f"`salt-relay status` exited with {result.returncode}")
        self.show_stats()
        self.check_store()

        problems = self.problems_in_logs()
        if problems:
            section("ERROR/CRITICAL lines in the daemons' logs")
            for line in problems[:30]:
                print(line)
            if len(problems) > 30:
                note(f"... {len(problems) - 30} more")
        return not self.failures

    def cleanup(self):
        self.stop_daemons()
        try:
            if self.args.keep:
                print(f"\nkept (--keep): {self.root}")
                note(f"logs:   {self.master_log}, {self.root}/demo-m*/minion.log")
                if self.db.kind == "sqlite":
                    note(f"store:  sqlite3 {self.db.sqlite_path}")
                else:
                    note(f"store:  {self.db.url}   (drop the database {self.db.name} when done)")
                note(f"status: {BIN_DIR / 'salt-relay'} -c {self.master_dir} status")
                return
            try:
                self.db.drop()
            except Exception as err:  # pylint: disable=broad-except
                print(f"  WARNING: could not drop the database {self.db.name}: {err}")
            if self.args.broker_url:
                self.delete_queues()
        finally:
            if not self.args.keep:
                shutil.rmtree(self.root, ignore_errors=True)


def _text(value):
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _group_members(pgid):
    """Live (non-zombie) pids of process group ``pgid`` (Linux /proc)."""
    members = set()
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.add(int(stat.parent.name))
    return members


def _processes_mentioning(text):
    found = []
    for cmdline in pathlib.Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
            status = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if status != "Z" and int(cmdline.parent.name) != os.getpid() and any(text in arg for arg in args):
            found.append(int(cmdline.parent.name))
    return sorted(found)


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
    kind = DB_ALIASES.get(args.db.strip().lower())
    if kind is None:
        parser.error(f"--db {args.db!r}: choose sqlite, mariadb or postgresql")
    args.db = kind
    broker = args.broker.strip()
    args.broker_name, args.broker_url = "", ""
    if broker and broker.lower() not in ("none", "embedded"):
        if broker.lower() in BROKER_URLS:
            args.broker_name, args.broker_url = broker.lower(), BROKER_URLS[broker.lower()]
        elif "://" in broker:
            args.broker_name, args.broker_url = broker.split("://", 1)[0], broker
        else:
            parser.error(f"--broker {broker!r}: choose rabbitmq, redis or give a broker URL")
    return args


def main(argv=None):
    args = parse_args(argv)
    for program in ("salt-master", "salt-minion", "salt", "salt-run", "salt-relay"):
        if not (BIN_DIR / program).exists():
            print(
                f"error: {BIN_DIR / program} not found: run this with the Python of a venv where "
                "salt-relay is installed (scripts/demo.sh does that)",
                file=sys.stderr,
            )
            return 2

    def interrupted(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    begin = time.monotonic()
    demo = Demo(args)
    ok = False
    try:
        ok = demo.main()
    except (KeyboardInterrupt, Interrupted) as err:
        print(f"\ninterrupted ({str(err) or 'Ctrl-C'})", flush=True)
        demo.failures.append("interrupted")
    except DemoError as err:
        print(f"\nERROR: {err}", flush=True)
        demo.failures.append(str(err).splitlines()[0])
    finally:
        # Nothing may interrupt the cleanup: it stops the daemons and is bounded (~15 s).
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
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
