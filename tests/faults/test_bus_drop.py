"""Being dropped by the master's event publisher is never silent.

Salt's publisher closes a subscriber that falls ``pub_server_write_queue_size``
events behind; events published meanwhile never reach it. A master with a
tiny queue and a burst of events makes that happen for real: whatever the
engine did not capture must show up as counted disconnects, in its stats and
its log.
"""

import pathlib

import pytest

from tests.faults.harness import Sender
from tests.support import engine_stats as engine_stats_file
from tests.support.waiting import wait_for


pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small_queue_master(salt_factories, tmp_path_factory):
    overrides = {
        "engines": [{"relay": {"batch_max_wait": 0.1}}],
        "relay": {"database_url": f"sqlite:///{tmp_path_factory.mktemp('busdrop') / 'relay.db'}"},
        "pub_server_write_queue_size": 20,
        "log_level_logfile": "info",
    }
    factory = salt_factories.salt_master_daemon("relay-busdrop", overrides=overrides)
    with factory.started(start_timeout=120):
        yield factory


def engine_stats(master):
    return engine_stats_file.read(master.config) or {}


def test_events_lost_to_a_dropped_subscription_are_counted(small_queue_master):
    config_file = str(pathlib.Path(small_queue_master.config_dir, "master"))
    senders = [Sender(config_file, 6, 4000, 100_000, first_seq=i * 4000).start() for i in range(3)]
    fired = sum(sender.result(timeout=300)["fired"] for sender in senders)
    stats = wait_for(
        lambda: (lambda s: s if s and s.get("pending") == 0 and s.get("updated", 0) and s["accepted"] >= 1 else None)(
            engine_stats(small_queue_master)
        ),
        timeout=60,
    )
    assert stats
    accepted = wait_for(lambda: engine_stats(small_queue_master)["accepted"], timeout=5)
    stats = engine_stats(small_queue_master)
    log_text = pathlib.Path(small_queue_master.config["log_file"]).read_text(errors="replace")
    if accepted < fired:
        assert stats["bus_disconnects"] > 0, (fired, stats)
        assert "closed the engine's subscription" in log_text
    else:  # the engine kept up with the burst: nothing to count
        assert stats["bus_disconnects"] == 0
    print(f"fired {fired}, engine accepted {stats['accepted']}, disconnects {stats['bus_disconnects']}")
