"""Events published while the engine is still configuring itself are captured.

The master's event publisher is up before it forks its engines, and the relay
engine then compiles the master's pillar (for ``relay:`` settings from pillar)
and opens its sinks before it could serve. Issue #19 saw 82 of 3,000 events
that the bus had accepted never stored after a master restart: the burst that
minions sent as soon as the master answered, published before the engine
subscribed. The engine now subscribes first.

The master here has an ext_pillar that takes 8 s (a real command through
Salt's ``cmd_json``), so the engine's configuration is slow for sure; events
are fired onto the bus from the moment the master is up, through those 8 s.
Every one the bus accepted must be stored, once, and ``salt-relay status``
reports how long after its start the engine subscribed.
"""

import json
import pathlib
import subprocess
import sys

import pytest
import sqlalchemy as sa

from tests.faults.harness import Sender, jid_of
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

SALT_RELAY = str(pathlib.Path(sys.executable).with_name("salt-relay"))
PILLAR_SECONDS = 8
SCENARIO = 61
EVENTS = 400
RATE = 50  # per second: the sender fires for 8 s, the pillar's whole compile


@pytest.fixture(scope="module")
def relay_db(tmp_path_factory):
    return tmp_path_factory.mktemp("start-window-db") / "relay.db"


def test_events_fired_while_the_engine_configures_itself_are_stored(salt_factories, relay_db, record_property):
    slow_pillar = f"{sys.executable} -c \"import time; time.sleep({PILLAR_SECONDS}); print('{{}}')\""
    overrides = {
        "engines": [{"relay": {"batch_max_wait": 0.1}}],
        "relay": {"database_url": f"sqlite:///{relay_db}"},
        "ext_pillar": [{"cmd_json": slow_pillar}],
        "log_level_logfile": "info",
    }
    master = salt_factories.salt_master_daemon("relay-start-window", overrides=overrides)
    with master.started(start_timeout=120):
        sender = Sender(master.config_file, SCENARIO, EVENTS, RATE).start()
        outcome = sender.result(timeout=120)
        # What the test meant to fire was accepted by the bus (else nothing below means anything).
        assert outcome["fired"] == EVENTS and outcome["failed"] == 0, outcome
        fired_tags = {f"salt/job/{jid_of(SCENARIO, seq)}/ret/fault-m{seq % 50}" for seq in range(EVENTS)}

        def stored():
            engine = sa.create_engine(f"sqlite:///{relay_db}")
            try:
                with engine.connect() as conn:
                    return [row[0] for row in conn.execute(sa.text("SELECT tag FROM events WHERE tag LIKE 'salt/job/%'"))]
            except sa.exc.OperationalError:
                return []  # no tables yet
            finally:
                engine.dispose()

        assert wait_for(lambda: set(stored()) >= fired_tags, timeout=120), f"lost {len(fired_tags - set(stored()))} of {EVENTS}"
        tags = [tag for tag in stored() if tag in fired_tags]
        assert len(tags) == len(set(tags)) == EVENTS  # each once

        done = subprocess.run([SALT_RELAY, "status", "-c", master.config_dir, "--json"], capture_output=True, text=True, timeout=60)
        window = json.loads(done.stdout)["engine"]["subscribed_after_start_s"]
        record_property("subscribed_after_start_s", window)
        print(f"subscribed {window} s after the engine started; {EVENTS} fired, all stored")
        # Subscribed before the pillar was compiled, not after.
        assert window is not None and window < PILLAR_SECONDS / 2, window
        log = pathlib.Path(master.config["log_file"]).read_text(errors="replace")
        assert "relay engine started" in log
