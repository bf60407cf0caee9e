"""Nothing lost, nothing doubled: a real master, RabbitMQ, a worker and MariaDB under faults.

Each scenario fires its own range of job-return events onto the master's bus
at a fixed rate while one fault happens, then counts from SQL what was lost
and doubled against what was fired. The broker and the database are reached
through TCP proxies this test cuts: the shared servers are never stopped.

Bounded in CI (5,000 returns per scenario, 6 s outages: 20,000 returns in
all); full size on demand, which prints the table for the issue:

    RELAY_FAULT_RETURNS=25000 RELAY_FAULT_OUTAGE=60 RELAY_FAULT_RATE=1000 \\
        .venv/bin/python -m pytest tests/faults/test_fault_suite.py -s -p no:cacheprovider
"""

import json
import os
import pathlib
import subprocess
import time
import uuid

import pytest

from salt_engine_lib import paths
from salt_engine_lib.store import Store
from tests.support.brokers import check_broker, delete_queues
from tests.support.databases import server_database
from tests.faults.harness import SALT_RELAY, Sender, WorkerProcess, tally
from tests.pipeline_helpers import proxied
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.rabbitmq, pytest.mark.mysql]

RETURNS = int(os.environ.get("RELAY_FAULT_RETURNS", "5000"))
OUTAGE = float(os.environ.get("RELAY_FAULT_OUTAGE", "6"))
RATE = float(os.environ.get("RELAY_FAULT_RATE", "500"))
DRAIN_TIMEOUT = 180 + 2 * OUTAGE
TABLE = []


@pytest.fixture(scope="module")
def services():
    rabbitmq = check_broker("rabbitmq")
    broker_proxy, broker_url = proxied(rabbitmq)
    queue_name = f"relay-fault-{uuid.uuid4().hex[:8]}"
    with server_database("mysql") as direct_url:
        db_proxy, database_url = proxied(direct_url)
        yield {
            "direct_database_url": direct_url,
            "broker_proxy": broker_proxy,
            "db_proxy": db_proxy,
            "relay": {
                "broker_url": broker_url,
                "database_url": database_url + "?connect_timeout=3",
                "queue": queue_name,
                "dead_letter_queue": f"{queue_name}.dlq",
            },
        }
        broker_proxy.close()
        db_proxy.close()
    delete_queues(rabbitmq, queue_name, f"{queue_name}.dlq")
    if TABLE:
        print("\n" + format_table(TABLE))


def start_master(salt_factories, relay, name, **engine):
    overrides = {
        "engines": [{"relay": {"batch_max_wait": 0.1, **engine}}],
        "relay": relay,
        "log_level_logfile": "info",
    }
    return salt_factories.salt_master_daemon(name, overrides=overrides)


@pytest.fixture(scope="module")
def master(salt_factories, services):
    factory = start_master(salt_factories, services["relay"], f"relay-fault-{uuid.uuid4().hex[:6]}")
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="module")
def store(services):
    store = Store(services["direct_database_url"])
    store.write_batch()  # schema before the worker and the test race for it
    return store


@pytest.fixture(scope="module")
def worker(services, store, tmp_path_factory):
    proc = WorkerProcess(tmp_path_factory.mktemp("worker") / "worker.log", batch_max_wait=0.1, **services["relay"]).start()
    yield proc
    proc.stop()


def config_file(master):
    return str(pathlib.Path(master.config_dir, "master"))


def run_scenario(name, scenario, master, store, fault, count=RETURNS):
    sender = Sender(config_file(master), scenario, count, RATE).start()
    fault_ended = fault()
    sent = sender.result(timeout=count / RATE + 4 * OUTAGE + 120)
    fault_ended = fault_ended or time.monotonic()
    counts = wait_for(
        lambda: (lambda t: t if t["returns_lost"] <= 0 and t["events_lost"] <= 0 else None)(tally(store, scenario, sent["fired"])),
        timeout=DRAIN_TIMEOUT,
        interval=0.5,
    )
    final = counts or tally(store, scenario, sent["fired"])
    row = {
        "scenario": name,
        "intended": count,
        "fired": sent["fired"],
        "not_accepted_by_bus": sent["failed"],
        **final,
        "drain_seconds": round(time.monotonic() - fault_ended, 1),
    }
    TABLE.append(row)
    return row


def assert_nothing_lost_or_doubled(row):
    # What the scenario meant to send was sent and accepted by the bus: with
    # nothing fired, "nothing lost" would hold trivially.
    assert row["fired"] == row["intended"] > 0 and row["not_accepted_by_bus"] == 0, row
    assert row["returns_lost"] == 0 and row["events_lost"] == 0, row
    assert row["returns_doubled"] == 0 and row["events_doubled"] == 0, row


def test_worker_killed_with_sigkill(master, store, worker):
    def fault():
        time.sleep(min(2.0, RETURNS / RATE / 3))
        worker.kill()
        time.sleep(2)
        worker.start()
        return time.monotonic()

    assert_nothing_lost_or_doubled(run_scenario("worker SIGKILL", 1, master, store, fault))


