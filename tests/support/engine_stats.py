"""The relay engine's stats file: its heartbeat and counters, read from outside the master.

Where the file lives is :func:`salt_engine_lib.paths.engine_stats`'s to say;
the engine rewrites it (atomically) every ``paths.HEARTBEAT_SECONDS``.
``opts`` is a master's opts, or any dict with its ``cachedir``.
"""

import json
import time

from salt_engine_lib import paths
from tests.support import processes
from tests.support.salt_daemons import DaemonError


def path(opts):
    return paths.engine_stats(opts)


def read(opts):
    """The engine's last stats (a dict), or None before the engine wrote any."""
    try:
        return json.loads(path(opts).read_text())
    except (OSError, ValueError):
        return None


def wait_until_running(opts, timeout=120, check=None):
    """The stats once they name a live engine process; DaemonError after ``timeout`` s.

    ``check()`` runs before each look (``Daemons.check``: a master or worker
    that exited means the engine will not come, so fail at once).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check:
            check()
        stats = read(opts)
        if stats and processes.alive(stats.get("pid")):
            return stats
        time.sleep(0.2)
    raise DaemonError(f"the relay engine did not write {path(opts)} within {timeout} s")


def wait_for_update(opts, since, timeout=2.5 * paths.HEARTBEAT_SECONDS):
    """The first stats written at or after ``since`` (epoch seconds), or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = read(opts)
        if stats and stats.get("updated", 0) >= since:
            return stats
        time.sleep(0.3)
    return None


#: The counters :func:`summary` lists first, in this order.
FIRST = ("mode", "captured", "accepted", "journaled", "forwarded", "rejected", "pending", "reader_overflowed")


def summary(stats):
    """The stats as aligned ``key value`` lines: :data:`FIRST`, the drops by reason, then the rest."""
    lines = [f"{key:20} {stats[key]}" for key in FIRST if key in stats]
    dropped = stats.get("dropped") or {}
    lines.append(f"{'dropped':20} {sum(dropped.values())}" + ("  by reason:" if dropped else ""))
    lines += [f"{'':22} {count:5}  {reason}" for reason, count in sorted(dropped.items(), key=lambda item: (-item[1], item[0]))]
    lines += [f"{key:20} {value}" for key, value in stats.items() if key not in (*FIRST, "dropped", "pid", "updated")]
    return lines
