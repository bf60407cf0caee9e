"""
Engine ``relay``: capture the master event bus for salt-relay.

Runs inside the salt-master (one forked process). Reads every event on the
master bus, drops redundant traffic (find_job polling, auth chatter,
repeats), batches the rest and hands it to the broker, from which
``salt-relay worker`` processes store it in SQL.

Setup
-----
Install salt-relay where the master runs (``salt-pip install salt-relay`` on
onedir, ``pip install salt-relay`` otherwise) or sync this file from
``salt://_engines`` with ``salt-run saltutil.sync_engines``, then restart the
master (Salt loads engines only at start).

Example configuration (``/etc/salt/master.d/relay.conf``):

.. code-block:: yaml

    engines:
      - relay: {}            # options here override the relay: block

    relay:
      broker_url: amqp://relay:secret@127.0.0.1:5672/salt   # empty: embedded
      database_url: mysql+pymysql://relay:secret@127.0.0.1/salt
      batch_size: 500
      batch_max_wait: 0.2

Configuration reference: ``pillar.example`` and the README.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

__virtualname__ = "relay"


def __virtual__():
    try:
        import salt_engine_lib.engine  # noqa: F401  # only to see that it imports
    except ImportError as err:
        return False, f"relay engine: salt_engine_lib is not importable ({err}); pip install salt-relay"
    return __virtualname__


def start(**kwargs: Any) -> None:
    import salt_engine_lib.engine

    salt_engine_lib.engine.run(__opts__, kwargs, runners=__runners__)
