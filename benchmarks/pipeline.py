"""End-to-end pipeline benchmark (issue #4): salt-master bus -> relay engine -> broker -> worker -> SQL.

Run it from the repository root, in the venv where salt-relay is installed (editable is
fine: the master finds the ``relay`` engine through the ``salt.loader`` entry point), with
the servers of ``scripts/ensure-services.sh`` answering on 127.0.0.1::

    python benchmarks/pipeline.py --quick                    # smoke run, < 2 min
    python benchmarks/pipeline.py                              # full run (3 runs), ~11 min here
    python benchmarks/pipeline.py --variants rabbitmq --rates 5000 --duration 20

Variants (all in the same run):

* ``rabbitmq``: engine -> RabbitMQ (amqp://guest@127.0.0.1:5672) -> ``salt-relay worker``
  (subprocess) -> MariaDB (root@127.0.0.1:3306, a fresh ``relay_bench_pipe_<hex8>`` database);
* ``redis``: the same with Redis (redis://127.0.0.1:6379/0);
* ``embedded``: no broker, the engine writes to SQLite itself (a file in the temp root).

What one run of one variant does:

1. Creates a temp root (``/tmp/rbench-*``, short for AF_UNIX paths), writes a minimal
   master config (``tests.support.salt_daemons.Master``: the current user, interface
   127.0.0.1, free publish_port/ret_port, pki_dir, cachedir, sock_dir and log under
   ``<root>/master``, ``engines: [{relay: {}}]`` and a ``relay:`` block with broker_url,
   database_url and a unique queue ``relay-bench-<hex8>``), and starts
   ``salt-master -c <root>/master`` as a subprocess; in the broker variants also
   ``salt-relay -c <root>/master worker`` (same ``relay:`` block). The relay options not
   named here are the defaults (batch_size 500, batch_max_wait 0.2 s, prefetch 8).
2. Starts a no-op listener process on the same bus (``get_master_event(listen=True)``,
   ``get_event(full=True)`` in a loop; it only counts events per phase and notes how old
   each is when read, ``now - bench_sent`` = the bus lag) and ``--senders`` sender
   processes, then warms up until both the engine and the listener see events.
   Senders use ``get_master_event(opts, sock_dir, listen=False)``: by default
   (``--sender-api async``) made with the sender's asyncio loop and
   ``await fire_event_async(data, tag)``, with ``master_async_mworker: True`` in the
   *sender's* opts only (the master's config is unchanged). ``--sender-api sync`` uses the
   plain ``fire_event(data, tag)``, which in Salt 3008.3 starts a thread per event inside
   ``PublishServer.publish`` (~1.4 ms per event measured here: ~700 events/s per process,
   too slow to offer 3k-5k events/s from a few processes on 2 cores).
3. For each rate (default 1k, 3k, 5k events/s, ``--duration`` s each): the senders fire
   ``rate * duration`` events on a shared fixed schedule (event *i* is due at
   ``t0 + i / rate``; sender *k* fires the events with ``i % senders == k``; a late sender
   fires at once, it never skips). Events are jobs of ``--minions-per-job`` minions: one
   ``salt/job/<jid>/new`` publish, then one ``salt/job/<jid>/ret/<minion>`` return per
   minion (jids unique, 20-digit UTC timestamps). Each event carries ``bench_sent``
   (``time.time()`` just before the fire call). Checking the offered rate: each sender
   reports how many events it fired, its first/last fire time and how far it fell behind
   the schedule; ``fired/s`` = ``(fired - 1) / (last - first)`` over all senders, and the
   listener's receive span gives ``recv/s``, the rate the bus actually delivered. A fire
   call returns when the event is written to the master's IPC pull socket, so when the
   master's EventPublisher falls behind, the senders are slowed down with it: a
   ``fired/s`` below the target is reported (NOTE and FAIL lines), never hidden.
4. Waits until the listener count is stable, the engine's stats file
   (``salt_engine_lib.paths.engine_stats``, rewritten every 2 s) shows no pending events,
   and the new rows in ``events`` equal the engine's new ``accepted`` (or a timeout), then
   reads:

   * capture = engine ``accepted`` (delta over the phase; ``captured`` is printed in the
     JSON) / events of the phase seen by the no-op listener (target >= 0.98), and
     ``eng/fired`` = ``accepted`` / events fired;
   * discards = ``Publisher discarding slow subscriber`` warnings in the master log during
     the phase: Salt's EventPublisher closes a subscriber (the engine, the listener or one
     of Salt's own) whose write queue holds ``pub_server_write_queue_size`` (default
     10000) undrained events; it reconnects and misses what was published meanwhile.
     ``--master-opt pub_server_write_queue_size=100000`` tries a bigger queue;
   * lost after capture = ``accepted`` - new ``events`` rows (every accepted event
     becomes exactly one ``events`` row; target 0); ``returns``/``jobs`` rows are checked
     against the returns/publishes fired too;
   * stored/s = new ``events`` rows / (last row visible - first event fired);
   * lag = ``returns.stored_at`` - ``bench_sent`` of the same return (p50/p99 over all
     returns of the phase); ``stored_at`` is set when the worker (engine in embedded mode)
     builds the rows, just before its transaction, so the commit itself is not in it;
     ``drain`` is the time from the last event fired to the last row visible to a
     separate connection (polled every 0.2 s), which includes the commit;
   * engine RSS: the engine process is the ``pid`` of the stats file (checked to be a
     child of the master with ``Engine`` in its cmdline); VmRSS at the end of the phase
     and VmHWM (peak since start); engine CPU seconds per 1,000 events;
   * in the JSON also: CPU seconds of every process involved while firing (engine,
     listener, senders, worker, each master process by its title), the 1-minute load
     average, the engine's drop/overflow/spool counters.

5. Stops the senders, the listener, the worker and the master (SIGTERM, then SIGKILL by
   pid after a timeout), checks the dead-letter queue, deletes both queues, drops the
   database and removes the temp root, also on failure or Ctrl-C.

The table shows medians over ``--runs``; every run, the medians and the checks go to
``benchmarks/results/pipeline.json`` with the load average at start and end (``--json
PATH`` elsewhere, ``--json -`` nowhere; a ``--quick`` run writes none unless ``--json``
is given; see ``_results.py``). ``--quick`` is
one run of 1 s at 1k and 5k events/s per variant (about 90 s). Everything (master, broker, database, senders,
listener, and whatever else runs on the box: see the ``load`` column) shares this
machine's cores, so the numbers are for this box, not for a master with cores of its own.
"""

