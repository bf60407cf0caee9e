"""Test-only engine: the relay engine, with a bus subscription the test can kill.

A subscription fails for real only through a Salt or transport bug (3006's
``make_current``, 3007's ``spawn_callback``, both handled now in saltcompat);
nothing done from outside the master makes one fail, so this is the one
mocked fault of tests/integration/test_reader_dies.py: the real subscription
is wrapped, and while ``kill_file`` exists its connect fails and the next
frame it reads kills the running reader. Everything else is the real engine.
"""

import os

from salt_engine_lib import engine, saltcompat


def _fail_if_killed(kill_file):
    if os.path.exists(kill_file):
        raise RuntimeError("the bus subscription was killed by the test")


def start(kill_file, **kwargs):
    real = saltcompat.master_bus_subscription

    def killable(opts, poll_seconds=1.0):
        subscription = real(opts, poll_seconds)
        connect, unpack = subscription.connect, subscription.unpack

        async def connect_unless_killed(timeout):
            _fail_if_killed(kill_file)
            await connect(timeout)

        def unpack_unless_killed(raw):
            _fail_if_killed(kill_file)
            return unpack(raw)

        subscription.connect = connect_unless_killed
        subscription.unpack = unpack_unless_killed
        return subscription

    saltcompat.master_bus_subscription = killable
    engine.run(__opts__, kwargs, runners=__runners__)
