"""Where salt-relay keeps its files on a master: everything under ``<cachedir>/relay``.

The one place for that layout, and for the engine's heartbeat: the stats
file the engine rewrites every :data:`HEARTBEAT_SECONDS`, which the returner
(is the engine there to carry the outbox?) and ``salt-relay status`` (is the
engine silent?) read against :data:`HEARTBEAT_STALE_SECONDS`.
"""

import hashlib
import pathlib

#: Salt's default ``cachedir`` for a master.
DEFAULT_CACHEDIR = "/var/cache/salt/master"

#: How often the running engine rewrites :func:`engine_stats`.
HEARTBEAT_SECONDS = 2.0
#: A heartbeat older than this means the engine is not running.
HEARTBEAT_STALE_SECONDS = 10.0


def relay_dir(opts):
    return pathlib.Path(opts.get("cachedir") or DEFAULT_CACHEDIR, "relay")


def engine_stats(opts):
    """The engine's heartbeat and counters (JSON, rewritten atomically)."""
    return relay_dir(opts) / "engine-stats.json"


def engine_settings(opts):
    """The store settings the engine hands to the master's job cache (see :mod:`handoff`)."""
    return relay_dir(opts) / "engine-settings.json"


def journal(opts, configured=None):
    """The engine's journal: ``spool_dir`` when set."""
    return pathlib.Path(configured) if configured else relay_dir(opts) / "spool"


def outbox(opts):
    """What the returner hands to the engine (write-behind)."""
    return relay_dir(opts) / "outbox"


def pending_load(opts, jid):
    """Where a publish load the database refused is kept until it is stored (``get_load`` reads it)."""
    name = hashlib.sha256(str(jid).encode("utf-8", "surrogatepass")).hexdigest()
    return relay_dir(opts) / "pending-loads" / f"{name}.mp"


def dead_letters(opts):
    return relay_dir(opts) / "dead-letters"


def default_database(cachedir=None):
    """The embedded default store."""
    return pathlib.Path(cachedir or DEFAULT_CACHEDIR, "relay", "relay.db")
