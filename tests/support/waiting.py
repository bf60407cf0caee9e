"""Polling for what a background process (the engine, a worker, a daemon) does."""

import time


def wait_for(predicate, timeout=60, interval=0.25):
    """The predicate's first truthy value, or its last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
