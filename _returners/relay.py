"""
Returner ``relay``: Salt's job cache and event store in SQL (salt-relay).

Serves the whole job-cache API (``prep_jid``, ``save_load``, ``get_load``,
``get_jid``, ``get_jids``, ``get_jids_filter``, ``get_fun``, ``get_minions``,
``save_minions``, ``clean_old_jobs``, ``update_endtime``, ``get_endtime``,
``returner``, ``event_return``) from the salt-relay store, so
``salt-run jobs.list_jobs``, ``jobs.lookup_jid`` and
``salt-call ret.get_jids relay`` work.

Setup
-----
Install salt-relay (``pip install salt-relay`` / ``salt-pip install
salt-relay``), or put this file in ``salt://_returners`` and run
``salt-run saltutil.sync_returners`` (master) or
``salt '*' saltutil.sync_returners`` (minions).

Master (``/etc/salt/master.d/relay.conf``):

.. code-block:: yaml

    master_job_cache: relay
    event_return: relay          # optional
    relay:
      database_url: mysql+pymysql://relay:secret@db.example.com/salt
      database_ssl: {ca: /etc/salt/pki/db-ca.pem}

With no ``database_url`` the store is SQLite under the master's cachedir.

Minions (``ret.*``, ``--return relay``) read the same ``relay:`` block, or a
flat ``relay.database_url``, from minion config or pillar; profiles work with
``--return_config PROFILE`` (``PROFILE.relay: {...}``) and one-off values
with ``--return_kwargs '{"database_url": "..."}'``.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Union

log = logging.getLogger(__name__)

__virtualname__ = "relay"


def __virtual__():
    try:
        import salt_engine_lib.returner  # noqa: F401  # importable: the module can load
    except ImportError as err:
        return False, f"relay returner: salt_engine_lib is not importable ({err}); pip install salt-relay"
    # Salt 3007's salt CLI would miss the returns that reach the bus while
    # this returner's first get_load runs, and wait for its whole --timeout.
    from salt_engine_lib import saltcompat

    saltcompat.fix_publish_client_poll()
    return __virtualname__


def _lib():
    import salt_engine_lib.returner

    return salt_engine_lib.returner


def _call(function, *args, ret=None):
    """Run a library call with this call's store and settings; turn its errors into Salt's.

    The settings are resolved in here too, so a bad configuration is a
    SaltInvocationError like any other.
    """
    from salt.exceptions import CommandExecutionError, SaltInvocationError

    from salt_engine_lib.errors import ConfigError, RelayError

    lib = _lib()
    try:
        settings = lib.resolve_settings(__opts__, __salt__, ret)
        return function(lib.store_for(settings), settings, *args)
    except ConfigError as err:
        raise SaltInvocationError(f"relay returner: bad configuration: {err}") from err
    except RelayError as err:
        raise CommandExecutionError(f"relay returner: {type(err).__name__}: {err}") from err
    except Exception as err:  # database driver errors: say what failed, never the URL's password
        raise CommandExecutionError(f"relay returner: {function.__name__} failed: {type(err).__name__}: {err}") from err


def prep_jid(nocache: bool = False, passed_jid: Optional[str] = None) -> str:
    return _lib().prep_jid(__opts__, nocache=nocache, passed_jid=passed_jid)


def save_load(jid: str, load: dict, minions: Optional[list] = None) -> None:
    _call(_lib().save_load, jid, load, minions, __opts__)


def save_minions(jid: str, minions: Optional[list], syndic_id: Optional[str] = None) -> None:
    _call(_lib().save_minions, jid, minions, syndic_id)


def returner(ret: Any) -> None:
    _call(_lib().returner, ret, __opts__, ret=ret)


def event_return(events: list[dict]) -> None:
    _call(_lib().event_return, events, __opts__)


def get_load(jid: str) -> dict:
    return _call(_lib().get_load, jid, __opts__)


def get_jid(jid: str) -> dict:
    return _call(_lib().get_jid, jid)


def get_fun(fun: str) -> dict:
    return _call(_lib().get_fun, fun)


def get_jids() -> dict[str, dict]:
    return _call(_lib().get_jids)


def get_jids_filter(count: int, filter_find_job: bool = True) -> list[dict]:
    return _call(_lib().get_jids_filter, count, filter_find_job)


def get_minions() -> list[str]:
    return _call(_lib().get_minions)


def clean_old_jobs() -> None:
    _call(_lib().clean_old_jobs)


def update_endtime(jid: str, time: Any) -> None:
    _call(_lib().update_endtime, jid, time)


def get_endtime(jid: str) -> Union[str, bool]:
    return _call(_lib().get_endtime, jid)