import argparse
import contextlib
import datetime
import json
import os
import pathlib
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _results  # noqa: E402
from _results import log  # noqa: E402

from tests.support import brokers, databases, engine_stats, processes, salt_daemons  # noqa: E402
from tests.support.servers import ServerUnavailable  # noqa: E402
from tests.support.stats import median, percentile  # noqa: E402

VARIANTS = ("rabbitmq", "redis", "embedded")
MASTER_ID = "relay-bench-master"

# Salt's EventPublisher (salt/transport/tcp.py) closes a subscriber whose per-subscriber
# write queue holds pub_server_write_queue_size (default 10000) undrained events; the
# subscriber reconnects and never sees what was published meanwhile.
DISCARD_MARK = "Publisher discarding slow subscriber"

TARGET_CAPTURE = 0.98
TARGET_P99_LAG = 1.0
TARGET_RSS_MB = 150.0


# =============================================================================================
# Child roles: sender and listener (run as `python pipeline.py --role ...`)
# =============================================================================================


def _salt_opts(master_config):
    import salt.config

    return salt.config.master_config(master_config)


def role_sender(args):
    """Fire events on commands read from stdin (one JSON line each); answer on stdout.

    ``--sender-api sync``: ``get_master_event(opts, sock_dir, listen=False).fire_event(data, tag)``.
    In Salt 3008.3 each such call runs a SyncWrapper ``run_sync`` that starts a thread in
    ``PublishServer.publish`` (~1.4 ms per event here, ~700 events/s per process).
    ``--sender-api async`` (default): the same bus client made with the sender's asyncio loop
    (``io_loop=``) and ``await fire_event_async(data, tag)``, with ``master_async_mworker``
    set in the *sender's* opts only, so ``PublishServer.publish`` awaits the raw IPC
    publisher instead of starting a thread per event (the path the master's MWorkers take
    with ``master_async_mworker: True``). The master's config is unchanged.
    """
    import asyncio

    import salt.utils.event

    opts = _salt_opts(args.master_config)
    out = sys.stdout

    def commands():
        out.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
        out.flush()
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd.get("quit"):
                return
            yield cmd

    def answer(result):
        out.write(json.dumps(result) + "\n")
        out.flush()

    if args.sender_api == "sync":
        bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False)

        def fire(data, tag):
            return bus.fire_event(data, tag)

        for cmd in commands():
            answer(_send_phase(cmd, args.index, args.senders, fire, time.sleep))
        bus.destroy()
        return

    opts["master_async_mworker"] = True

    async def run():
        loop = asyncio.get_running_loop()
        bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False, io_loop=loop)
        for cmd in commands():  # blocks the loop between phases only
            answer(await _send_phase_async(cmd, args.index, args.senders, bus))
        bus.destroy()

    asyncio.run(run())


def _event(i, per_job, jids, minions, phase, now):
    job, pos = divmod(i, per_job)
    jid = jids[job]
    if pos == 0:
        tag = f"salt/job/{jid}/new"
        data = {
            "jid": jid,
            "tgt": "minion-*",
            "tgt_type": "glob",
            "user": "root",
            "fun": "test.ping",
            "arg": [],
            "minions": minions,
            "missing": [],
        }
    else:
        minion = minions[pos - 1]
        tag = f"salt/job/{jid}/ret/{minion}"
        data = {
            "cmd": "_return",
            "id": minion,
            "jid": jid,
            "fun": "test.ping",
            "fun_args": [],
            "return": True,
            "retcode": 0,
            "success": True,
            "user": "root",
            "ts": int(now),
        }
    data["bench_phase"] = phase
    return tag, data


class _Tally:
    def __init__(self, phase):
        self.phase = phase
        self.fired = self.failed = self.late = 0
        self.first = self.last = None
        self.behind_max = 0.0

    def behind(self, seconds):
        self.behind_max = max(self.behind_max, seconds)
        self.late += seconds > 0.05

    def done(self, sent_at, ok):
        if ok:
            self.fired += 1
        else:
            self.failed += 1
        self.first = sent_at if self.first is None else self.first
        self.last = sent_at

    def result(self):
        return {
            "phase": self.phase,
            "fired": self.fired,
            "failed": self.failed,
            "first": self.first,
            "last": self.last,
            "behind_max": self.behind_max,
            "late": self.late,
        }


