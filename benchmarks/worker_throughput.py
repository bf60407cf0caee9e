"""How fast one ``salt-relay worker`` stores from the broker, against saltext-mysql-style writes.

Publishes M messages of B ping-sized job-return events straight to a fresh
queue (as the engine would), then runs one worker in this process until the
queue is empty, and reports stored returns per second into MariaDB (and
optionally PostgreSQL / SQLite). The reference is the stock per-return
pattern (saltext-mysql's returner: one INSERT + COMMIT per return, measured
here with the same PyMySQL on the same server, since its cost is the round
trips). Prints medians over --runs and the ratio.

    .venv/bin/python benchmarks/worker_throughput.py [--messages 100] [--batch 500] [--runs 3] [--broker rabbitmq|redis] [--db mysql|postgresql|sqlite]
"""

import argparse
import statistics
import tempfile
import threading
import time
import uuid

import pymysql

from salt_engine_lib import broker, config, message
from salt_engine_lib.store import Store, connection, queries
from salt_engine_lib.worker import Worker

BROKERS = {"rabbitmq": "amqp://guest:guest@127.0.0.1:5672//", "redis": "redis://127.0.0.1:6379/0"}


def ping_events(count, offset):
    events = []
    for index in range(count):
        jid = f"2026112514{offset + index:010d}"
        events.append((f"salt/job/{jid}/ret/minion-{index % 1000}", {
            "fun": "test.ping", "fun_args": [], "id": f"minion-{index % 1000}", "jid": jid,
            "return": True, "retcode": 0, "success": True, "_stamp": "2026-11-25T14:00:00.000000",
        }))
    return events


class Database:
    def __init__(self, dialect):
        self.dialect = dialect
        self.name = f"relay_bench_{uuid.uuid4().hex[:8]}"
        self.tmp = tempfile.TemporaryDirectory()

    def __enter__(self):
        if self.dialect == "mysql":
            with pymysql.connect(host="127.0.0.1", user="root", autocommit=True) as admin, admin.cursor() as cur:
                cur.execute(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4")
            return f"mysql+pymysql://root@127.0.0.1:3306/{self.name}"
        if self.dialect == "postgresql":
            import psycopg

            with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{self.name}"')
            return f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.name}"
        return f"sqlite:///{self.tmp.name}/relay.db"

    def __exit__(self, *exc):
        connection.dispose_all()
        if self.dialect == "mysql":
            with pymysql.connect(host="127.0.0.1", user="root", autocommit=True) as admin, admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
        elif self.dialect == "postgresql":
            import psycopg

            with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.tmp.cleanup()


def worker_run(broker_url, dialect, messages, batch, prefetch):
    queue_name = f"relay-bench-{uuid.uuid4().hex[:8]}"
    cfg = config.load({"broker_url": broker_url, "queue": queue_name, "dead_letter_queue": f"{queue_name}.dlq", "worker_prefetch": prefetch})
    with Database(dialect) as url:
        store = Store(url)
        store.write_batch()  # schema outside the timing
        publisher = broker.Publisher(cfg)
        for number in range(messages):
            message_id, body = message.encode(ping_events(batch, number * batch), "master-1")
            publisher.publish(body, message_id)
        publisher.close()
        worker = Worker(cfg, store)
        thread = threading.Thread(target=worker.run, daemon=True)
        start = time.perf_counter()
        thread.start()
        total = messages * batch
        while worker.counts["events_stored"] < total:
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
        worker.stopping.set()
        thread.join(timeout=30)
        assert store.read(queries.counts)["returns"] == total
        with broker.connection(cfg) as conn:
            for name in (queue_name, f"{queue_name}.dlq"):
                try:
                    broker.queue(name).bind(conn.channel()).delete()
                except Exception:  # pylint: disable=broad-except
                    pass
    return total / elapsed


def per_return_commit_run(count):
    """The stock returner's write pattern: one INSERT + COMMIT per return (saltext-mysql)."""
    with Database("mysql") as _url:
        db = _url.rsplit("/", 1)[1]
        conn = pymysql.connect(host="127.0.0.1", user="root", database=db)
        with conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE salt_returns (fun varchar(50) NOT NULL, jid varchar(255) NOT NULL, `return` mediumtext NOT NULL, "
                "id varchar(255) NOT NULL, success varchar(10) NOT NULL, full_ret mediumtext NOT NULL, "
                "alter_time TIMESTAMP DEFAULT CURRENT_TIMESTAMP, KEY id (id), KEY jid (jid), KEY fun (fun)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
            )
        conn.commit()
        import json

        start = time.perf_counter()
        for _, data in ping_events(count, 0):
            with conn.cursor() as cur:
                conn.ping()  # saltext-mysql pings before each use
                cur.execute(
                    "INSERT INTO `salt_returns` (`fun`, `jid`, `return`, `id`, `success`, `full_ret`) VALUES (%s, %s, %s, %s, %s, %s)",
                    (data["fun"], data["jid"], json.dumps(data["return"]), data["id"], data["success"], json.dumps(data)),
                )
            conn.commit()
        elapsed = time.perf_counter() - start
        conn.close()
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
    args = parser.parse_args()
    brokers = args.broker or ["rabbitmq"]
    dialects = args.db or ["mysql"]
    stock = statistics.median(per_return_commit_run(args.stock_returns) for _ in range(args.runs))
    print(f"stock pattern (ping + INSERT + COMMIT per return, MariaDB): {stock:,.0f} returns/s (median of {args.runs})")
    print(f"{'broker':10} {'database':11} {'returns/s':>11} {'x stock':>8}")
    for broker_name in brokers:
        for dialect in dialects:
            rates = [worker_run(BROKERS[broker_name], dialect, args.messages, args.batch, args.prefetch) for _ in range(args.runs)]
            rate = statistics.median(rates)
            print(f"{broker_name:10} {dialect:11} {rate:11,.0f} {rate / stock:8.1f}   (runs: {', '.join(f'{r:,.0f}' for r in rates)})")


if __name__ == "__main__":
    main()
