"""A bus reader that dies takes the engine down, loudly, and Salt starts it again.

A real master runs the relay engine; the test kills the engine's bus
subscription (the one mocked fault, see engines/relay_reader_fault.py) and
checks the master log (CRITICAL, with the exception), ``salt-relay status``
(capture down, exit 2) and Salt's restart of the engine, which captures
again once the subscription works.
"""

import json
import pathlib
import subprocess
import sys

import pytest
import sqlalchemy as sa

from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

SALT_RELAY = str(pathlib.Path(sys.executable).with_name("salt-relay"))
ENGINES_DIR = pathlib.Path(__file__).with_name("engines")


@pytest.fixture(scope="module")
def kill_file(tmp_path_factory):
    return tmp_path_factory.mktemp("reader-fault") / "kill"


@pytest.fixture(scope="module")
def relay_db(tmp_path_factory):
    return tmp_path_factory.mktemp("reader-fault-db") / "relay.db"


@pytest.fixture(scope="module")
def master(salt_factories, kill_file, relay_db):
    overrides = {
        "engines_dirs": [str(ENGINES_DIR)],
        "engines": [{"relay_reader_fault": {"kill_file": str(kill_file), "batch_max_wait": 0.1}}],
        "relay": {"database_url": f"sqlite:///{relay_db}"},
        "log_level_logfile": "info",
    }
    factory = salt_factories.salt_master_daemon("relay-reader-fault", overrides=overrides)
    with factory.started(start_timeout=120):
        yield factory


def status(master):
    done = subprocess.run(
        [SALT_RELAY, "status", "-c", master.config_dir, "--json"], capture_output=True, text=True, timeout=60, check=False
    )
    return done.returncode, json.loads(done.stdout)


def stored_tags(relay_db):
    engine = sa.create_engine(f"sqlite:///{relay_db}")
    try:
        with engine.connect() as conn:
            return {row[0] for row in conn.execute(sa.text("SELECT tag FROM events"))}
    except sa.exc.OperationalError:
        return set()  # the engine has not created the tables yet
    finally:
        engine.dispose()


def fire(master, tag):
    ret = master.salt_run_cli(timeout=60).run("event.send", tag, '{"from": "test_reader_dies"}')
    assert ret.returncode == 0, ret


def log_text(master):
    return pathlib.Path(master.config["log_file"]).read_text(errors="replace")


def test_a_killed_subscription_takes_the_engine_down_and_salt_starts_it_again(master, kill_file, relay_db):
    assert wait_for(lambda: status(master)[1]["engine"]["capture"] == "up", timeout=60)
    fire(master, "relay-test/before")
    assert wait_for(lambda: "relay-test/before" in stored_tags(relay_db), timeout=60)

    kill_file.touch()
    fire(master, "relay-test/kill")
    assert wait_for(lambda: "its bus reader stopped" in log_text(master), timeout=60)
    text = log_text(master)
    assert "[CRITICAL" in text.split("its bus reader stopped")[0].rsplit("\n", 1)[-1]
    assert "RuntimeError: the bus subscription was killed by the test" in text  # the exception, with its traceback
    rc, report = wait_for(lambda: (lambda r: r if r[1]["engine"]["capture"] == "down" else None)(status(master)), timeout=60)
    assert rc == 2 and report["state"] == "down", report
    assert "killed by the test" in report["engine"]["capture_failure"]
    assert any(w.startswith("capture down") for w in report["warnings"]), report["warnings"]
    # Salt restarts the engine; while the subscription fails, every start fails the same way.
    assert wait_for(lambda: log_text(master).count("its bus reader stopped") >= 2, timeout=60)

    kill_file.unlink()
    assert wait_for(lambda: status(master)[1]["engine"]["capture"] == "up", timeout=90)
    fire(master, "relay-test/after")
    assert wait_for(lambda: "relay-test/after" in stored_tags(relay_db), timeout=60)
