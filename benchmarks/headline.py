"""Headline benchmark (issue #9 item 3): a real salt-master's return path, per job cache.

Run it from the repository root, in the venv where salt-relay is installed (editable is
fine) and saltext-mysql too (``pip install 'salt-relay[bench]'``), with the servers of
``scripts/ensure-services.sh`` answering on 127.0.0.1::

    python benchmarks/headline.py --quick                       # smoke run, < 3 min
    python benchmarks/headline.py --runs 3                      # full run (18.7 min on a quiet 2-core box)

What it does, per variant and run (everything on this machine):

1. A temp root (``/tmp/hl-*``) with a generated master config
   (``tests.support.salt_daemons.Master``): id, the current user, interface 127.0.0.1,
   free publish_port/ret_port, root_dir/pki_dir/cachedir/sock_dir under ``<root>/master``,
   ``worker_threads`` left at Salt's default (5), log level warning, and the variant's
   job cache:

   * ``noop``: ``master_job_cache: noop_cache`` (``benchmarks/noop_cache/_returners``
     via ``returner_dirs``), whose every function does nothing: the ceiling;
   * ``local_cache``: Salt's default job cache (files under the cachedir);
   * ``saltext_mysql``: ``master_job_cache: mysql`` (saltext-mysql) on a fresh MariaDB
     database with the schema its docstring documents (``benchmarks/_saltext_mysql.py``);
   * ``relay_rabbitmq`` / ``relay_redis``: ``master_job_cache: relay``,
     ``engines: [relay: {}]``, ``relay: {broker_url, database_url, queue}`` on a fresh
     MariaDB database and a unique queue, plus one ``salt-relay -c <root>/master worker``;
   * ``relay_embedded``: the same without a broker (the engine writes SQLite itself).

2. N minion ids (``--minions``, default 50), each with its own RSA key pair generated
   once per invocation; the public keys are pre-accepted in the master's
   ``pki/minions/<id>``. ``--senders`` sender processes (twice as many on the variants
   of ``--check-variants``; ``_return_driver.py``) each sign in every id through
   ``AsyncReqChannel.factory(minion_opts, crypt="aes")`` and open ``--channels`` (4)
   channels per id: senders x minions x channels requests in flight (400 by default).

3. Phases (each a fresh set of jobs of N minions; ``--returns`` returns, rounded up to
   whole jobs): ``ping`` (``test.ping`` returns) and ``state`` (a ~20 KB ``state.apply``
   return of 20 file.managed results), both with ``--senders`` processes, and ``ping2x``
   (``ping`` with twice the senders, hence twice the requests in flight) on the variants
   of ``--check-variants``. Before a phase the driver publishes its jobs the way the
   master does, through the job cache's own ``prep_jid`` and ``save_load(jid, load,
   minions)`` from ``salt.minion.MasterMinion(master_opts).returners`` (not timed). Then
   all senders start at one instant and every channel's coroutine sends its returns one
   after the other, without retries; a return counts when the master acknowledged it (the reply to the
   request, which the master sends after ``store_job`` ran the job cache).

4. Measured per phase:

   * returns/s = acknowledged returns / (last acknowledgement - start);
   * stored: the acknowledged (jid, minion) pairs found afterwards: relay ``returns``
     rows, saltext-mysql ``salt_returns`` rows (``doubled`` = rows beyond one per pair,
     that table has no unique key), local_cache ``return.p`` files; for relay the
     benchmark waits until the rows stop changing (``--settle`` s without change);
     ``lost`` = acknowledged pairs never stored;
   * master CPU s per 1,000 returns: user+system CPU time summed over the master's whole
     process tree (psutil; MWorkers, ReqServer, EventPublisher, the relay engine
     ...) from the start of the phase until its returns are stored (relay: rows settled);
     the ``salt-relay worker`` (its own tree) and ``mariadbd`` the same way, separately;
   * relay lag, p50/p99: ``returns.stored_at`` (set when the engine or worker builds the
     rows, just before its transaction commits) minus (a) the return's ``_stamp``, the
     time the master's MWorker fired its event, just before calling the job cache
     (acceptance on the master's clock, which is this clock), and (b) the sender's
     acknowledgement time. (b) can be negative: the engine may store the bus copy of a
     return before the master's reply has reached a busy sender process;
   * ``test.ping`` latency while the load runs: a real ``salt-minion`` (``hl-ping-minion``,
     its own accepted key) is started with each master, and ``LocalClient.cmd(<it>,
     "test.ping")`` is timed every 0.25 s while the senders send (p50 and max of the answered
     ones, and how many got no answer within 30 s); the pings go through the variant's job
     cache like any job;
   * per 0.5 s: returns acknowledged, rows stored, and the lag of the returns acknowledged
     then (``timeline`` in the JSON; ``benchmarks/plot.py`` draws it);
   * the master log's ERROR/CRITICAL lines during the run (counted, first ones kept).

   At the end of each variant run: ``salt-run jobs.list_jobs_filter 50`` (wall time of
   the command, Python start-up included, and how many jobs it listed).

5. The table shows medians over ``--runs``, with ratios to the no-op ceiling and to
   saltext-mysql (3 decimals), then issue #9's targets checked on the unrounded ratios
   (every relay variant >= 0.95x the ceiling's returns/s and <= 1.10x its master CPU
   per return). Every run, the summary, the table and the targets go to
   ``benchmarks/results/headline.json`` (``--json PATH`` elsewhere, ``--json -`` nowhere;
   a ``--quick`` run writes none unless ``--json`` is given), rewritten after every
   variant run. Master, senders, broker, database and worker all share this machine's
   cores with whatever else runs (the load average at start and end, and at each
   phase, is in the JSON): numbers are for this box.

Bottleneck check: ``ping2x`` doubles the sender processes and the requests in flight;
if returns/s does not rise, the senders were not the limit (the table prints both).
"""