def test_broker_unreachable(master, store, worker, services):
    def fault():
        time.sleep(1)
        services["broker_proxy"].cut()
        time.sleep(OUTAGE)
        services["broker_proxy"].restore()
        return time.monotonic()

    row = run_scenario(f"broker down {OUTAGE:.0f} s", 2, master, store, fault)
    assert_nothing_lost_or_doubled(row)


def test_database_unreachable(master, store, worker, services):
    def fault():
        time.sleep(1)
        services["db_proxy"].cut()
        time.sleep(OUTAGE)
        services["db_proxy"].restore()
        return time.monotonic()

    assert_nothing_lost_or_doubled(run_scenario(f"database down {OUTAGE:.0f} s", 3, master, store, fault))


def test_master_restarted_with_a_journal_backlog(master, store, worker, services):
    """The engine is stopped with batches in its journal (broker cut); the new engine replays them.

    The sender pauses while the master is down: events fired at a master that
    is not running never reach any bus, so they are outside what can be counted.
    """
    half = RETURNS // 2
    services["broker_proxy"].cut()
    try:
        first = Sender(config_file(master), 4, half, RATE).start().result(timeout=half / RATE + 120)
        time.sleep(1)  # the last batch leaves the engine's memory for the journal
        master.terminate()
    finally:
        services["broker_proxy"].restore()
    master.start(start_timeout=120)
    restarted = time.monotonic()
    second = Sender(config_file(master), 4, RETURNS - half, RATE, first_seq=half).start().result(timeout=half / RATE + 120)
    fired = first["fired"] + second["fired"]
    counts = wait_for(
        lambda: (lambda t: t if t["returns_lost"] <= 0 and t["events_lost"] <= 0 else None)(tally(store, 4, fired)),
        timeout=DRAIN_TIMEOUT,
        interval=0.5,
    )
    row = {
        "scenario": "salt-master restart (journal not empty)",
        "intended": RETURNS,
        "fired": fired,
        "not_accepted_by_bus": first["failed"] + second["failed"],
        **(counts or tally(store, 4, fired)),
        "drain_seconds": round(time.monotonic() - restarted, 1),
    }
    TABLE.append(row)
    assert_nothing_lost_or_doubled(row)


def test_journal_bound_hit_is_counted_and_reported(salt_factories, services, store, worker):
    """A tiny journal and a broker away: what cannot be kept is counted, logged and shown."""
    factory = start_master(salt_factories, services["relay"], f"relay-journal-{uuid.uuid4().hex[:6]}", journal_max_bytes=100_000)
    count = min(RETURNS, 5000)
    with factory.started(start_timeout=120):
        services["broker_proxy"].cut()
        try:
            sent = Sender(config_file(factory), 5, count, RATE).start().result(timeout=count / RATE + 60)
            stats_file = paths.engine_stats(factory.config)
            stats = wait_for(
                lambda: (lambda s: s if s.get("accepted", 0) >= sent["fired"] and s["journal_lost_events"] > 0 else None)(
                    json.loads(stats_file.read_text()) if stats_file.exists() else {}
                ),
                timeout=30,
            )
            assert stats, "the engine did not count the events the full journal could not keep"
        finally:
            services["broker_proxy"].restore()
        counts = wait_for(
            lambda: (lambda t: t if t["events_stored"] + stats["journal_lost_events"] >= sent["fired"] else None)(
                tally(store, 5, sent["fired"])
            ),
            timeout=DRAIN_TIMEOUT,
        )
        assert counts, tally(store, 5, sent["fired"])
        assert sent["fired"] == count and sent["failed"] == 0, sent  # all accepted by the bus
        # Every event is either stored or counted as lost: nothing vanishes silently.
        assert counts["events_stored"] + stats["journal_lost_events"] == sent["fired"], (counts, stats)
        assert counts["events_doubled"] == 0
        status = subprocess.run(
            [SALT_RELAY, "-c", factory.config_dir, "status", "--json"], capture_output=True, text=True, timeout=60, check=False
        )
        assert status.returncode == 1, status.stderr  # degraded: events were lost to the bound
        report = json.loads(status.stdout)
        assert report["state"] == "degraded" and report["events"]["lost_to_journal_bound"] == stats["journal_lost_events"]
        assert any("lost to the journal bound" in warning for warning in report["warnings"])
        log_text = pathlib.Path(factory.config["log_file"]).read_text(errors="replace")
        assert "journal is full" in log_text and "LOST" in log_text
        TABLE.append(
            {
                "scenario": "journal bound hit (100 kB)",
                "fired": sent["fired"],
                "not_accepted_by_bus": sent["failed"],
                **counts,
                "counted_lost": stats["journal_lost_events"],
                "drain_seconds": None,
            }
        )


def format_table(rows):
    columns = [
        "scenario",
        "fired",
        "returns_stored",
        "returns_lost",
        "returns_doubled",
        "events_stored",
        "events_lost",
        "events_doubled",
        "counted_lost",
        "drain_seconds",
    ]
    lines = [" | ".join(columns), " | ".join("---" for _ in columns)]
    for row in rows:
        lines.append(" | ".join(str(row.get(column, "")) for column in columns))
    return "\n".join(lines)
