"""Embedded default (no broker): the candidates for "bus batch -> SQLite rows", measured (issue #4).

Run it from the repository root::

    python benchmarks/archive/embedded_candidates.py                 # 50,000 events, 3 runs
    python benchmarks/archive/embedded_candidates.py --quick         # smoke run: 5,000 events, 1 run, < 60 s
    python benchmarks/archive/embedded_candidates.py --events 20000 --runs 5 --only a,b

The same workload goes through each candidate: ``--events`` ping-sized job
returns (100 minions per jid; tag ``salt/job/<jid>/ret/<minion>``, data
``{fun, id, jid, return, retcode, success}``, what ``records.rows_from_event``
gets from the bus) in batches of ``--batch`` (500), built before the clock
starts, pushed by a producer (the engine loop) as fast as it can, and stored by
``Store.write_batch`` in a fresh SQLite file (WAL, synchronous=NORMAL, as the
store configures it):

a  journal + forwarder (the current design): ``forwarder.Forwarder(spool dir,
   StoreSink(Store), max_bytes=1 GiB)``; the producer calls ``submit(events,
   "master-1")`` (msgpack encode + one append to the spool); the forwarder
   thread writes 20 journaled batches per transaction and forgets them after
   the commit.
b  Kombu's SQLAlchemy transport on a SQLite file (``sqla+sqlite:////.../broker.db``):
   the producer publishes ``message.encode`` bodies (kombu Producer); a consumer
   thread (kombu Consumer, prefetch ``--prefetch``) decodes each message, writes
   it with ``Store.write_batch`` and acks after the commit.
c  Kombu's filesystem transport (``filesystem://``, data_folder_in/out,
   processed_folder, control_folder in the temporary directory), likewise
   (store_processed stays off, as it would in production: Kombu then moves a
   message it reads to $TMPDIR and deletes it, processed_folder stays empty).
d  no journal: the producer builds the rows and calls ``Store.write_batch``
   itself (floor of the producer's cost, ceiling of the throughput).

Measured per run: end-to-end events/s (producer start -> the commit that made
the count reach ``--events``, taken by the consumer right after that commit;
the ``returns`` and ``events`` row counts are checked afterwards), the
producer's cost per batch (what the engine loop pays per hand-off, median and
p99 in microseconds), the bytes between producer and SQLite (spool / broker
files, sampled every 20 ms: peak, and what is left once everything is stored),
and events lost with no process killed (submitted, never stored: the wait
gives up after ``--stall`` seconds without a commit and counts the rows).
Kombu's virtual transports poll when their queue is empty; their
``polling_interval`` (default 1 s) is set to ``--poll`` (0.1 s) here.

Durability, per candidate and run: a child process (fork) submits 20 batches
(10,000 events) and is SIGKILLed by itself as soon as its 20th submit returned,
so all 10,000 events were acknowledged to it. Then a fresh consumer/forwarder
in this process drains what is left and the script counts how many of the
10,000 reached SQLite. Two ways to die:

producer killed   the child is the producer only (for a, the forwarder thread
                  is not started: every event must come back from the journal;
                  for b and c no consumer runs in the child).
engine killed     the child is the whole embedded engine: producer and
                  consumer (a: forwarder thread; b, c: consumer thread) in one
                  process, as the engine runs them in the salt-master.

The tables show medians over ``--runs`` (durability: the smallest count over
the runs, and how many rows were already in SQLite when the child died).
Everything lives in one temporary directory, deleted at the end. A full run writes
``benchmarks/results/embedded_candidates.json`` (every run, the medians, the
durability counts, the load average at start and end; ``--json PATH`` elsewhere,
``--json -`` nowhere, a ``--quick`` run none unless given; see ``_results.py``).
"""

import argparse
import multiprocessing
import os
import pathlib
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time

# Archived (see README.md here): the repository root and benchmarks/ (for _results).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import _results  # noqa: E402
import kombu  # noqa: E402
import kombu.transport.sqlalchemy as kombu_sqla  # noqa: E402

from salt_engine_lib import broker, forwarder, message, records  # noqa: E402
from salt_engine_lib.store import Store, connection, queries  # noqa: E402

MASTER_ID = "master-1"
QUEUE = "relay"
MINIONS_PER_JOB = 100
DURABILITY_BATCHES = 20
LABELS = {
    "a": "a journal+forwarder (current)",
    "b": "b kombu sqla+sqlite",
    "c": "c kombu filesystem",
    "d": "d direct write, no journal",
}


