"""The one retry delay of salt-relay: doubling from FIRST_SECONDS up to MAX_SECONDS.

Every retry loop (the forwarder, the outbox drainer, the worker's waits for
the database and its retries of a refused batch) waits this long, so one knob
explains them all. The worker's broker reconnects are Kombu's own loop, held
to the same bounds (Kombu steps linearly: FIRST_SECONDS more each time).
"""

from __future__ import annotations

FIRST_SECONDS = 0.5
MAX_SECONDS = 5.0


def delay(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1: the first retry)."""
    return min(FIRST_SECONDS * 2 ** max(attempt - 1, 0), MAX_SECONDS)


class Backoff:
    """The delays of one retry loop: :meth:`next_delay` after a failure, :meth:`reset` after a success."""

    def __init__(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        return delay(self.failures)

    def reset(self) -> None:
        self.failures = 0
