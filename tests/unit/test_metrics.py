"""The Prometheus exposition of the engine's and workers' stats dicts."""

import socket
import urllib.request

from prometheus_client import CollectorRegistry, generate_latest

from salt_engine_lib import metrics


def test_stats_become_counters_gauges_and_labelled_reasons():
    stats = {
        "pid": 1,
        "mode": "broker",
        "accepted": 7,
        "dropped": {"excluded_tag": 3, "duplicate": 1},
        "journal_pending_bytes": 512,
        "last_error": "x",
        "lag_seconds_p99": None,
    }
    registry = CollectorRegistry()
    registry.register(metrics.StatsCollector("engine", lambda: stats))
    text = generate_latest(registry).decode()
    assert "salt_relay_engine_accepted_total 7.0" in text
    assert 'salt_relay_engine_dropped_total{reason="excluded_tag"} 3.0' in text
    assert "# TYPE salt_relay_engine_journal_pending_bytes gauge" in text
    assert "pid" not in text and "last_error" not in text and "lag_seconds" not in text


def test_exporter_serves_on_loopback():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = metrics.serve(port, "worker", lambda: {"messages_stored": 3})
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server[0].shutdown()
    assert "salt_relay_worker_messages_stored_total 3.0" in body


def test_no_port_no_exporter():
    assert metrics.serve(None, "engine", dict) is None