import argparse
import contextlib
import datetime
import hashlib
import json
import multiprocessing
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import _results  # noqa: E402
import _return_driver as driver  # noqa: E402
from _results import log  # noqa: E402

from salt_engine_lib import paths  # noqa: E402
from tests.support import brokers, databases, engine_stats, processes, salt_daemons, salt_keys  # noqa: E402
from tests.support.stats import median, percentile  # noqa: E402

NOOP_DIR = HERE / "noop_cache" / "_returners"
MASTER_ID = "headline-master"
# A real salt-minion on each master: `test.ping` round trips are timed while the load runs.
PING_MINION = "hl-ping-minion"
PING_INTERVAL_S = 0.25

VARIANTS = {
    "noop": {"label": "no-op job cache (ceiling)", "cache": "noop_cache"},
    "local_cache": {"label": "local_cache (Salt default)", "cache": "local_cache"},
    "saltext_mysql": {"label": "saltext-mysql on MariaDB", "cache": "mysql"},
    "relay_rabbitmq": {"label": "relay, RabbitMQ + MariaDB", "cache": "relay", "broker": brokers.RABBITMQ_URL, "db": "mariadb"},
    "relay_redis": {"label": "relay, Redis + MariaDB", "cache": "relay", "broker": brokers.REDIS_URL, "db": "mariadb"},
    "relay_embedded": {"label": "relay embedded (SQLite)", "cache": "relay", "db": "sqlite"},
}
PAYLOADS = ("ping", "state")
# Issue #9: every relay variant >= 0.95x the no-op ceiling's returns/s and <= 1.10x its
# master CPU per 1,000 returns, for both payloads.
TARGET_RATE_RATIO = 0.95
TARGET_CPU_RATIO = 1.10

TIMELINE_BUCKET_S = 0.5


