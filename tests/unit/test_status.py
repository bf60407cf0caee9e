"""``salt-relay status`` and the global options, through the installed command (a subprocess)."""

import json
import pathlib
import subprocess
import sys
import time

import pytest

from salt_engine_lib import paths
from salt_engine_lib.store import migrate

SALT_RELAY = str(pathlib.Path(sys.executable).with_name("salt-relay"))


def salt_relay(*args):
    return subprocess.run([SALT_RELAY, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def master_dir(tmp_path):
    (tmp_path / "master").write_text(
        f"cachedir: {tmp_path / 'cache'}\nrelay:\n  database_url: sqlite:///{tmp_path / 'relay.db'}\n  journal_max_bytes: 1000\n"
    )
    return tmp_path


def write_engine_stats(master_dir, age=0.5, **overrides):
    stats = {
        "pid": 4242,
        "mode": "embedded",
        "updated": time.time() - age,
        "captured": 120,
        "accepted": 100,
        "dropped": {"duplicate": 15, "excluded_tag": 5},
        "forwarded": 100,
        "rejected": 0,
        "journal_lost_events": 0,
        "bus_disconnects": 0,
        "reader_overflowed": 0,
        "reader_alive": True,
        "outbox_pending_bytes": 0,
        "journal": {"batches": 0, "bytes": 0, "oldest_created": None, "max_bytes": 1000},
    }
    stats.update(overrides)
    path = paths.engine_stats({"cachedir": str(master_dir / "cache")})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stats))


@pytest.mark.parametrize("place", ["before", "after"])
def test_global_options_before_or_after_the_subcommand(master_dir, place):
    options = ["-c", str(master_dir), "-l", "error"]
    upgrade = salt_relay(*options, "db", "upgrade") if place == "before" else salt_relay("db", "upgrade", *options)
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"schema empty -> {migrate.head_revision()}" in upgrade.stdout
    current = salt_relay("db", "current", "-c", str(master_dir)) if place == "after" else salt_relay("-c", str(master_dir), "db", "current")
    assert current.returncode == 0 and f"database: {migrate.head_revision()}" in current.stdout, current.stderr
    worker = salt_relay("worker", "-c", str(master_dir), "--database-url", f"sqlite:///{master_dir / 'w.db'}")
    assert worker.returncode == 1 and "relay:broker_url is not set" in worker.stderr  # the options were read
    url = f"sqlite:///{master_dir / 'other.db'}"
    last_wins = salt_relay(
        "--database-url", "sqlite:////nonexistent/x.db", "status", "--json", "-c", str(master_dir), "--database-url", url
    )
    assert json.loads(last_wins.stdout)["database"]["url"] == url


def test_version():
    result = salt_relay("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("salt-relay ") and "(Salt 300" in result.stdout


def test_healthy_embedded_engine_is_exit_0_with_the_greppable_words(master_dir):
    assert salt_relay("db", "upgrade", "-c", str(master_dir)).returncode == 0
    write_engine_stats(master_dir)
    result = salt_relay("status", "-c", str(master_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    for word in (
        "captured 120",
        "kept 100",
        "filtered 20",
        "duplicate 15",
        "stored 100",
        "lag 0.0 s",
        f"schema {migrate.head_revision()} (code {migrate.head_revision()})",
    ):
        assert word in result.stdout, result.stdout
    assert "WARN" not in result.stdout
    report = json.loads(salt_relay("status", "--json", "-c", str(master_dir)).stdout)
    assert (report["state"], report["exit_status"], report["engine"]["state"], report["engine"]["capture"]) == ("ok", 0, "up", "up")
    assert report["events"]["filtered_by_reason"] == {"duplicate": 15, "excluded_tag": 5}


def test_silent_engine_and_dead_reader_are_down(master_dir):
    assert salt_relay("db", "upgrade", "-c", str(master_dir)).returncode == 0
    write_engine_stats(master_dir, age=30)
    silent = salt_relay("status", "-c", str(master_dir))
    assert silent.returncode == 2 and "engine silent for 3" in silent.stdout, silent.stdout
    relaxed = salt_relay("status", "-c", str(master_dir), "--engine-silent", "60")
    assert relaxed.returncode == 0, relaxed.stdout  # the threshold is the user's
    write_engine_stats(master_dir, reader_alive=False)
    dead = salt_relay("status", "-c", str(master_dir))
    assert dead.returncode == 2 and "capture down" in dead.stdout, dead.stdout


def test_things_that_need_a_person_are_degraded(master_dir):
    write_engine_stats(  # schema empty, journal 90 % full and 120 s behind, events lost, bus drops
        master_dir,
        journal_lost_events=7,
        bus_disconnects=2,
        journal={"batches": 3, "bytes": 900, "oldest_created": time.time() - 120, "max_bytes": 1000},
    )
    result = salt_relay("status", "--json", "-c", str(master_dir))
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["state"] == "degraded"
    assert report["journal"]["batches"] == 3 and report["journal"]["lag_seconds"] >= 120
    warnings = "\n".join(report["warnings"])
    for expected in ("schema behind", "journal 90.0 % full", "lag 12", "7 events lost", "dropped the engine's subscription (2 times"):
        assert expected in warnings, warnings


def test_every_engine_writing_into_the_store_is_listed(master_dir):
    """Two masters' engines reported into one store: status on either lists both, with mode and report age."""
    from salt_engine_lib import records
    from salt_engine_lib.store import Store

    store = Store(f"sqlite:///{master_dir / 'relay.db'}")
    now = time.time()
    for master_id, mode, age in (("master-b", "broker", 95.0), ("master-a", "embedded", 3.0)):
        report = {"mode": mode, "host": f"{master_id}.example", "version": "0.1.0", "reported_at": now - age, "stats": {"captured": 7}}
        store.write_rows(records.rows_from_event(records.ENGINE_REPORT_TAG, report, master_id))
    older = {"mode": "broker", "reported_at": now - 500, "stats": {}}
    store.write_rows(records.rows_from_event(records.ENGINE_REPORT_TAG, older, "master-b"))  # stale: kept as newest wins
    write_engine_stats(master_dir)
    report = json.loads(salt_relay("status", "--json", "-c", str(master_dir)).stdout)
    listed = [(e["master_id"], e["mode"], e["namespace"], round(e["seconds_since_report"])) for e in report["database"]["engines"]]
    assert [entry[:3] for entry in listed] == [("master-a", "embedded", "master-a"), ("master-b", "broker", "master-b")]
    assert 2 <= listed[0][3] <= 30 and 94 <= listed[1][3] <= 130, listed
    text = salt_relay("status", "-c", str(master_dir)).stdout
    assert "master-a (embedded mode" in text and "master-b (broker mode" in text, text
