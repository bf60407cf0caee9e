"""SIGTERM/SIGINT as a request to stop cleanly, for the engine and the workers."""

import logging
import signal

log = logging.getLogger(__name__)


def stop_on_signals(stopping, doing):
    """Set the ``stopping`` event on SIGTERM or SIGINT; ``doing`` says what happens next in the log."""

    def handle(signum, _frame):
        log.info("relay: signal %s received, %s", signum, doing)
        stopping.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
