"""Where salt-relay keeps its files on a master: everything under ``<cachedir>/relay``.

The one place for that layout, and for the engine's heartbeat: the stats
file the engine rewrites every :data:`HEARTBEAT_SECONDS`, which the returner
(is the engine there to carry the outbox?) and ``salt-relay status`` (is the
engine silent?) read against :data:`HEARTBEAT_STALE_SECONDS`.
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import Any, Optional

#: Salt's default ``cachedir`` for a master.
DEFAULT_CACHEDIR = "/var/cache/salt/master"

#: How often the running engine rewrites :func:`engine_stats`.
HEARTBEAT_SECONDS = 2.0
#: A heartbeat older than this means the engine is not running.
HEARTBEAT_STALE_SECONDS = 10.0


def relay_dir(opts: dict) -> pathlib.Path:
    return pathlib.Path(opts.get("cachedir") or DEFAULT_CACHEDIR, "relay")


def engine_stats(opts: dict) -> pathlib.Path:
    """The engine's heartbeat and counters (JSON, rewritten atomically)."""
    return relay_dir(opts) / "engine-stats.json"


def engine_settings(opts: dict) -> pathlib.Path:
    """The store settings the engine hands to the master's job cache (see :mod:`handoff`)."""
    return relay_dir(opts) / "engine-settings.json"


def journal(opts: dict, configured: Optional[str] = None) -> pathlib.Path:
    """The engine's journal: ``journal_dir`` when set."""
    return pathlib.Path(configured) if configured else relay_dir(opts) / "journal"


def legacy_journal(opts: dict) -> pathlib.Path:
    """Where earlier salt-relay builds kept the engine's journal by default (the engine adopts it)."""
    return relay_dir(opts) / "spool"


def outbox(opts: dict) -> pathlib.Path:
    """What the returner hands to the engine (write-behind)."""
    return relay_dir(opts) / "outbox"


def pending_load(opts: dict, jid: Any) -> pathlib.Path:
    """Where a publish load the database refused is kept until it is stored (``get_load`` reads it)."""
    name = hashlib.sha256(str(jid).encode("utf-8", "surrogatepass")).hexdigest()
    return relay_dir(opts) / "pending-loads" / f"{name}.mp"


def dead_letters(opts: dict) -> pathlib.Path:
    return relay_dir(opts) / "dead-letters"


def default_database(cachedir: Optional[str] = None) -> pathlib.Path:
    """The embedded default store."""
    return pathlib.Path(cachedir or DEFAULT_CACHEDIR, "relay", "relay.db")