# -- workload -------------------------------------------------------------------


def make_batches(count, batch_size, jid_base):
    """``count`` ping returns as bus (tag, data) pairs, in batches."""
    events = []
    for index in range(count):
        jid = str(jid_base + index // MINIONS_PER_JOB)
        minion = f"minion-{index % MINIONS_PER_JOB:03d}"
        data = {"fun": "test.ping", "id": minion, "jid": jid, "return": True, "retcode": 0, "success": True}
        events.append((f"salt/job/{jid}/ret/{minion}", data))
    return [events[i : i + batch_size] for i in range(0, count, batch_size)]


def tree_bytes(*paths):
    total = 0
    for path in paths:
        for root, _dirs, files in os.walk(path):
            for name in files:
                try:
                    total += os.stat(os.path.join(root, name)).st_size
                except FileNotFoundError:
                    pass
    return total


def files_bytes(*paths):
    total = 0
    for path in paths:
        try:
            total += os.stat(path).st_size
        except FileNotFoundError:
            pass
    return total


def store_rows(store):
    counts = store.read(queries.counts)
    return counts["returns"], counts["events"]


def rows_of(batch_events, master_id):
    jobs, returns, events = [], [], []
    for tag, data in batch_events:
        new_jobs, new_returns, new_events, _ = records.rows_from_event(tag, data, master_id)
        jobs += new_jobs
        returns += new_returns
        events += new_events
    return jobs, returns, events


# -- candidates -----------------------------------------------------------------


class Candidate:
    """One pipeline in ``workdir``: ``open`` (untimed setup), ``start`` (consumer),
    ``submit`` (the producer's hand-off), ``stop``; ``committed`` events and the
    ``committed_at`` perf_counter of the latest commit, set by whoever commits."""

    def __init__(self, workdir, options):
        self.workdir = pathlib.Path(workdir)
        self.options = options
        self.db_url = f"sqlite:///{self.workdir / 'relay.db'}"
        self.store = Store(self.db_url)
        self.committed = 0
        self.committed_at = None
        self.errors = []

    def open(self):
        self.store.ensure_schema()  # schema at head before the clock

    def start(self):
        pass

    def submit(self, events):
        raise NotImplementedError

    def between_bytes(self):
        return 0

    def stop(self):
        pass


class TimedStoreSink(forwarder.StoreSink):
    def __init__(self, store, candidate):
        super().__init__(store)
        self.candidate = candidate

    def send(self, bodies):
        super().send(bodies)
        self.candidate.committed = self.sent_events
        self.candidate.committed_at = time.perf_counter()


class JournalCandidate(Candidate):
    key = "a"

    def open(self):
        super().open()
        self.spool = self.workdir / "spool"
        self.forwarder = forwarder.Forwarder(self.spool, TimedStoreSink(self.store, self), max_bytes=1 << 30)

    def start(self):
        self.forwarder.start()

    def submit(self, events):
        self.forwarder.submit(events, MASTER_ID)

    def between_bytes(self):
        return tree_bytes(self.spool)

    def stop(self):
        self.forwarder.stop()
        if self.forwarder.last_error:
            self.errors.append(self.forwarder.last_error)


class KombuCandidate(Candidate):
    """Producer connection in the caller's thread, consumer connection in its own thread."""

    def connection(self, role):
        raise NotImplementedError

    def open(self):
        super().open()
        self.stopping = threading.Event()
        self.thread = None
        self.producer_conn = self.connection("producer")
        self.producer = self.producer_conn.Producer(serializer=None)
        broker.queue(QUEUE).bind(self.producer.channel).declare()

    def submit(self, events):
        _, body = message.encode(events, MASTER_ID)
        self.producer.publish(
            body,
            routing_key=QUEUE,
            exchange="",
            serializer=None,
            content_type=message.CONTENT_TYPE,
            content_encoding="binary",
            delivery_mode=2,
        )

    def start(self):
        self.consumer_conn = self.connection("consumer")
        self.consumer_conn.connect()
        self.consumer_conn.transport.polling_interval = self.options.poll
        self.thread = threading.Thread(target=self._consume, name=f"consumer-{self.key}", daemon=True)
        self.thread.start()

    def _on_message(self, msg):
        batch = message.decode(msg.body)
        jobs, returns, events = rows_of(batch.events, batch.master_id)
        self.store.write_batch(jobs, returns, events)
        msg.ack()
        self.committed += len(batch.events)
        self.committed_at = time.perf_counter()

    def _consume(self):
        consumer = self.consumer_conn.Consumer(
            queues=[broker.queue(QUEUE)], on_message=self._on_message, prefetch_count=self.options.prefetch
        )
        consumer.consume()
        while not self.stopping.is_set():
            try:
                self.consumer_conn.drain_events(timeout=0.2)
            except socket.timeout:
                continue
            except Exception as err:  # counted; the consumer goes on
                self.errors.append(f"{type(err).__name__}: {err}")
                time.sleep(0.05)
        consumer.cancel()

    def stop(self):
        if self.thread is not None:
            self.stopping.set()
            self.thread.join(timeout=10)
            self.consumer_conn.release()
        self.producer_conn.release()


class SqlaCandidate(KombuCandidate):
    key = "b"

    def open(self):
        self.broker_db = self.workdir / "broker.db"
        self.url = f"sqla+sqlite:///{self.broker_db}"  # absolute path: sqla+sqlite:////tmp/...
        super().open()

    def connection(self, role):
        # polling_interval cannot go in transport_options here: this transport
        # hands every option to sqlalchemy.create_engine (set on the transport instead).
        return kombu.Connection(self.url)

    def between_bytes(self):
        return files_bytes(*(f"{self.broker_db}{suffix}" for suffix in ("", "-journal", "-wal", "-shm")))

    def stop(self):
        super().stop()
        engine_and_session = kombu_sqla.Channel._engines.pop(self.url.split("+", 1)[1], None)  # kombu keeps its engines there
        if engine_and_session:
            engine_and_session[0].dispose()


class FilesystemCandidate(KombuCandidate):
    key = "c"

    def open(self):
        self.queue_dir = self.workdir / "fs-queue"
        self.processed_dir = self.workdir / "fs-processed"
        self.control_dir = self.workdir / "fs-control"
        for path in (self.queue_dir, self.processed_dir, self.control_dir):
            path.mkdir(parents=True, exist_ok=True)
        super().open()

    def connection(self, role):
        return kombu.Connection(
            "filesystem://",
            transport_options={
                "data_folder_in": str(self.queue_dir),
                "data_folder_out": str(self.queue_dir),
                "processed_folder": str(self.processed_dir),
                "control_folder": str(self.control_dir),
                "polling_interval": self.options.poll,
            },
        )

    def between_bytes(self):
        return tree_bytes(self.queue_dir, self.processed_dir)


class DirectCandidate(Candidate):
    key = "d"

    def submit(self, events):
        jobs, returns, rows = rows_of(events, MASTER_ID)
        self.store.write_batch(jobs, returns, rows)
        self.committed += len(events)
        self.committed_at = time.perf_counter()


CANDIDATES = {cls.key: cls for cls in (JournalCandidate, SqlaCandidate, FilesystemCandidate, DirectCandidate)}


# -- throughput run ---------------------------------------------------------------


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def throughput_run(key, options, root, run):
    workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"{key}-{run}-", dir=root))
    total = options.events
    batches = make_batches(total, options.batch, 20260101120000000000 + run * 10**6)
    candidate = CANDIDATES[key](workdir, options)
    candidate.open()
    candidate.start()
    peak = [0]
    sampling = threading.Event()

    def sample():
        while not sampling.wait(0.02):
            peak[0] = max(peak[0], candidate.between_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    costs = []
    started = time.perf_counter()
    for events in batches:
        before = time.perf_counter_ns()
        candidate.submit(events)
        costs.append((time.perf_counter_ns() - before) / 1000)
    produced = time.perf_counter()
    deadline = produced + options.timeout
    seen, seen_at = candidate.committed, produced
    while candidate.committed < total and time.perf_counter() < deadline:
        time.sleep(0.005)
        if candidate.committed != seen:
            seen, seen_at = candidate.committed, time.perf_counter()
        elif time.perf_counter() - seen_at > options.stall:
            break  # nothing committed for --stall seconds: the rest is not coming
    sampling.set()
    sampler.join()
    peak[0] = max(peak[0], candidate.between_bytes())
    done = candidate.committed >= total
    committed_at = candidate.committed_at
    candidate.stop()
    left = candidate.between_bytes()
    if candidate.errors:
        print(f"  {key} run {run + 1}: {len(candidate.errors)} consumer errors, first: {candidate.errors[0]}", file=sys.stderr)
    returns, events_rows = store_rows(candidate.store)
    connection.dispose_all()
    shutil.rmtree(workdir, ignore_errors=True)
    if not done or returns != total or events_rows != total:
        print(
            f"  {key} run {run + 1}: only {returns:,} returns / {events_rows:,} events rows of {total:,} "
            f"(nothing more committed for {options.stall:.0f} s)",
            file=sys.stderr,
        )
    return {
        "rate": returns / (committed_at - started) if committed_at else 0.0,
        "lost": total - returns,
        "produce_s": produced - started,
        "cost_median": statistics.median(costs),
        "cost_p99": percentile(costs, 0.99),
        "peak": peak[0],
        "left": left,
        "errors": len(candidate.errors),
    }


# -- durability -------------------------------------------------------------------


def _killed_child(key, workdir, options, with_consumer, jid_base):
    candidate = CANDIDATES[key](workdir, options)
    candidate.open()
    if with_consumer:
        candidate.start()
    for events in make_batches(DURABILITY_BATCHES * options.batch, options.batch, jid_base):
        candidate.submit(events)
    os.kill(os.getpid(), signal.SIGKILL)  # right after the 20th submit returned


def durability_run(key, options, root, run, with_consumer):
    workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"dur-{key}-{run}-", dir=root))
    expected = DURABILITY_BATCHES * options.batch
    child = multiprocessing.get_context("fork").Process(
        target=_killed_child, args=(key, workdir, options, with_consumer, 20270101120000000000 + run * 10**6)
    )
    child.start()
    child.join()  # reaped: its pid is dead for the spool's liveness check
    if child.exitcode != -signal.SIGKILL:
        raise SystemExit(f"durability {key}: child ended with {child.exitcode}, not SIGKILL")
    store = Store(f"sqlite:///{workdir / 'relay.db'}")
    at_kill, _ = store_rows(store)
    drainer = CANDIDATES[key](workdir, options)
    drainer.open()
    drainer.start()
    rows, last_change, last_rows = at_kill, time.monotonic(), at_kill
    while rows < expected and time.monotonic() - last_change < options.settle:
        time.sleep(0.1)
        rows, _ = store_rows(store)
        if rows != last_rows:
            last_rows, last_change = rows, time.monotonic()
    drainer.stop()
    rows, _ = store_rows(store)
    left = drainer.between_bytes()
    if drainer.errors:
        print(f"  durability {key}: {len(drainer.errors)} drain errors, first: {drainer.errors[0]}", file=sys.stderr)
    connection.dispose_all()
    shutil.rmtree(workdir, ignore_errors=True)
    return {"at_kill": at_kill, "reached": rows, "left": left, "errors": drainer.errors[:1]}