def _send_phase(cmd, index, senders, fire, sleep):
    rate, count, t0 = cmd["rate"], cmd["count"], cmd["t0"]
    per_job = cmd["minions_per_job"] + 1
    minions = [f"minion-{m:04d}.bench" for m in range(cmd["minions_per_job"])]
    tally = _Tally(cmd["phase"])
    for i in range(index, count, senders):
        due = t0 + i / rate
        now = time.time()
        if now < due:
            sleep(due - now)
        else:
            tally.behind(now - due)
        tag, data = _event(i, per_job, cmd["jids"], minions, cmd["phase"], now)
        sent_at = data["bench_sent"] = time.time()
        try:
            ok = fire(data, tag)
        except Exception:  # counted as a failed fire, like a False
            ok = False
        tally.done(sent_at, ok is not False)
    return tally.result()


async def _send_phase_async(cmd, index, senders, bus):
    import asyncio

    rate, count, t0 = cmd["rate"], cmd["count"], cmd["t0"]
    per_job = cmd["minions_per_job"] + 1
    minions = [f"minion-{m:04d}.bench" for m in range(cmd["minions_per_job"])]
    tally = _Tally(cmd["phase"])
    for i in range(index, count, senders):
        due = t0 + i / rate
        now = time.time()
        if now < due:
            await asyncio.sleep(due - now)
        else:
            tally.behind(now - due)
        tag, data = _event(i, per_job, cmd["jids"], minions, cmd["phase"], now)
        sent_at = data["bench_sent"] = time.time()
        try:
            ok = await bus.fire_event_async(data, tag)
        except Exception:  # counted as a failed fire, like a False
            ok = False
        tally.done(sent_at, ok is not False)
    return tally.result()


def role_listener(args):
    """No-op bus listener: counts events per bench_phase (and how old they are), dumps to a file."""
    import salt.utils.event

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    opts = _salt_opts(args.master_config)
    counts, lags, summaries, changed, span = {}, {}, {}, set(), {}
    out = pathlib.Path(args.out)
    tmp = out.with_suffix(".tmp")
    dumped_at = 0.0

    def dump():
        for phase in changed:
            ordered = sorted(lags[phase])
            summaries[phase] = {
                "p50": percentile(ordered, 0.5),
                "p99": percentile(ordered, 0.99),
                "max": ordered[-1],
                "first": span[phase][0],
                "last": span[phase][1],
            }
        changed.clear()
        tmp.write_text(json.dumps({"counts": counts, "lags": summaries}))
        os.replace(tmp, out)

    with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True) as bus:
        # Started with the master: connect once its publisher is up, then say so.
        while not stopping and not bus.connect_pub(timeout=1):
            time.sleep(0.2)
        counts["_connected"] = 1
        dump()
        while not stopping:
            event = bus.get_event(wait=0.2, full=True, auto_reconnect=True)
            if event is not None:
                data = event.get("data")
                phase = data.get("bench_phase") if isinstance(data, dict) else None
                counts[phase or "_other"] = counts.get(phase or "_other", 0) + 1
                if phase:
                    # bus lag: fired (bench_sent) -> read by this listener
                    received = time.time()
                    lags.setdefault(phase, []).append(received - data.get("bench_sent", 0))
                    span[phase] = (span.get(phase, (received,))[0], received)
                    changed.add(phase)
            now = time.monotonic()
            if now - dumped_at >= 0.3:
                dump()
                dumped_at = now
    dump()


# =============================================================================================
# SQL reads
# =============================================================================================


class Rows(databases.Reader):
    """The counts and lags a phase reads from the benchmark database."""

    def max_event_id(self):
        return self.scalar("SELECT COALESCE(MAX(id), 0) FROM events")

    def events_after(self, event_id):
        return self.scalar("SELECT COUNT(*) FROM events WHERE id > :i", i=event_id)

    def count_jids(self, table, lo, hi):
        return self.scalar(f"SELECT COUNT(*) FROM {table} WHERE jid >= :lo AND jid <= :hi", lo=lo, hi=hi)

    def return_lags(self, lo, hi):
        sql = "SELECT stored_at, JSON_EXTRACT(document, '$.bench_sent') FROM returns WHERE jid >= :lo AND jid <= :hi"
        return [
            databases.epoch(stored_at) - float(sent) for stored_at, sent in self.rows(sql, lo=lo, hi=hi) if None not in (stored_at, sent)
        ]


# =============================================================================================
# One run of one variant
# =============================================================================================


