"""How fast one ``salt-relay worker`` stores from the broker, against saltext-mysql's returner.

Publishes M messages of B ping-sized returns straight to a fresh queue, as
the engine sends them when relay is the master's job cache: per return the
bus copy (an ``events`` row) and the job cache's record (the ``returns``
row), so 2 events and 2 rows per return. Then runs one worker in this
process until the queue is empty, and reports stored returns per second into
MariaDB (and optionally PostgreSQL / SQLite).

The reference is saltext-mysql's own ``returner()`` (loaded through Salt's
loader with master opts, on a fresh database with the schema its docstring
documents) called in a loop in one process with the same ping returns
(``pip install 'salt-relay[bench]'``). Prints medians over --runs and the
ratio, and how many masters' return rates one worker covers.

    .venv/bin/python benchmarks/worker_throughput.py [--messages 100] [--batch 500] [--runs 3] [--broker rabbitmq|redis] [--db mysql|postgresql|sqlite] [--json PATH]

Writes ``benchmarks/results/worker_throughput.json`` (every run, the medians, the
load average at start and end; see ``_results.py``).
"""

import argparse
import pathlib
import statistics
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import _results  # noqa: E402

from salt_engine_lib import broker, config, message, records  # noqa: E402
from salt_engine_lib.store import Store, queries  # noqa: E402
from salt_engine_lib.worker import Worker  # noqa: E402
from tests.support import brokers, databases  # noqa: E402

BROKERS = brokers.URLS


def ping_returns(count, offset):
    for index in range(count):
        jid = f"2026112514{offset + index:010d}"
        yield {
            "cmd": "_return",
            "fun": "test.ping",
            "fun_args": [],
            "id": f"minion-{index % 1000}",
            "jid": jid,
            "return": True,
            "retcode": 0,
            "success": True,
            "_stamp": "2026-11-25T14:00:00.000000",
        }


def ping_events(count, offset):
    """What the engine journals per return when relay is the job cache: bus copy + job cache record."""
    events = []
    for ret in ping_returns(count, offset):
        events.append((f"salt/job/{ret['jid']}/ret/{ret['id']}", records.without_return_value(ret)))
        events.append((records.JOB_CACHE_RETURN_TAG, ret))
    return events


def worker_run(broker_url, dialect, messages, batch, prefetch):
    queue_name = brokers.unique_queue("relay-bench")
    cfg = config.load(
        {"broker_url": broker_url, "queue": queue_name, "dead_letter_queue": f"{queue_name}.dlq", "worker_prefetch": prefetch}
    )
    with databases.fresh_database(dialect, prefix="relay_bench") as url:
        store = Store(url)
        store.write_batch()  # schema outside the timing
        publisher = broker.Publisher(cfg)
        for number in range(messages):
            message_id, body = message.encode(ping_events(batch, number * batch), "master-1", returns_from_job_cache=True)
            publisher.publish(body, message_id)
        publisher.close()
        worker = Worker(cfg, store)
        thread = threading.Thread(target=worker.run, daemon=True)
        start = time.perf_counter()
        thread.start()
        total = messages * batch
        while worker.counts["events_stored"] < 2 * total:
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
        worker.stopping.set()
        thread.join(timeout=30)
        assert store.read(queries.counts)["returns"] == total
        brokers.delete_queues(broker_url, queue_name, f"{queue_name}.dlq")
    return total / elapsed


def saltext_mysql_run(count):
    """saltext-mysql's returner() in a loop, in this process (its connection is kept in __context__)."""
    import salt.config
    import salt.loader

    import _saltext_mysql

    with databases.mysql_admin() as admin:
        database = _saltext_mysql.create_database(admin)
        try:
            opts = salt.config.master_config(None)
            opts.update(_saltext_mysql.opts(database))
            returner = salt.loader.returners(opts, {})["mysql.returner"]
            loads = list(ping_returns(count, 0))
            start = time.perf_counter()
            for load in loads:
                returner(load)
            elapsed = time.perf_counter() - start
            with admin.cursor() as cursor:
                cursor.execute(f"SELECT COUNT(*) FROM `{database}`.salt_returns")
                assert cursor.fetchone()[0] == count
        finally:
            databases.drop_database("mysql", database)
    return count / elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--prefetch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--broker", choices=sorted(BROKERS), action="append")
    parser.add_argument("--db", choices=["mysql", "postgresql", "sqlite"], action="append")
    parser.add_argument("--stock-returns", type=int, default=3000)
    parser.add_argument(
        "--master-rate",
        type=int,
        default=900,
        help="returns/s one master accepts (the headline's no-op ping ceiling here), for the masters-per-worker column",
    )
    _results.add_json_argument(parser, "worker_throughput")
    args = parser.parse_args()
    recorder = _results.Recorder("worker_throughput")
    brokers = args.broker or ["rabbitmq"]
    dialects = args.db or ["mysql"]
    stock_runs = [saltext_mysql_run(args.stock_returns) for _ in range(args.runs)]
    stock = statistics.median(stock_runs)
    print(
        f"saltext-mysql returner() in a loop (MariaDB): {stock:,.0f} returns/s (median of {args.runs}; "
        f"runs: {', '.join(f'{r:,.0f}' for r in stock_runs)})"
    )
    print(f"{'broker':10} {'database':11} {'returns/s':>11} {'x saltext-mysql':>16}  masters at the headline's no-op ping ceiling")
    workers = []
    for broker_name in brokers:
        for dialect in dialects:
            rates = [worker_run(BROKERS[broker_name], dialect, args.messages, args.batch, args.prefetch) for _ in range(args.runs)]
            rate = statistics.median(rates)
            workers.append(
                {
                    "broker": broker_name,
                    "database": dialect,
                    "returns_per_s": rate,
                    "rows_per_s": 2 * rate,
                    "x_saltext_mysql": rate / stock,
                    "masters_at_master_rate": rate / args.master_rate,
                    "runs_returns_per_s": rates,
                }
            )
            print(
                f"{broker_name:10} {dialect:11} {rate:11,.0f} {rate / stock:15.3f}x  {rate / args.master_rate:5.1f} at {args.master_rate}/s  (runs: {', '.join(f'{r:,.0f}' for r in rates)})"
            )
    recorder.write(
        _results.json_path(args, "worker_throughput"),
        args,
        versions=_results.versions("saltext.mysql", "PyMySQL", "SQLAlchemy", "kombu"),
        saltext_mysql_returner={"returns_per_s": stock, "runs_returns_per_s": stock_runs},
        workers=workers,
    )


if __name__ == "__main__":
    main()
