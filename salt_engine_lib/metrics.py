"""Prometheus exposition of the engine's and workers' own counters.

Each process keeps plain counters in a ``stats()`` dict (also written to the
stats file ``salt-relay status`` reads); this collector turns that dict into
Prometheus metrics at scrape time, so there is one source of truth.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)

# Values that go up and down; every other number is a monotonic counter.
GAUGES = frozenset({"pending", "journal_pending_bytes", "outbox_pending_bytes", "pending_messages", "lag_seconds_p50", "lag_seconds_p99"})
SKIPPED = frozenset({"pid", "updated", "mode", "last_error", "queue", "age_seconds"})


class StatsCollector:
    def __init__(self, role: str, stats: Callable[[], dict]) -> None:
        self.role = role
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        for key, value in self.stats().items():
            if key in SKIPPED or isinstance(value, bool) or value is None:
                continue
            name = f"salt_relay_{self.role}_{key}"
            family = GaugeMetricFamily if key in GAUGES else CounterMetricFamily
            if isinstance(value, (int, float)):
                yield family(name, f"salt-relay {self.role}: {key.replace('_', ' ')}", value=value)
            elif isinstance(value, dict):
                metric = family(name, f"salt-relay {self.role}: {key.replace('_', ' ')} by reason", labels=["reason"])
                for reason, count in value.items():
                    metric.add_metric([str(reason)], count)
                yield metric


def serve(port: Optional[int], role: str, stats: Callable[[], dict], address: str = "127.0.0.1") -> Any:
    """Start the exporter thread on ``address:port``; None when no port is configured."""
    if not port:
        return None
    registry = CollectorRegistry()
    registry.register(StatsCollector(role, stats))
    try:
        return start_http_server(port, addr=address, registry=registry)
    except OSError as err:
        log.error("relay: cannot serve metrics on %s:%s: %s (relay:metrics_port)", address, port, err)
        return None
