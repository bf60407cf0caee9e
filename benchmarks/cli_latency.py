"""The ``salt`` CLI's latency with relay as the job cache, against local_cache, on the installed Salt.

    .venv/bin/python -m pytest benchmarks/cli_latency.py -p no:cacheprovider -q -s

(with another venv's python for another Salt). Two real masters with two real
minions each run in the same process tree: one with ``master_job_cache:
relay`` and the relay engine (SQLite), one with Salt's default local_cache.
Each round times ``salt -L <m1>,<m2> test.ping --timeout=15`` (the whole
command: start, publish, both returns, exit) CALLS times per master, the two
masters taking turns call by call so that load on the machine falls on both
alike; every call must return True from both minions, or the benchmark fails
rather than time a failure. Figures: the median seconds per master per
round, and relay's median over local_cache's, per round and their median.
Issue #15: on 3007.17 before the fix, relay's calls took 30-50 s.

Environment: RELAY_BENCH_CALLS (default 10), RELAY_BENCH_ROUNDS (default 3),
RELAY_BENCH_JSON (default ``benchmarks/results/cli_latency-<Salt version>.json``;
``-`` for none).

A pytest module so that it runs on the tests' harness (salt-factories and
``tests/integration/parity_helpers.py``); ``benchmarks/`` is not among the
test paths, so the test suite never runs it.
"""

import os
import statistics
import sys
import time
import types

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import _results  # noqa: E402

from salt_engine_lib import saltcompat  # noqa: E402
from tests.integration import parity_helpers as ph  # noqa: E402

pytest_plugins = ["tests.conftest"]

CALLS = int(os.environ.get("RELAY_BENCH_CALLS", "10"))
ROUNDS = int(os.environ.get("RELAY_BENCH_ROUNDS", "3"))
CLI_TIMEOUT = 15


@pytest.fixture(scope="module")
def clusters(salt_factories, tmp_path_factory):
    database_url = f"sqlite:///{tmp_path_factory.mktemp('cli-bench') / 'relay.db'}"
    configs = {
        "relay": {
            **ph.COMMON_MASTER_CONFIG,
            "master_job_cache": "relay",
            "engines": [{"relay": {"batch_max_wait": 0.1}}],
            "relay": {"database_url": database_url},
        },
        "local_cache": dict(ph.COMMON_MASTER_CONFIG),
    }
    prefixes = {"relay": "bcr", "local_cache": "bcl"}
    started = {}
    masters = {kind: salt_factories.salt_master_daemon(f"{prefixes[kind]}-master", overrides=config) for kind, config in configs.items()}
    with (
        masters["relay"].started(start_timeout=120),
        masters["local_cache"].started(start_timeout=120),
        ph.started_minions(masters["relay"], prefixes["relay"]) as relay_minions,
        ph.started_minions(masters["local_cache"], prefixes["local_cache"]) as local_minions,
    ):
        started["relay"] = ph.Cluster("relay", prefixes["relay"], masters["relay"], relay_minions)
        started["local_cache"] = ph.Cluster("local_cache", prefixes["local_cache"], masters["local_cache"], local_minions)
        yield started


def timed_ping(cluster):
    started = time.monotonic()
    result = cluster.salt(f"--timeout={CLI_TIMEOUT}", "-L", "test.ping", minion_tgt=f"{cluster.m1},{cluster.m2}")
    seconds = time.monotonic() - started
    expected = {cluster.m1: True, cluster.m2: True}
    assert result.returncode == 0 and result.data == expected, f"{cluster.kind}: {result}"
    return seconds


def test_cli_latency_relay_against_local_cache(clusters):
    recorder = _results.Recorder("cli_latency")
    for cluster in clusters.values():
        timed_ping(cluster)  # warm-up: key cache, first loader run
    rounds = []
    for _ in range(ROUNDS):
        seconds = {kind: [] for kind in clusters}
        for _ in range(CALLS):
            for kind, cluster in clusters.items():
                seconds[kind].append(timed_ping(cluster))
        medians = {kind: statistics.median(values) for kind, values in seconds.items()}
        rounds.append({"seconds": seconds, "median_s": medians, "ratio": medians["relay"] / medians["local_cache"]})
    ratio = statistics.median(r["ratio"] for r in rounds)
    summary = {
        "salt": saltcompat.salt_version(),
        "median_s": {kind: statistics.median(r["median_s"][kind] for r in rounds) for kind in clusters},
        "ratio_relay_over_local_cache": round(ratio, 3),
        "ratio_per_round": [round(r["ratio"], 3) for r in rounds],
    }
    print(
        f"\nSalt {summary['salt']}: salt -L <2 minions> test.ping, medians of {CALLS} calls x {ROUNDS} rounds: "
        f"relay {summary['median_s']['relay']:.3f} s, local_cache {summary['median_s']['local_cache']:.3f} s, "
        f"ratio {summary['ratio_relay_over_local_cache']:.3f} (per round {summary['ratio_per_round']})"
    )
    target = os.environ.get("RELAY_BENCH_JSON") or str(_results.RESULTS / f"cli_latency-{summary['salt']}.json")
    args = types.SimpleNamespace(calls=CALLS, rounds=ROUNDS, cli_timeout=CLI_TIMEOUT)
    recorder.write(None if target == "-" else target, args, summary=summary, rounds=rounds)
