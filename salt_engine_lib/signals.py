"""SIGTERM/SIGINT as a request to stop cleanly, for the engine and the workers."""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import threading

log = logging.getLogger(__name__)


def stop_on_signals(stopping: threading.Event, doing: str) -> None:
    """Set the ``stopping`` event on SIGTERM or SIGINT; ``doing`` says what happens next in the log."""

    def handle(signum, _frame):
        log.info("relay: signal %s received, %s", signum, doing)
        stopping.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
