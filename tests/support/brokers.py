"""The shared brokers (RabbitMQ, Redis on 127.0.0.1) and the queues a run makes on them.

Queue names are unique per run (``<prefix>-<hex8>``, with ``<name>.dlq`` for
the dead letters) and deleted afterwards with their messages. Queues are
bound through :func:`salt_engine_lib.broker.queue`, so they are declared as
salt-relay declares them (a different declaration would be refused).
"""

import os
import urllib.parse
import uuid

from tests.support.servers import CONNECT_TIMEOUT, ServerUnavailable

RABBITMQ_URL = os.environ.get("RELAY_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("RELAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
URLS = {"rabbitmq": RABBITMQ_URL, "redis": REDIS_URL}


def _connection(url):
    import kombu

    return kombu.Connection(url, connect_timeout=CONNECT_TIMEOUT)


def _queue(name):
    from salt_engine_lib import broker

    return broker.queue(name)


def check_broker(kind):
    """The URL of the ``rabbitmq`` or ``redis`` server if it answers; ServerUnavailable otherwise."""
    url = URLS[kind]
    try:
        with _connection(url) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as err:  # whatever the transport raises: the server is not usable
        parts = urllib.parse.urlsplit(url)
        raise ServerUnavailable(kind, parts.hostname, parts.port, err) from None
    return url


def unique_queue(prefix="relay-test"):
    """A queue name no other run uses; its dead-letter queue is ``<name>.dlq``."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def delete_queues(url, *names):
    """Delete the queues and their messages; a queue never declared is no error."""
    with _connection(url) as conn:
        for name in names:
            try:
                _queue(name).bind(conn.channel()).delete()
            except Exception:  # never declared
                pass


def queue_depth(url, name, missing_ok=False):
    """Messages ready in the queue. A queue never declared raises, or counts 0 with ``missing_ok``.

    Redis deletes a list once it is empty, so there a missing queue is an empty one.
    """
    from salt_engine_lib import broker

    with _connection(url) as conn:
        try:
            _, count, _ = _queue(name).bind(conn.channel()).queue_declare(passive=True)
        except conn.channel_errors:
            if missing_ok or broker.is_redis(url):
                return 0
            raise
        return count


def take_all(url, name):
    """Every message of a queue (acked, so removed): [(headers, body)]."""
    taken = []
    with _connection(url) as conn:
        bound = _queue(name).bind(conn.channel())
        while True:
            msg = bound.get(no_ack=True)
            if msg is None:
                return taken
            taken.append((dict(msg.headers or {}), msg.body))