def timeline(t0, ack_times, stored_times):
    """Per 0.5 s since the phase started: returns acknowledged, rows stored, and the lag
    (stored - acknowledged) of the returns acknowledged in that bucket, for ``benchmarks/plot.py``."""

    def bucket(when):
        return max(0, int((when - t0) // TIMELINE_BUCKET_S))

    ends = [bucket(w) for w in ack_times.values()] + [bucket(w) for w in stored_times.values()]
    size = (max(ends) + 1) if ends else 0
    acked, stored, lags = [0] * size, [0] * size, [[] for _ in range(size)]
    for key, when in ack_times.items():
        acked[bucket(when)] += 1
        if key in stored_times:
            lags[bucket(when)].append(stored_times[key] - when)
    for when in stored_times.values():
        stored[bucket(when)] += 1
    return {
        "bucket_s": TIMELINE_BUCKET_S,
        "acked": acked,
        "stored": stored,
        "lag_p50_s": [percentile(v, 0.5) if v else None for v in lags],
        "lag_max_s": [max(v) if v else None for v in lags],
    }


def make_jids(count, after=None):
    """``count`` distinct Salt jids (UTC ``YYYYMMDDhhmmssffffff``), all later than ``after``."""
    base = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    if after is not None:
        base = max(base, datetime.datetime.strptime(after, "%Y%m%d%H%M%S%f") + datetime.timedelta(microseconds=1))
    return [(base + datetime.timedelta(microseconds=i)).strftime("%Y%m%d%H%M%S%f") for i in range(count)]


# --- one run of one variant ---------------------------------------------------------------------


class Bench:
    def __init__(self, name, args, key_dir, ids):
        self.name = name
        self.spec = VARIANTS[name]
        self.args = args
        self.key_dir = key_dir
        self.ids = ids
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="hl-", dir="/tmp"))
        self.logs = self.root / "logs"
        self.master = self.master_proc = self.worker = self.minion = None
        self.daemons = salt_daemons.Daemons(self.logs)  # <name>.console; the worker's is its log
        self.local = None
        self.senders = []  # (process, conn)
        self.mysql_db = self.relay_db = None
        self.database_url = self.reader = None
        self.queue = brokers.unique_queue("headline") if self.spec.get("broker") else None
        self.mminion = None
        self.engine_pid = None
        self.stamps = {}
        self.last_jid = None
        self.db_pids = processes.find(names={"mariadbd", "mysqld"})

    # -- setup ----------------------------------------------------------------------------------

    def start(self):
        self.logs.mkdir(parents=True, exist_ok=True)
        cache = self.spec["cache"]
        config = {"log_level_logfile": "warning", "auto_accept": False, "master_job_cache": cache}
        if cache == "noop_cache":
            config["returner_dirs"] = [str(NOOP_DIR)]
        elif cache == "mysql":
            import _saltext_mysql

            with databases.mysql_admin() as admin:
                self.mysql_db = _saltext_mysql.create_database(admin)
            config.update(_saltext_mysql.opts(self.mysql_db))
        elif cache == "relay":
            if self.spec["db"] == "mariadb":
                self.relay_db = databases.create_database("mysql", "relay_bench_headline")
                self.database_url = databases.server_url("mysql", self.relay_db)
            else:
                self.database_url = f"sqlite:///{self.root / 'relay.db'}"
            from salt_engine_lib.store import Store

            Store(self.database_url).ensure_schema()  # schema, before the master
            self.reader = databases.Reader(self.database_url)
            relay = {"database_url": self.database_url}
            if self.spec.get("broker"):
                relay.update(broker_url=self.spec["broker"], queue=self.queue, dead_letter_queue=f"{self.queue}.dlq")
            config["engines"] = [{"relay": {}}]
            config["relay"] = relay
        self.master = salt_daemons.Master(self.root / "master", MASTER_ID, **config, **self.args.master_opts).write()
        salt_keys.accept_keys(self.master.opts["pki_dir"], self.key_dir, self.ids + [PING_MINION])
        minion_dir = self.root / "minion"
        minion = salt_daemons.Minion(
            minion_dir,
            PING_MINION,
            self.master,
            pki_dir=str(salt_keys.minion_pki(minion_dir / "pki", self.key_dir, PING_MINION)),
            log_level_logfile="warning",
        ).write()
        log(f"{self.name}: starting salt-master in {self.root}")
        self.master_proc = self.daemons.start("master", self.master.argv())
        if self.spec.get("broker"):
            self.worker = self.daemons.start("worker", self.master.worker_argv(level="warning"))
        # ping2x (the bottleneck check) needs twice the senders; the others only --senders.
        # Spawned now: their imports overlap the master's start; they sign in once it answers.
        self._spawn_senders(self.args.senders * (2 if self.name in self.args.check_variants else 1))
        self.master.wait_until_listening(self.master_proc, timeout=120)
        self.minion = self.daemons.start("minion", minion.argv())
        if cache == "relay":
            stats = engine_stats.wait_until_running(self.master.opts, timeout=120, check=self.daemons.check)
            self.engine_pid = stats["pid"]
            log(f"{self.name}: relay engine up (pid {stats['pid']}, {stats['mode']} mode)")
        self._wait_senders()
        import salt.config
        import salt.minion

        self.opts = salt.config.master_config(str(self.master.config_file))
        self.mminion = salt.minion.MasterMinion(self.opts, states=False, rend=False, matcher=False)
        self.master.wait_for_minions([PING_MINION], timeout=120, check=self.daemons.check)
        import salt.client

        self.local = salt.client.LocalClient(mopts=self.opts)
        # Warm-up (not measured): every MWorker loads the job cache, every channel sends once.
        self.phase("warmup", "ping", len(self.senders), len(self.senders) * len(self.ids) * 2, measure=False)

    def _time_pings(self, done, out):
        """`salt hl-ping-minion test.ping` every PING_INTERVAL_S until ``done``: (seconds, answered)."""
        while not done.is_set():
            start = time.perf_counter()
            try:
                answered = self.local.cmd(PING_MINION, "test.ping", timeout=30).get(PING_MINION) is True
            except Exception:  # a ping that failed is one not answered
                answered = False
            out.append((time.perf_counter() - start, answered))
            done.wait(PING_INTERVAL_S)

    def _spawn_senders(self, count):
        self.spawned_at = time.monotonic()
        ctx = multiprocessing.get_context("spawn")
        for index in range(count):
            parent, child = ctx.Pipe()
            spec = {
                "index": index,
                "ids": self.ids,
                "key_dir": str(self.key_dir),
                "pki_base": str(self.root / "mpki" / f"s{index}"),
                "cachedir": str(self.root / "mcache" / f"s{index}"),
                "ret_port": self.master.ret_port,
                "state_kb": self.args.state_kb,
                "timeout": self.args.request_timeout,
                "channels_per_minion": self.args.channels,
            }
            proc = ctx.Process(target=driver.sender_main, args=(child, spec), daemon=True)
            proc.start()
            self.senders.append((proc, parent))

    def _wait_senders(self):
        started, count = self.spawned_at, len(self.senders)
        timings = []
        for proc, conn in self.senders:
            if not conn.poll(300):
                raise RuntimeError(f"sender {proc.pid} did not sign in within 300 s")
            reply = conn.recv()
            if "fatal" in reply:
                raise RuntimeError(f"sender {proc.pid}: {reply['fatal']}")
            if reply["auth_errors"]:
                raise RuntimeError(f"sender {proc.pid}: sign-in failed: {list(reply['auth_errors'].items())[:3]}")
            timings.append(f"{reply['setup_seconds']:.1f}+{reply['auth_seconds']:.1f}")
        log(
            f"{self.name}: {count} senders x {len(self.ids)} minions signed in ({time.monotonic() - started:.1f} s; "
            f"per sender channel setup + sign-in s: {', '.join(timings)})"
        )

    # -- publishing, counting -------------------------------------------------------------------

    def publish(self, jids, payload):
        cache = self.spec["cache"]
        prep, save = self.mminion.returners[f"{cache}.prep_jid"], self.mminion.returners[f"{cache}.save_load"]
        fun = "test.ping" if payload == "ping" else "state.apply"
        for jid in jids:
            load = {
                "cmd": "publish",
                "tgt": "hl-minion-*",
                "tgt_type": "glob",
                "fun": fun,
                "arg": [],
                "ret": "",
                "jid": jid,
                "user": "root",
                "kwargs": {"show_timeout": True, "show_jid": False, "delimiter": ":"},
            }
            prep(nocache=False, passed_jid=jid)
            save(jid, load, list(self.ids))

    def stored_pairs(self, jids):
        """({(jid, minion): rows}, {(jid, minion): stored_at epoch}) or (None, None) when not countable."""
        cache = self.spec["cache"]
        lo, hi = min(jids), max(jids)
        if cache == "noop_cache":
            return None, None
        if cache == "local_cache":
            pairs = {}
            hash_type = self.opts.get("hash_type", "sha256")
            for jid in jids:
                digest = hashlib.new(hash_type, jid.encode()).hexdigest()
                jdir = self.master.cachedir / "jobs" / digest[:2] / digest[2:]
                for mid in self.ids:
                    if (jdir / mid / "return.p").exists():
                        pairs[(jid, mid)] = 1
            return pairs, None
        if cache == "mysql":
            with databases.mysql_admin() as conn, conn.cursor() as cursor:
                cursor.execute(
                    f"SELECT jid, id, COUNT(*) FROM `{self.mysql_db}`.salt_returns WHERE jid >= %s AND jid <= %s GROUP BY jid, id", (lo, hi)
                )
                return {(jid, mid): n for jid, mid, n in cursor.fetchall()}, None
        rows = self.reader.rows("SELECT jid, minion_id, stored_at, document FROM returns WHERE jid >= :lo AND jid <= :hi", lo=lo, hi=hi)
        self.stamps = {}
        for row in rows:
            # ``_stamp``: when the master's MWorker fired the return's event, just before
            # it called the job cache (``salt.utils.job.store_job``): the acceptance time.
            with contextlib.suppress(Exception):  # a return without a usable _stamp has no acceptance time
                document = json.loads(row[3]) if isinstance(row[3], (str, bytes)) else row[3]
                self.stamps[(row[0], row[1])] = (
                    datetime.datetime.fromisoformat(document["_stamp"]).replace(tzinfo=datetime.timezone.utc).timestamp()
                )
        return {(r[0], r[1]): 1 for r in rows}, {(r[0], r[1]): databases.epoch(r[2]) for r in rows}

    def settle(self, jids, acked):
        """Poll until the stored returns stop changing (relay writes behind); the last (pairs, times)."""
        if self.spec["cache"] != "relay":
            return self.stored_pairs(jids)
        deadline = time.monotonic() + self.args.settle_timeout
        last, changed_at = None, time.monotonic()
        while True:
            pairs, times = self.stored_pairs(jids)
            if len(pairs) >= acked:
                return pairs, times
            if last is None or len(pairs) != last:
                last, changed_at = len(pairs), time.monotonic()
            if time.monotonic() - changed_at > self.args.settle or time.monotonic() > deadline:
                log(f"{self.name}: stored {len(pairs)} of {acked} acknowledged returns and no progress; counting now")
                return pairs, times
            time.sleep(0.25)

    # -- one phase ------------------------------------------------------------------------------

    def phase(self, label, payload, senders, returns, measure=True):
        n = len(self.ids)
        jobs = -(-returns // n)
        jids = make_jids(jobs, self.last_jid)
        self.last_jid = jids[-1]
        self.publish(jids, payload)
        active = self.senders[:senders]
        share = [jids[k::senders] for k in range(senders)]
        master_pids = lambda: [self.master_proc.pid] + processes.tree(self.master_proc.pid)  # noqa: E731
        worker_pids = lambda: ([self.worker.pid] + processes.tree(self.worker.pid)) if self.worker else []  # noqa: E731
        cpu_of = processes.cpu_seconds
        load1 = os.getloadavg()[0]
        engine_pids = [self.engine_pid] if self.engine_pid else []
        cpu0 = (cpu_of(master_pids()), cpu_of(worker_pids()), cpu_of(self.db_pids), cpu_of(engine_pids))
        t0 = time.time() + 0.3
        for (_, conn), mine in zip(active, share):
            conn.send({"cmd": "send", "jids": mine, "payload": payload, "t0": t0})
        pings, pings_done = [], threading.Event()
        pinger = threading.Thread(target=self._time_pings, args=(pings_done, pings), daemon=True) if measure else None
        if pinger:
            pinger.start()
        replies = []
        for proc, conn in active:
            if not conn.poll(self.args.request_timeout + 600):
                raise RuntimeError(f"sender {proc.pid} did not finish the {label} phase")
            reply = conn.recv()
            if "fatal" in reply:
                raise RuntimeError(f"sender {proc.pid}: {reply['fatal']}")
            replies.append(reply)
        cpu_sent = (cpu_of(master_pids()),)
        if pinger:
            pings_done.set()
            pinger.join(60)
        acked = sum(r["acked"] for r in replies)
        failed = sum(r["failed"] for r in replies)
        last_ack = max(r["last_ack"] for r in replies)
        wall = last_ack - t0
        if not measure:
            return None
        ack_times = {}
        for k, reply in enumerate(replies):
            for j_index, m_index, when in reply["acks"]:
                ack_times[(share[k][j_index], self.ids[m_index])] = when
        pairs, times = self.settle(jids, acked)
        settled = time.time()
        cpu1 = (cpu_of(master_pids()), cpu_of(worker_pids()), cpu_of(self.db_pids), cpu_of(engine_pids))
        errors = {}
        for reply in replies:
            for key, count in reply["errors"].items():
                errors[key] = errors.get(key, 0) + count
        result = {
            "phase": label,
            "payload": payload,
            "senders": senders,
            "in_flight": senders * n * self.args.channels,
            "jobs": jobs,
            "sent": jobs * n,
            "acked": acked,
            "failed": failed,
            "send_errors": errors,
            "wall_s": wall,
            "returns_per_s": acked / wall if wall > 0 else None,
            "settle_s": settled - last_ack,
            "loadavg_1m": load1,
            "sender_cpu_s": [r["cpu"] for r in replies],
            "sender_cpu_util": [r["cpu"] / r["wall"] if r["wall"] else None for r in replies],
        }
        per_k = 1000.0 / acked if acked else None
        master_cpu = processes.cpu_delta(cpu0[0], cpu1[0])
        result["master_cpu_s"] = master_cpu
        result["master_cpu_s_during_send"] = processes.cpu_delta(cpu0[0], cpu_sent[0])
        result["master_cores_during_send"] = result["master_cpu_s_during_send"] / wall if wall > 0 else None
        result["master_cpu_per_1k"] = master_cpu * per_k if per_k else None
        result["worker_cpu_per_1k"] = processes.cpu_delta(cpu0[1], cpu1[1]) * per_k if (per_k and self.worker) else None
        result["engine_cpu_per_1k"] = processes.cpu_delta(cpu0[3], cpu1[3]) * per_k if (per_k and engine_pids) else None
        result["db_cpu_per_1k"] = processes.cpu_delta(cpu0[2], cpu1[2]) * per_k if (per_k and self.db_pids) else None
        if pairs is None:
            result.update(stored=None, lost=None, doubled=None, unacked_stored=None)
        else:
            result["stored"] = sum(1 for key in ack_times if key in pairs)
            result["lost"] = len(ack_times) - result["stored"]
            result["doubled"] = sum(count - 1 for count in pairs.values())
            result["unacked_stored"] = sum(1 for key in pairs if key not in ack_times)
        if times:
            lags = [times[key] - when for key, when in ack_times.items() if key in times]
            result["lag_p50_s"] = percentile(lags, 0.5)
            result["lag_p99_s"] = percentile(lags, 0.99)
            result["lag_max_s"] = max(lags) if lags else None
            stamped = [times[key] - self.stamps[key] for key in ack_times if key in times and key in self.stamps]
            result["lag_stamp_p50_s"] = percentile(stamped, 0.5)
            result["lag_stamp_p99_s"] = percentile(stamped, 0.99)
            result["lag_stamp_max_s"] = max(stamped) if stamped else None
        result["timeline"] = timeline(t0, ack_times, times or {})
        answered = [seconds for seconds, ok in pings if ok]
        result["pings"] = len(pings)
        result["pings_unanswered"] = len(pings) - len(answered)
        result["ping_latency_p50_s"] = percentile(answered, 0.5)
        result["ping_latency_max_s"] = max(answered) if answered else None
        log(
            f"{self.name} {label}: {acked}/{jobs * n} acked ({failed} failed) in {wall:.2f} s = "
            f"{result['returns_per_s']:.0f}/s, master {result['master_cpu_per_1k']:.2f} CPU-s/1k, "
            f"stored {result.get('stored')} lost {result.get('lost')} doubled {result.get('doubled')}"
            + (
                f", lag from ack p50 {result['lag_p50_s']:.3f} s p99 {result['lag_p99_s']:.3f} s"
                if result.get("lag_p50_s") is not None
                else ""
            )
            + (
                f", from _stamp p50 {result['lag_stamp_p50_s']:.3f} s p99 {result['lag_stamp_p99_s']:.3f} s"
                if result.get("lag_stamp_p50_s") is not None
                else ""
            )
            + f" (load {load1:.1f})"
        )
        return result

    # -- end of run -----------------------------------------------------------------------------

    def list_jobs_filter(self):
        started = time.monotonic()
        proc = subprocess.run(
            [salt_daemons.program("salt-run"), "-c", str(self.master.dir), "--out", "json", "jobs.list_jobs_filter", "50"],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        wall = time.monotonic() - started
        try:
            listed = len(json.loads(proc.stdout))
        except ValueError:
            listed = None
        return {
            "wall_s": wall,
            "returncode": proc.returncode,
            "listed": listed,
            "stderr": proc.stderr.strip()[-500:] if proc.returncode else "",
        }

    def log_problems(self):
        found = {"ERROR": 0, "CRITICAL": 0, "Traceback": 0}
        first = []
        logs = [self.daemons.console("master"), self.daemons.console("worker")] + ([self.master.log_file] if self.master else [])
        for path in logs:
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                for mark in found:
                    if f"[{mark}" in line or (mark == "Traceback" and line.startswith("Traceback")):
                        found[mark] += 1
                        if len(first) < 8 and line[24:] not in {f[1][24:] for f in first}:
                            first.append((path.name, line[:400]))
        relay_dead = list(paths.dead_letters(self.master.opts).glob("*.jsonl")) if self.master else []
        return {"counts": found, "first": first, "relay_dead_letter_files": [p.name for p in relay_dead]}

    def stop(self):
        for _proc, conn in self.senders:
            with contextlib.suppress(Exception):  # a sender that died cannot be told
                conn.send({"cmd": "quit"})
        for proc, _ in self.senders:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        self.daemons.stop(30, timeouts={"master": 40}, report=log)

    def cleanup(self):
        # Teardown goes on past any failure: each step below must still run.
        if self.reader is not None:
            self.reader.dispose()
        if self.mminion is not None:
            with contextlib.suppress(Exception):
                self.mminion.destroy()
            self.mminion = None
        for name in (self.mysql_db, self.relay_db):
            if name:
                try:
                    databases.drop_database("mysql", name)
                except Exception as err:
                    log(f"could not drop database {name}: {err}")
        if self.queue:
            try:
                brokers.delete_queues(self.spec["broker"], self.queue, f"{self.queue}.dlq")
            except Exception as err:
                log(f"could not delete queue {self.queue}: {err}")
        if not self.args.keep:
            shutil.rmtree(self.root, ignore_errors=True)


def run_variant(name, args, key_dir, ids, run_index):
    bench = Bench(name, args, key_dir, ids)
    out = {"variant": name, "run": run_index, "root": str(bench.root), "phases": {}}
    try:
        bench.start()
        for payload in PAYLOADS:
            out["phases"][payload] = bench.phase(payload, payload, args.senders, args.returns)
        if name in args.check_variants:
            out["phases"]["ping2x"] = bench.phase("ping2x", "ping", 2 * args.senders, args.returns)
        out["list_jobs_filter"] = bench.list_jobs_filter()
        log(
            f"{name}: salt-run jobs.list_jobs_filter 50: {out['list_jobs_filter']['wall_s']:.2f} s, "
            f"rc {out['list_jobs_filter']['returncode']}, {out['list_jobs_filter']['listed']} jobs"
        )
    except Exception as err:  # reported in the JSON; the next variant runs
        out["error"] = f"{type(err).__name__}: {err}"
        log(f"{name}: FAILED: {out['error']}")
    finally:
        # A SIGTERM now (see main) must not cut the teardown short: the temp root is only
        # removed once the master and the worker are stopped.
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            bench.stop()
            out["log"] = bench.log_problems()
            if out["log"]["counts"]["ERROR"] or out["log"]["counts"]["CRITICAL"] or out["log"]["counts"]["Traceback"]:
                log(f"{name}: log problems {out['log']['counts']}: {out['log']['first'][:3]}")
            bench.cleanup()
        finally:
            signal.signal(signal.SIGTERM, previous)
    return out


# --- report --------------------------------------------------------------------------------------


def summarize(results, variants):
    summary = {}
    for name in variants:
        runs = [r for r in results if r["variant"] == name and "error" not in r]
        entry = {"runs": len(runs), "failed_runs": sum(1 for r in results if r["variant"] == name and "error" in r)}
        for phase in ("ping", "state", "ping2x"):
            rows = [r["phases"][phase] for r in runs if r["phases"].get(phase)]
            if not rows:
                continue
            entry[phase] = {
                key: median([row.get(key) for row in rows])
                for key in (
                    "returns_per_s",
                    "master_cpu_per_1k",
                    "engine_cpu_per_1k",
                    "worker_cpu_per_1k",
                    "db_cpu_per_1k",
                    "lag_p50_s",
                    "lag_p99_s",
                    "lag_stamp_p50_s",
                    "lag_stamp_p99_s",
                    "ping_latency_p50_s",
                    "ping_latency_max_s",
                    "loadavg_1m",
                    "settle_s",
                    "master_cores_during_send",
                )
            }
            for key in ("acked", "failed", "stored", "lost", "doubled", "sent", "pings", "pings_unanswered"):
                values = [row.get(key) for row in rows]
                entry[phase][key] = None if any(v is None for v in values) else sum(values)
            entry[phase]["sender_cpu_util_max"] = max(max(u for u in row["sender_cpu_util"] if u is not None) for row in rows)
        ljf = [r["list_jobs_filter"] for r in runs if r.get("list_jobs_filter")]
        entry["list_jobs_filter_s"] = median([x["wall_s"] for x in ljf])
        entry["list_jobs_filter_listed"] = [x["listed"] for x in ljf]
        entry["list_jobs_filter_rc"] = [x["returncode"] for x in ljf]
        entry["log_errors"] = sum(
            r["log"]["counts"]["ERROR"] + r["log"]["counts"]["CRITICAL"] for r in results if r["variant"] == name and r.get("log")
        )
        summary[name] = entry
    return summary


def _fmt(value, spec=".0f", none="-"):
    return none if value is None else format(value, spec)


def _difference(total, part):
    return None if total is None or part is None else total - part


def _ratio(value, base):
    return None if value is None or not base else value / base


def table(summary):
    lines = []
    head = (
        "| variant | payload | returns/s | x no-op | x saltext-mysql | master CPU-s /1k | x no-op | x saltext-mysql "
        "| of which relay engine | worker CPU-s /1k | mariadbd CPU-s /1k | acked (of sent), sum of runs | stored | lost | doubled "
        "| lag p50 / p99 (s) from `_stamp` | from sender ack | `test.ping` p50 / max (s), answered of sent |"
    )
    lines.append(head)
    lines.append("|" + " --- |" * (head.count("|") - 1))
    for payload in PAYLOADS:
        base = summary.get("noop", {}).get(payload, {})
        ref = summary.get("saltext_mysql", {}).get(payload, {})
        for name, entry in summary.items():
            row = entry.get(payload)
            if not row:
                lines.append(f"| {VARIANTS[name]['label']} | {payload} | failed | | | | | | | | | | | | | | | |")
                continue
            lag = "-" if row.get("lag_p50_s") is None else f"{row['lag_p50_s']:.2f} / {row['lag_p99_s']:.2f}"
            lag_stamp = "-" if row.get("lag_stamp_p50_s") is None else f"{row['lag_stamp_p50_s']:.2f} / {row['lag_stamp_p99_s']:.2f}"
            stored = "n/a" if row["stored"] is None else str(row["stored"])
            lost = "n/a" if row["lost"] is None else str(row["lost"])
            doubled = "n/a" if row["doubled"] is None else str(row["doubled"])
            if name.startswith("relay") and row["doubled"] is not None:
                doubled += " (PK)"
            if name == "local_cache" and row["doubled"] is not None:
                doubled = "n/a"
            lines.append(
                f"| {VARIANTS[name]['label']} | {payload} | {_fmt(row['returns_per_s'])} "
                f"| {_fmt(_ratio(row['returns_per_s'], base.get('returns_per_s')), '.3f')} "
                f"| {_fmt(_ratio(row['returns_per_s'], ref.get('returns_per_s')), '.3f')} "
                f"| {_fmt(row['master_cpu_per_1k'], '.2f')} "
                f"| {_fmt(_ratio(row['master_cpu_per_1k'], base.get('master_cpu_per_1k')), '.3f')} "
                f"| {_fmt(_ratio(row['master_cpu_per_1k'], ref.get('master_cpu_per_1k')), '.3f')} "
                f"| {_fmt(row['engine_cpu_per_1k'], '.2f')} | {_fmt(row['worker_cpu_per_1k'], '.2f')} | {_fmt(row['db_cpu_per_1k'], '.2f')} "
                f"| {row['acked']} ({row['sent']}) | {stored} | {lost} | {doubled} | {lag_stamp} | {lag} "
                f"| {_fmt(row.get('ping_latency_p50_s'), '.2f')} / {_fmt(row.get('ping_latency_max_s'), '.2f')}, "
                f"{_fmt(_difference(row.get('pings'), row.get('pings_unanswered')))} of {_fmt(row.get('pings'))} |"
            )
    lines.append("")
    lines.append(
        "| variant | ping returns/s, S senders | 2S senders (2x in flight) | ratio | master cores used, S / 2S "
        "| max sender CPU use | `salt-run jobs.list_jobs_filter 50` (s) | jobs listed | master log ERROR+CRITICAL |"
    )
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, entry in summary.items():
        one, two = entry.get("ping") or {}, entry.get("ping2x") or {}
        util = max([u for u in (one.get("sender_cpu_util_max"), two.get("sender_cpu_util_max")) if u is not None], default=None)
        lines.append(
            f"| {VARIANTS[name]['label']} | {_fmt(one.get('returns_per_s'))} | {_fmt(two.get('returns_per_s'))} "
            f"| {_fmt(_ratio(two.get('returns_per_s'), one.get('returns_per_s')), '.3f')} "
            f"| {_fmt(one.get('master_cores_during_send'), '.2f')} / {_fmt(two.get('master_cores_during_send'), '.2f')} "
            f"| {_fmt(util, '.0%')} "
            f"| {_fmt(entry.get('list_jobs_filter_s'), '.2f')} | {entry.get('list_jobs_filter_listed')} | {entry['log_errors']} |"
        )
    return "\n".join(lines)


def _ratio_text(value, limit, word):
    """``value`` with 3 decimals, more if 3 would read as the other side of ``limit``."""
    met = value >= limit if word == ">=" else value <= limit
    for digits in range(3, 10):
        text = f"{value:.{digits}f}"
        shown = float(text)
        if met == (shown >= limit if word == ">=" else shown <= limit):
            return text
    return repr(value)


def targets(summary):
    """Issue #9's targets per relay variant and payload, judged on the unrounded ratios."""
    checks = []
    for payload in PAYLOADS:
        base = summary.get("noop", {}).get(payload) or {}
        for name, entry in summary.items():
            row = entry.get(payload)
            if not name.startswith("relay") or not row:
                continue
            for key, limit, word in (("returns_per_s", TARGET_RATE_RATIO, ">="), ("master_cpu_per_1k", TARGET_CPU_RATIO, "<=")):
                value = _ratio(row.get(key), base.get(key))
                met = None if value is None else (value >= limit if word == ">=" else value <= limit)
                checks.append(
                    {
                        "variant": name,
                        "payload": payload,
                        "measure": key,
                        "ratio_to_noop": value,
                        "target": f"{word} {limit:.2f}",
                        "met": met,
                        "text": "-" if value is None else _ratio_text(value, limit, word),
                    }
                )
    return checks


def targets_text(checks):
    lines = [
        "| variant | payload | returns/s x no-op (target >= 0.95) | met | master CPU /1k x no-op (target <= 1.10) | met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    by_row = {}
    for check in checks:
        by_row.setdefault((check["variant"], check["payload"]), {})[check["measure"]] = check
    for (name, payload), row in by_row.items():
        rate, cpu = row.get("returns_per_s", {}), row.get("master_cpu_per_1k", {})
        verdict = {True: "yes", False: "**no**", None: "-"}
        lines.append(
            f"| {VARIANTS[name]['label']} | {payload} | {rate.get('text', '-')} | {verdict[rate.get('met')]} "
            f"| {cpu.get('text', '-')} | {verdict[cpu.get('met')]} |"
        )
    met = [c for c in checks if c["met"]]
    lines.append("")
    lines.append(
        f"Targets met (unrounded ratios): {len(met)} of {len(checks)}"
        + (": " + ", ".join(f"{c['variant']} {c['payload']} {c['measure']}" for c in met) if met else "")
        + "."
    )
    return "\n".join(lines)


def machine():
    """The machine and the Salt measured (the JSON's ``machine``, printed with the table)."""
    info = {key: value for key, value in _results.machine().items() if key != "platform"}
    found = _results.versions("saltext.mysql")
    info["salt"] = found["salt"]
    if "saltext.mysql" in found:
        info["saltext.mysql"] = found["saltext.mysql"]
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per variant; the table shows medians (default 3)")
    parser.add_argument("--returns", type=int, default=3000, help="returns per variant and payload (default 3000)")
    parser.add_argument("--minions", type=int, default=None, help="minion ids, each with its own key (default 50; --quick: 10)")
    parser.add_argument("--senders", type=int, default=2, help="sender processes; ping2x uses twice as many (default 2)")
    parser.add_argument(
        "--channels",
        type=int,
        default=4,
        help="request channels per minion id in each sender (requests in flight = senders x minions x channels; default 4)",
    )
    parser.add_argument("--state-kb", type=int, default=20, help="size of the state payload (default 20 KB)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument(
        "--check-variants",
        default=None,
        help="variants that also run ping2x, the bottleneck check (default: noop,relay_rabbitmq; --quick: noop)",
    )
    parser.add_argument("--request-timeout", type=int, default=300, help="seconds before a send counts as failed")
    parser.add_argument("--settle", type=float, default=20.0, help="relay: seconds without new rows before counting")
    parser.add_argument("--settle-timeout", type=float, default=300.0)
    parser.add_argument("--quick", action="store_true", help="1 run, 400 returns, 10 minions, ping2x on noop only")
    _results.add_json_argument(parser, "headline")
    parser.add_argument(
        "--master-opt",
        action="append",
        default=[],
        metavar="KEY=YAML",
        help="extra master config for every variant, e.g. master_async_mworker=true (repeatable)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp roots (logs) for inspection")
    args = parser.parse_args(argv)
    try:
        args.master_opts = salt_daemons.parse_opts(args.master_opt)
    except ValueError as err:
        parser.error(str(err))
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}")
    if args.quick:
        args.runs = 1
        args.returns = min(args.returns, 400)
        args.settle = min(args.settle, 10.0)
        args.minions = args.minions or 10
    args.minions = args.minions or 50
    if args.check_variants is None:
        # The ceiling and one relay variant: enough to show the senders are not the limit,
        # and it keeps --runs 3 under 20 minutes.
        args.check_variants = "noop" if args.quick else "noop,relay_rabbitmq"
    args.check_variants = {v.strip() for v in args.check_variants.split(",")}

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # stop early, clean up, report what finished
    args.json = _results.json_path(args, "headline", args.quick)
    recorder = _results.Recorder("headline")
    started = time.time()
    info = machine()
    log(f"machine: {info}; load {os.getloadavg()[0]:.1f}")
    keys_root = pathlib.Path(tempfile.mkdtemp(prefix="hl-keys-", dir="/tmp"))
    ids = driver.minion_ids(args.minions)
    results = []
    try:
        t = time.monotonic()
        salt_keys.generate_keys(keys_root, ids + [PING_MINION])
        log(f"{len(ids)} minion key pairs generated in {time.monotonic() - t:.1f} s")
        for run_index in range(args.runs):
            for name in variants:
                results.append(run_variant(name, args, keys_root, ids, run_index))
                if args.json:  # after every variant run, so an interrupted run leaves what it measured
                    write_json(args, recorder, info, results, variants, partial=True)
    except KeyboardInterrupt:
        log("interrupted: reporting what finished")
    finally:
        shutil.rmtree(keys_root, ignore_errors=True)
    summary = summarize(results, variants)
    text = table(summary)
    elapsed = time.time() - started
    print(
        f"\nHeadline benchmark: {args.runs} run(s), {args.returns} returns per variant and payload, "
        f"{args.minions} minions, {args.senders} senders ({2 * args.senders} for ping2x), {args.state_kb} KB state "
        f"payload, medians; {elapsed / 60:.1f} min; machine {info}\n"
    )
    print(text)
    print("\nIssue #9's targets, on the unrounded ratios of the medians:\n")
    print(targets_text(targets(summary)))
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"\nFAILED {r['variant']} run {r['run']}: {r['error']}")
    if args.json:
        write_json(args, recorder, info, results, variants, partial=False)
    return 1 if failed else 0


def write_json(args, recorder, info, results, variants, partial):
    summary = summarize(results, variants)
    checks = targets(summary)
    recorder.write(
        args.json,
        args,
        machine=info,
        partial=partial,
        summary=summary,
        targets=checks,
        table=table(summary),
        targets_table=targets_text(checks),
        runs=results,
    )


if __name__ == "__main__":
    sys.exit(main())
