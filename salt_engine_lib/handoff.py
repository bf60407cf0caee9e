"""The engine's store settings, handed to the master's job cache.

The engine reads the master's own pillar; the master's job cache (MWorkers,
``salt-run``, the ``salt`` CLI) cannot (Salt builds its opts with an empty
pillar). A ``relay:`` block given only in the master's pillar would make the
engine write to the database it names while the job cache used the SQLite
default: two stores. So the engine writes the store settings it resolved to
``<cachedir>/relay/engine-settings.json`` (mode 0600: it may hold a
password), and the returner on the master uses them whenever the master
config names no ``database_url``. Both then use one store by construction.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Optional

from salt_engine_lib.errors import ConfigError
from salt_engine_lib import paths

if TYPE_CHECKING:
    from salt_engine_lib.config import RelayConfig

# The keys that decide where and how the job cache stores and cleans up.
STORE_KEYS = (
    "database_url",
    "database_ssl",
    "master_id",
    "read_scope",
    "auto_upgrade",
    "keep_jobs_seconds",
    "keep_events_seconds",
    "cleanup_chunk_size",
    "legacy_views",
)


def write(opts: dict, config: RelayConfig) -> None:
    target = paths.engine_settings(opts)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({key: getattr(config, key) for key in STORE_KEYS}, handle)
    os.replace(tmp, target)


def read(opts: dict) -> Optional[dict]:
    """The engine's store settings, or None if no engine wrote them on this master."""
    source = paths.engine_settings(opts)
    try:
        return json.loads(source.read_text())
    except FileNotFoundError:
        return None
    except PermissionError:
        # Silently falling back to the default store would split the job cache in two.
        raise ConfigError(
            f"relay: cannot read {source}, where the relay engine left the store settings it resolved "
            "(from the master's pillar): run this command as the master's user, or set relay:database_url "
            "in the master config"
        ) from None
    except ValueError as err:
        raise ConfigError(f"relay: {source} is not valid JSON ({err}); restart the salt-master to rewrite it") from None