class Pipeline:
    def __init__(self, variant, args):
        self.variant = variant
        self.args = args
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="rbench-", dir="/tmp"))
        self.logs = self.root / "logs"
        self.logs.mkdir()
        self.listener_file = self.root / "listener.json"
        self.broker_url = None
        self.queue = brokers.unique_queue("relay-bench")
        self.master = self.master_proc = self.worker = self.listener = None
        self.daemons = salt_daemons.Daemons(self.logs)  # master.console, worker.console (the worker's log)
        self.senders = []
        self.database = contextlib.ExitStack()  # drops the benchmark database
        self.rows = None
        self.engine_pid = None
        self.dead_lettered = None
        self._settled_accepted = None

    # -- setup ------------------------------------------------------------------------------

    def start(self):
        from salt_engine_lib.store import Store

        if self.variant != "embedded":
            self.broker_url = brokers.check_broker(self.variant)
        dialect = "sqlite" if self.variant == "embedded" else "mysql"
        self.database_url = self.database.enter_context(databases.fresh_database(dialect, self.root, prefix="relay_bench_pipe"))
        Store(self.database_url).ensure_schema()  # schema, before timing
        self.rows = Rows(self.database_url)
        relay = {"database_url": self.database_url}
        if self.broker_url:
            relay.update(broker_url=self.broker_url, queue=self.queue, dead_letter_queue=f"{self.queue}.dlq")
        self.master = salt_daemons.Master(
            self.root / "master", MASTER_ID, log_level_logfile="info", engines=[{"relay": {}}], relay=relay, **self.args.master_opts
        ).write()
        log(f"{self.variant}: starting salt-master in {self.root}")
        self.master_proc = self.daemons.start("master", self.master.argv())
        if self.broker_url:
            self.worker = self.daemons.start("worker", self.master.worker_argv("--concurrency", str(self.args.worker_concurrency)))
        # Senders connect to the bus at their first fire (after the warm-up starts).
        for index in range(self.args.senders):
            self.senders.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--role",
                        "sender",
                        "--master-config",
                        str(self.master.config_file),
                        "--index",
                        str(index),
                        "--senders",
                        str(self.args.senders),
                        "--sender-api",
                        self.args.sender_api,
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=open(self.logs / f"sender{index}.log", "wb"),
                    text=True,
                    bufsize=1,
                )
            )
        self.listener = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--role",
                "listener",
                "--master-config",
                str(self.master.config_file),
                "--out",
                str(self.listener_file),
            ],
            stdout=open(self.logs / "listener.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        self._wait_engine()
        deadline = time.monotonic() + 60
        while not self.listener_counts().get("_connected"):
            if time.monotonic() > deadline or self.listener.poll() is not None:
                raise RuntimeError(f"the listener did not connect to the bus; see {self.logs}/listener.log")
            time.sleep(0.2)
        for sender in self.senders:
            self._read_reply(sender, 60)
        self._warm_up()

    def _wait_engine(self, timeout=90):
        try:
            stats = engine_stats.wait_until_running(self.master.opts, timeout, check=self.daemons.check)
        except salt_daemons.DaemonError as err:
            raise RuntimeError(f"{err}; see {self.root}") from None
        self.engine_pid = stats["pid"]
        tree = processes.tree(self.master_proc.pid)
        cmd = processes.cmdline(self.engine_pid)
        if self.engine_pid not in tree or "Engine" not in cmd:
            log(f"warning: engine pid {self.engine_pid} from the stats file: in master tree {self.engine_pid in tree}, cmdline {cmd!r}")
        log(f"{self.variant}: engine up (pid {self.engine_pid}, {stats['mode']} mode, cmdline {cmd!r})")

    def tracked_pids(self):
        """{role: [pids]} of the processes whose CPU time a phase reports."""
        roles = {"engine": [self.engine_pid], "listener": [self.listener.pid], "senders": [s.pid for s in self.senders]}
        if self.worker is not None:
            roles["worker"] = [self.worker.pid] + processes.tree(self.worker.pid)
        for pid in processes.tree(self.master_proc.pid) + [self.master_proc.pid]:
            if pid == self.engine_pid:
                continue
            # Salt's process title is the command line (ending in --log-file <file>) + the process name.
            title = processes.cmdline(pid).split(str(self.master.log_file), 1)[-1].strip() or "MainProcess"
            title = "master:" + title.split("(", 1)[0].split(" ")[-1][:40]
            roles.setdefault(title, []).append(pid)
        return roles

    def cpu_snapshot(self):
        return {role: sum(processes.cpu_seconds(pids).values()) for role, pids in self.tracked_pids().items()}

    def engine_stats(self):
        return engine_stats.read(self.master.opts)

    def master_log_size(self):
        try:
            return self.master.log_file.stat().st_size
        except OSError:
            return 0

    def master_log_lines(self, offset, mark):
        try:
            with open(self.master.log_file, "rb") as handle:
                handle.seek(offset)
                text = handle.read().decode(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if mark in line]

    def listener_report(self):
        try:
            return json.loads(self.listener_file.read_text())
        except (OSError, ValueError):
            return {"counts": {}, "lags": {}}

    def listener_counts(self):
        return self.listener_report()["counts"]

    def _read_reply(self, sender, timeout):
        ready, _, _ = select.select([sender.stdout], [], [], timeout)
        if not ready:
            raise RuntimeError(f"sender {sender.pid} did not answer within {timeout} s")
        line = sender.stdout.readline()
        if not line:
            raise RuntimeError(f"sender {sender.pid} exited ({sender.poll()}); see {self.logs}")
        return json.loads(line)

    def _fire(self, phase, rate, count, jids, lead=0.5):
        t0 = time.time() + lead
        cmd = {"phase": phase, "rate": rate, "count": count, "t0": t0, "jids": jids, "minions_per_job": self.args.minions_per_job}
        line = json.dumps(cmd) + "\n"
        for sender in self.senders:
            sender.stdin.write(line)
            sender.stdin.flush()
        return t0

    def _warm_up(self, timeout=60):
        """Until the engine's reader and the listener are both subscribed (events reach both)."""
        deadline = time.monotonic() + timeout
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            phase = f"warmup{attempt}"
            jids = [f"{phase}-{n}" for n in range(5)]
            self._fire(phase, 50, len(jids) * (self.args.minions_per_job + 1), jids, lead=0.05)
            for sender in self.senders:
                self._read_reply(sender, 60)
            until = time.monotonic() + 3
            while time.monotonic() < until:
                stats = self.engine_stats() or {}
                if stats.get("accepted", 0) > 0 and self.listener_counts().get(phase, 0) > 0:
                    log(f"{self.variant}: warm (engine accepted {stats['accepted']}, attempt {attempt})")
                    # Let the warm-up events reach the database so the phase baseline is stable.
                    self._settle(stats.get("accepted", 0), timeout=20)
                    return
                time.sleep(0.2)
        raise RuntimeError("the engine or the listener never saw the warm-up events")

    def _settle(self, _accepted, timeout):
        """Wait until the engine has nothing pending and its stats were rewritten twice."""
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            stats = self.engine_stats() or {}
            if not seen or stats.get("updated") != seen[-1].get("updated"):
                seen.append(stats)
            if (
                len(seen) >= 2
                and seen[-1].get("pending") == 0
                and seen[-1].get("accepted") == seen[-2].get("accepted")
                and seen[-1].get("forwarded") == seen[-1].get("journaled")
            ):
                self._settled_accepted = stats.get("accepted")
                return stats
            time.sleep(0.2)
        return self.engine_stats() or {}

    # -- one phase --------------------------------------------------------------------------

    def phase(self, rate, duration, run_label):
        args = self.args
        count = int(rate * duration)
        per_job = args.minions_per_job + 1
        jobs = -(-count // per_job)
        base = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        jids = [(base + datetime.timedelta(microseconds=j)).strftime("%Y%m%d%H%M%S%f") for j in range(jobs)]
        n_publish = sum(1 for i in range(count) if i % per_job == 0)
        n_returns = count - n_publish
        phase = f"{run_label}-{rate}"

        before = self.engine_stats() or {}
        if before.get("accepted") != self._settled_accepted or before.get("pending") or before.get("forwarded") != before.get("journaled"):
            before = self._settle(0, timeout=30)
        event_id = self.rows.max_event_id()
        rows_before = self.rows.events_after(0)
        log_offset = self.master_log_size()
        cpu_before = processes.cpu_seconds([self.engine_pid]).get(self.engine_pid)
        roles_before = self.cpu_snapshot()
        load_before = os.getloadavg()[0]

        t0 = self._fire(phase, rate, count, jids)
        replies = [None] * len(self.senders)
        rss_max = 0.0
        waiting = {s.stdout: k for k, s in enumerate(self.senders)}
        hard_deadline = t0 + duration * 4 + 60
        while waiting:
            ready, _, _ = select.select(list(waiting), [], [], 0.25)
            for stream in ready:
                k = waiting.pop(stream)
                line = stream.readline()
                if not line:
                    raise RuntimeError(f"sender {k} exited; see {self.logs}/sender{k}.log")
                replies[k] = json.loads(line)
            rss_max = max(rss_max, processes.rss_mb(self.engine_pid) or 0.0)
            if time.time() > hard_deadline:
                raise RuntimeError("senders did not finish in time")
        roles_cpu = {role: round(value - roles_before.get(role, 0.0), 2) for role, value in self.cpu_snapshot().items()}
        fired = sum(r["fired"] for r in replies)
        failed = sum(r["failed"] for r in replies)
        first = min(r["first"] for r in replies if r["first"])
        last = max(r["last"] for r in replies if r["last"])
        achieved = (fired - 1) / (last - first) if fired > 1 and last > first else None

        # Drain: poll rows until they stop growing and match the engine's accepted delta.
        settle_timeout = max(60.0, duration * 6)
        deadline = time.monotonic() + settle_timeout
        last_rows, last_change = -1, time.time()
        rows_complete_at = None
        listener_prev, listener_stable_since = -1, time.monotonic()
        stats_seen = []
        while time.monotonic() < deadline:
            rss_max = max(rss_max, processes.rss_mb(self.engine_pid) or 0.0)
            rows_now = self.rows.events_after(event_id)
            if rows_now != last_rows:
                last_rows, last_change = rows_now, time.time()
            seen = self.listener_counts().get(phase, 0)
            if seen != listener_prev:
                listener_prev, listener_stable_since = seen, time.monotonic()
            stats = self.engine_stats() or {}
            if not stats_seen or stats.get("updated") != stats_seen[-1].get("updated"):
                stats_seen.append(stats)
            accepted_delta = stats.get("accepted", 0) - before.get("accepted", 0)
            engine_quiet = (
                len(stats_seen) >= 2
                and stats.get("updated", 0) > last + 0.5
                and stats.get("pending") == 0
                and stats_seen[-1].get("accepted") == stats_seen[-2].get("accepted")
            )
            if engine_quiet and rows_now >= accepted_delta and rows_complete_at is None:
                rows_complete_at = last_change
            if engine_quiet and rows_complete_at is not None and time.monotonic() - listener_stable_since > 1.0:
                if stats.get("forwarded") == stats.get("journaled"):
                    self._settled_accepted = stats.get("accepted")
                break
            time.sleep(0.2)
        else:
            log(
                f"{self.variant} {phase}: not settled within {settle_timeout:.0f} s (rows {last_rows}, "
                f"accepted delta {accepted_delta}); counting what is there"
            )
        stats = self.engine_stats() or {}
        cpu_after = processes.cpu_seconds([self.engine_pid]).get(self.engine_pid)
        rows_events = self.rows.events_after(event_id)
        rows_returns = self.rows.count_jids("returns", jids[0], jids[-1])
        rows_jobs = self.rows.count_jids("jobs", jids[0], jids[-1])
        lags = self.rows.return_lags(jids[0], jids[-1])
        discards = self.master_log_lines(log_offset, DISCARD_MARK)
        time.sleep(0.4)  # one more listener dump, with the lag summary of the whole phase
        listener = self.listener_report()
        seen = listener["counts"].get(phase, 0)
        bus_lag = listener["lags"].get(phase, {})
        accepted = stats.get("accepted", 0) - before.get("accepted", 0)
        captured = stats.get("captured", 0) - before.get("captured", 0)
        end = rows_complete_at or last_change
        result = {
            "variant": self.variant,
            "rate": rate,
            "duration": duration,
            "events_planned": count,
            "publishes_planned": n_publish,
            "returns_planned": n_returns,
            "fired": fired,
            "fire_failed": failed,
            "achieved_rate": achieved,
            "sender_behind_max_s": max(r["behind_max"] for r in replies),
            "sender_late_over_50ms": sum(r["late"] for r in replies),
            "listener_seen": seen,
            "engine_vs_fired": accepted / fired if fired else None,
            "bus_subscriber_discards": len(discards),
            "bus_subscriber_discard_lines": discards[:5],
            "engine_captured": captured,
            "engine_accepted": accepted,
            "capture_ratio": accepted / seen if seen else None,
            "listener_ratio_vs_fired": seen / fired if fired else None,
            "rows_events": rows_events,
            "rows_returns": rows_returns,
            "rows_jobs": rows_jobs,
            "lost_after_capture": accepted - rows_events,
            "stored_per_s": rows_events / (end - first) if end > first else None,
            "drain_s": end - last,
            "listener_rate": (seen - 1) / (bus_lag["last"] - bus_lag["first"])
            if seen > 1 and bus_lag.get("last", 0) > bus_lag.get("first", 0)
            else None,
            "bus_lag_p50_s": bus_lag.get("p50"),
            "bus_lag_p99_s": bus_lag.get("p99"),
            "bus_lag_max_s": bus_lag.get("max"),
            "lag_p50_s": percentile(lags, 0.50),
            "lag_p99_s": percentile(lags, 0.99),
            "lag_max_s": max(lags) if lags else None,
            "lag_samples": len(lags),
            "engine_rss_mb": processes.rss_mb(self.engine_pid),
            "engine_rss_max_sampled_mb": rss_max,
            "engine_hwm_mb": processes.peak_rss_mb(self.engine_pid),
            "engine_cpu_s_per_1k": (cpu_after - cpu_before) / accepted * 1000 if accepted and cpu_after else None,
            "engine_reader_overflowed": stats.get("reader_overflowed", 0) - before.get("reader_overflowed", 0),
            "engine_spool_lost": stats.get("spool_lost_events", 0) - before.get("spool_lost_events", 0),
            "engine_forward_failures": stats.get("forward_failures", 0) - before.get("forward_failures", 0),
            "engine_dropped": {k: v - before.get("dropped", {}).get(k, 0) for k, v in stats.get("dropped", {}).items()},
            "engine_last_error": stats.get("last_error"),
            "rows_total_after": rows_before + rows_events,
            "cpu_s_while_firing": roles_cpu,
            "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "load_1m": os.getloadavg()[0],
        }
        log(
            f"{self.variant} {phase}: fired {fired} at {achieved or 0:.0f}/s, listener {seen}, accepted {accepted}, "
            f"rows {rows_events} (returns {rows_returns}/{n_returns}, jobs {rows_jobs}/{n_publish}), "
            f"p99 lag {result['lag_p99_s'] if lags else float('nan'):.3f}s, drain {result['drain_s']:.2f}s, "
            f"RSS {result['engine_rss_mb'] or 0:.0f} MB, slow-subscriber discards {len(discards)}"
        )
        return result

    # -- teardown ---------------------------------------------------------------------------

    def close(self):
        for sender in self.senders:
            with contextlib.suppress(Exception):
                sender.stdin.write(json.dumps({"quit": True}) + "\n")
                sender.stdin.flush()
        processes.stop(
            [(sender, f"sender{index}", 5) for index, sender in enumerate(self.senders)]
            + [(self.listener, "listener", 5), (self.worker, "worker", 20), (self.master_proc, "salt-master", 30)],
            report=log,
        )
        if self.rows is not None:
            self.rows.dispose()
        if self.broker_url:
            try:
                self.dead_lettered = brokers.queue_depth(self.broker_url, f"{self.queue}.dlq", missing_ok=True)
                if self.dead_lettered:
                    log(f"{self.variant}: {self.dead_lettered} messages in the dead-letter queue")
                brokers.delete_queues(self.broker_url, self.queue, f"{self.queue}.dlq")
            except Exception as err:  # teardown goes on: the rest must still be cleaned up
                log(f"{self.variant}: could not clean up queue {self.queue}: {err}")
        try:
            self.database.close()
        except Exception as err:  # teardown goes on
            log(f"{self.variant}: could not drop the database: {err}")

    def log_problems(self):
        """ERROR/CRITICAL lines of the master and worker logs (counted, first few shown)."""
        found = {}
        for name, path in (("master.log", self.master.log_file), ("worker.log", self.daemons.console("worker"))) if self.master else ():
            if not path.exists():
                continue
            lines = [
                line
                for line in path.read_text(errors="replace").splitlines()
                if "[ERROR" in line or "[CRITICAL" in line or " ERROR " in line or " CRITICAL " in line
            ]
            if lines:
                found[name] = {"count": len(lines), "first": lines[:3]}
        return found

    def remove_root(self):
        shutil.rmtree(self.root, ignore_errors=True)


def run_variant(variant, args, run_index):
    pipeline = Pipeline(variant, args)
    results = []
    problems = {}
    try:
        pipeline.start()
        for rate in args.rates:
            results.append(pipeline.phase(rate, args.duration, f"r{run_index}"))
    finally:
        try:
            pipeline.close()
        finally:
            problems = pipeline.log_problems()
            if problems:
                for name, info in problems.items():
                    log(f"{variant}: {info['count']} ERROR/CRITICAL lines in {name}, e.g. {info['first'][0][:300]}")
            if args.keep:
                log(f"{variant}: kept {pipeline.root}")
            else:
                pipeline.remove_root()
    for result in results:
        result["run"] = run_index
        result["log_problems"] = problems
        result["dead_lettered_messages"] = pipeline.dead_lettered
    return results


# =============================================================================================
# Report
# =============================================================================================

COLUMNS = (
    ("variant", "variant", "{}"),
    ("rate", "rate/s", "{}"),
    ("achieved_rate", "fired/s", "{:.0f}"),
    ("fired", "fired", "{:.0f}"),
    ("listener_rate", "recv/s", "{:.0f}"),
    ("listener_seen", "listener", "{:.0f}"),
    ("engine_accepted", "engine", "{:.0f}"),
    ("capture_ratio", "capture", "{:.3f}"),
    ("engine_vs_fired", "eng/fired", "{:.3f}"),
    ("bus_subscriber_discards", "discards", "{:.0f}"),
    ("lost_after_capture", "lost", "{:.0f}"),
    ("stored_per_s", "stored/s", "{:.0f}"),
    ("bus_lag_p99_s", "bus p99", "{:.3f}"),
    ("lag_p50_s", "lag p50", "{:.3f}"),
    ("lag_p99_s", "lag p99", "{:.3f}"),
    ("drain_s", "drain s", "{:.2f}"),
    ("engine_rss_mb", "RSS MB", "{:.0f}"),
    ("engine_hwm_mb", "HWM MB", "{:.0f}"),
    ("engine_cpu_s_per_1k", "eng cpu/1k", "{:.2f}"),
    ("load_1m", "load", "{:.1f}"),
)


def median_of(results, key):
    return median([r.get(key) for r in results])


def summarize(all_results, variants, rates):
    rows = []
    for variant in variants:
        for rate in rates:
            runs = [r for r in all_results if r["variant"] == variant and r["rate"] == rate]
            if not runs:
                continue
            row = {"variant": variant, "rate": rate, "runs": len(runs)}
            for key, _, _ in COLUMNS[2:]:
                row[key] = median_of(runs, key)
            row["lost_after_capture_max"] = max(r["lost_after_capture"] for r in runs)
            row["capture_ratio_min"] = min((r["capture_ratio"] for r in runs if r["capture_ratio"] is not None), default=None)
            row["achieved_rate_min"] = min((r["achieved_rate"] for r in runs if r["achieved_rate"]), default=None)
            row["engine_hwm_mb_max"] = max((r["engine_hwm_mb"] or 0) for r in runs)
            row["lag_p99_s_max"] = max((r["lag_p99_s"] for r in runs if r["lag_p99_s"] is not None), default=None)
            rows.append(row)
    return rows


def print_table(rows):
    header = [title for _, title, _ in COLUMNS]
    lines = []
    for row in rows:
        cells = []
        for key, _, fmt in COLUMNS:
            value = row.get(key)
            cells.append("-" if value is None else fmt.format(value))
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) if lines else len(h) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for cells in lines:
        print("  ".join(c.rjust(w) for c, w in zip(cells, widths)))


def check_targets(rows):
    checks = []
    for row in rows:
        label = f"{row['variant']} @ {row['rate']}/s"
        if row["capture_ratio_min"] is not None:
            checks.append(
                (
                    f"capture >= {TARGET_CAPTURE} x listener ({label}, worst run)",
                    row["capture_ratio_min"] >= TARGET_CAPTURE,
                    f"{row['capture_ratio_min']:.4f}",
                )
            )
        checks.append(
            (f"0 lost after capture ({label}, worst run)", row["lost_after_capture_max"] == 0, str(row["lost_after_capture_max"]))
        )
        checks.append(
            (
                f"engine RSS <= {TARGET_RSS_MB:.0f} MB ({label}, VmHWM worst run)",
                row["engine_hwm_mb_max"] <= TARGET_RSS_MB,
                f"{row['engine_hwm_mb_max']:.0f} MB",
            )
        )
        if row["variant"] == "rabbitmq" and row["rate"] == 5000:
            value = row["lag_p99_s"]
            checks.append(
                (
                    f"p99 lag <= {TARGET_P99_LAG} s ({label}, median of runs)",
                    value is not None and value <= TARGET_P99_LAG,
                    "-" if value is None else f"{value:.3f} s",
                )
            )
        if row["achieved_rate_min"] is not None and row["achieved_rate_min"] < 0.95 * row["rate"]:
            checks.append((f"senders achieved the rate ({label}, worst run)", False, f"{row['achieved_rate_min']:.0f}/s"))
    return checks


# =============================================================================================
# Main
# =============================================================================================


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 run, 1 s per rate, rates 1000,5000 unless --rates is given (overrides --runs and --duration)",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rates", default=None, help="events/s, comma-separated (default 1000,3000,5000; with --quick 1000,5000)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of firing per rate")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--senders", type=int, default=4, help="sender processes")
    parser.add_argument(
        "--sender-api",
        choices=("async", "sync"),
        default="async",
        help="fire_event_async on an asyncio loop (default) or the synchronous fire_event",
    )
    parser.add_argument("--minions-per-job", type=int, default=10, help="returns per job publish (1 publish + N returns per job)")
    parser.add_argument("--worker-concurrency", type=int, default=1)
    parser.add_argument(
        "--master-opt",
        action="append",
        default=[],
        metavar="KEY=YAML",
        help="extra master config option, e.g. pub_server_write_queue_size=100000 (repeatable)",
    )
    _results.add_json_argument(parser, "pipeline")
    parser.add_argument("--keep", action="store_true", help="keep the temp roots (logs) for inspection")
    # internal: child roles
    parser.add_argument("--role", choices=("sender", "listener"), help=argparse.SUPPRESS)
    parser.add_argument("--master-config", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.master_opts = salt_daemons.parse_opts(args.master_opt)
    except ValueError as err:
        parser.error(str(err))
    if args.rates is None:
        args.rates = "1000,5000" if args.quick else "1000,3000,5000"
    args.rates = [int(r) for r in str(args.rates).split(",") if r]
    args.variants = [v for v in args.variants.split(",") if v]
    for variant in args.variants:
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if args.quick:
        args.runs = 1
        args.duration = 1.0
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.role == "sender":
        return role_sender(args)
    if args.role == "listener":
        return role_listener(args)
    recorder = _results.Recorder("pipeline")
    started = time.monotonic()
    all_results, failures = [], []

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    for run_index in range(1, args.runs + 1):
        for variant in args.variants:
            try:
                all_results += run_variant(variant, args, run_index)
            except ServerUnavailable as err:
                log(f"{variant}: skipped, server unavailable: {err}")
                failures.append({"variant": variant, "run": run_index, "error": f"unavailable: {err}"})
            except KeyboardInterrupt:
                log("interrupted; everything started was stopped")
                return 130
            except Exception as err:  # reported, and the next variant runs
                log(f"{variant} run {run_index} FAILED: {type(err).__name__}: {err}")
                failures.append({"variant": variant, "run": run_index, "error": f"{type(err).__name__}: {err}"})
    elapsed = time.monotonic() - started
    rows = summarize(all_results, args.variants, args.rates)
    print()
    print(
        f"salt-relay pipeline: medians over {args.runs} run(s), {args.duration:g} s per rate, "
        f"{args.senders} sender(s), jobs of 1 publish + {args.minions_per_job} returns, "
        f"{os.cpu_count()} CPUs, {elapsed:.0f} s total" + (f", master opts {args.master_opts}" if args.master_opts else "")
    )
    print_table(rows)
    print()
    print(
        "fired/s = rate the senders achieved; fired = events fired; recv/s = rate the no-op listener received; "
        "capture = engine accepted / events seen by the listener; eng/fired = engine accepted / fired; discards = "
        "'Publisher discarding slow subscriber' warnings of the master in the phase; lost = accepted - events rows; stored/s = events rows / "
        "(last row visible - first fire); bus p99 = fire -> read by the listener; lag = returns.stored_at - "
        "bench_sent; drain = last fire -> last row visible; RSS/HWM = engine VmRSS at phase end / VmHWM; "
        "eng cpu/1k = engine CPU s per 1000 events; load = 1-min load average at phase end."
    )
    sender_notes = [r for r in all_results if r["achieved_rate"] and r["achieved_rate"] < 0.95 * r["rate"]]
    for r in sender_notes:
        print(
            f"NOTE: senders fell short in {r['variant']} run {r['run']} @ {r['rate']}/s: "
            f"{r['achieved_rate']:.0f}/s, up to {r['sender_behind_max_s']:.2f} s behind schedule"
        )
    for r in all_results:
        if r["fire_failed"]:
            print(f"NOTE: fire_event returned False/raised {r['fire_failed']} times ({r['variant']} run {r['run']} @ {r['rate']}/s)")
        if r["rows_returns"] != r["returns_planned"] or r["rows_jobs"] != r["publishes_planned"]:
            print(
                f"NOTE: {r['variant']} run {r['run']} @ {r['rate']}/s: returns rows {r['rows_returns']}/"
                f"{r['returns_planned']} fired, jobs rows {r['rows_jobs']}/{r['publishes_planned']} fired "
                f"(listener saw {r['listener_seen']}/{r['fired']})"
            )
    discarded = [r for r in all_results if r["bus_subscriber_discards"]]
    if discarded:
        print(
            f"NOTE: in {len(discarded)} of {len(all_results)} phases the master's EventPublisher discarded slow bus "
            f"subscribers ({sum(r['bus_subscriber_discards'] for r in discarded)} times; engine, listener or Salt's "
            "own subscribers: the log does not say which); events published while a subscriber reconnects are lost "
            "for it, and the relay engine logs and counts nothing about it."
        )
    checks = check_targets(rows)
    print()
    for name, ok, value in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value}")
    for failure in failures:
        print(f"FAILED RUN  {failure['variant']} run {failure['run']}: {failure['error']}")
    recorder.write(
        _results.json_path(args, "pipeline", args.quick),
        args,
        cpus=os.cpu_count(),
        medians=rows,
        runs=all_results,
        checks=[{"name": n, "ok": ok, "value": v} for n, ok, v in checks],
        failures=failures,
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
