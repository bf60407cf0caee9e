"""The long-lived servers on 127.0.0.1 (scripts/ensure-services.sh), and what to do when one is down.

Every helper of this package raises :class:`ServerUnavailable` for a server
that does not answer. tests/conftest.py turns it into a skip with the command
that starts the server, or, with ``CI`` set, into a failure: a broken CI
service must not turn into a green run of SQLite-only tests. The benchmarks
and the demo report it and go on (or stop).
"""

import os

#: Seconds to wait for a server to answer a connect.
CONNECT_TIMEOUT = 5

START_HINTS = {
    "mysql": "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
    "postgresql": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "rabbitmq": "rabbitmq-server -detached",
    "redis": 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
}


class ServerUnavailable(Exception):
    """A server of ``kind`` (a key of :data:`START_HINTS`) did not answer at ``host:port``."""

    def __init__(self, kind, host, port, err):
        super().__init__(
            f"{kind} server not reachable at {host}:{port} ({type(err).__name__}: {err}). "
            f"Start it with `{START_HINTS[kind]}` or run `scripts/ensure-services.sh`."
        )
        self.kind = kind


def skip_or_fail(message):
    """In a test: skip with ``message``, or fail with it when ``CI`` is set."""
    import pytest

    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