# -- report -----------------------------------------------------------------------


def human_bytes(value):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prefetch", type=int, default=20, help="Kombu consumers' prefetch_count (b, c)")
    parser.add_argument("--poll", type=float, default=0.1, help="Kombu virtual transports' polling_interval, s")
    parser.add_argument("--only", default="a,b,c,d", help="candidates, comma-separated")
    parser.add_argument("--no-durability", action="store_true")
    parser.add_argument("--timeout", type=float, default=600, help="max wait for the last row after the producer, s")
    parser.add_argument("--stall", type=float, default=15.0, help="give up waiting after this long without a commit, s")
    parser.add_argument("--settle", type=float, default=10.0, help="durability: stop draining after this long without progress, s")
    parser.add_argument("--quick", action="store_true", help="5,000 events, 1 run, --stall 5 --settle 5")
    _results.add_json_argument(parser, "embedded_candidates")
    options = parser.parse_args()
    recorder = _results.Recorder("embedded_candidates")
    if options.quick:
        options.events, options.runs, options.stall, options.settle = 5_000, 1, 5.0, 5.0
    keys = [k.strip() for k in options.only.split(",") if k.strip()]
    unknown = set(keys) - set(CANDIDATES)
    if unknown:
        parser.error(f"unknown candidates {sorted(unknown)}; choose from a,b,c,d")

    import sqlite3  # noqa: PLC0415

    import sqlalchemy  # noqa: PLC0415

    body = message.encode(make_batches(options.batch, options.batch, 20260101120000000000)[0], MASTER_ID)[1]
    print(
        f"{options.events:,} events in batches of {options.batch} ({len(body):,} bytes msgpack a batch), "
        f"{options.runs} run(s); prefetch {options.prefetch}, kombu polling_interval {options.poll}s; "
        f"kombu {kombu.__version__}, SQLAlchemy {sqlalchemy.__version__}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    root = tempfile.mkdtemp(prefix="relay-embedded-bench-")
    began = time.monotonic()
    try:
        results = {key: [] for key in keys}
        for run in range(options.runs):
            for key in keys:
                results[key].append(throughput_run(key, options, root, run))
                print(f"  run {run + 1} {key}: {results[key][-1]['rate']:,.0f} events/s", file=sys.stderr, flush=True)
        durability = {}
        if not options.no_durability:
            for key in keys:
                for mode, with_consumer in (("producer", False), ("engine", True)):
                    durability[key, mode] = [durability_run(key, options, root, run, with_consumer) for run in range(options.runs)]
                    print(f"  durability {key} {mode}: {[r['reached'] for r in durability[key, mode]]}", file=sys.stderr, flush=True)
    finally:
        connection.dispose_all()
        shutil.rmtree(root, ignore_errors=True)

    def med(key, field):
        return statistics.median(r[field] for r in results[key])

    print()
    header = (
        f"{'candidate':<31} {'events/s':>9} {'vs d':>6} {'produce s':>9} {'submit us med':>13} {'p99':>8} "
        f"{'peak between':>13} {'left after':>10} {'lost':>6}"
    )
    print(header)
    print("-" * len(header))
    floor = med("d", "rate") if "d" in results else None
    for key in keys:
        ratio = f"{med(key, 'rate') / floor:.3f}" if floor else "-"
        print(
            f"{LABELS[key]:<31} {med(key, 'rate'):>9,.0f} {ratio:>6} {med(key, 'produce_s'):>9.2f} "
            f"{med(key, 'cost_median'):>13,.0f} {med(key, 'cost_p99'):>8,.0f} "
            f"{human_bytes(med(key, 'peak')):>13} {human_bytes(med(key, 'left')):>10} {sum(r['lost'] for r in results[key]):>6,}"
        )
    print(
        "events/s: events stored / (producer start -> last commit); submit: producer's cost per batch;\n"
        "between: bytes in the spool/broker files (peak sampled every 20 ms, left once all was stored);\n"
        "lost: events never stored although their submit returned, summed over the runs, no process killed"
    )
    if durability:
        expected = DURABILITY_BATCHES * options.batch
        print()
        header = f"{'durability (of ' + format(expected, ',') + ' acked)':<31} {'producer killed':>34} {'engine killed':>34}"
        print(header)
        print("-" * len(header))
        for key in keys:
            cells = []
            for mode in ("producer", "engine"):
                runs = durability[key, mode]
                cells.append(
                    f"{min(r['reached'] for r in runs):,} (at kill {min(r['at_kill'] for r in runs):,}, "
                    f"left {human_bytes(max(r['left'] for r in runs))})"
                )
            print(f"{LABELS[key]:<31} {cells[0]:>34} {cells[1]:>34}")
        print(
            "rows in SQLite after the drain (smallest over the runs); at kill: rows already there when the child\n"
            "died (smallest); left: bytes still in the spool/broker files after the drain (largest)"
        )
    print(f"\n{time.monotonic() - began:.0f} s")
    medians = {key: {field: med(key, field) for field in ("rate", "produce_s", "cost_median", "cost_p99", "peak", "left")} for key in keys}
    for key in keys:
        medians[key]["label"] = LABELS[key]
        medians[key]["lost_sum"] = sum(r["lost"] for r in results[key])
        medians[key]["rate_vs_d"] = medians[key]["rate"] / floor if floor else None
    recorder.write(
        _results.json_path(options, "embedded_candidates", options.quick),
        options,
        versions=_results.versions("kombu", "SQLAlchemy", "msgpack"),
        sqlite=sqlite3.sqlite_version,
        units={"rate": "events/s", "cost_median": "us per batch", "cost_p99": "us per batch", "peak": "bytes", "left": "bytes"},
        medians=medians,
        runs=results,
        durability=[{"candidate": key, "killed": mode, "runs": runs} for (key, mode), runs in durability.items()],
    )


if __name__ == "__main__":
    main()
