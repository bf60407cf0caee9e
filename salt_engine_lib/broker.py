"""Kombu plumbing shared by the engine (publishing) and the worker (consuming).

RabbitMQ (``amqp://``, ``amqps://``) gets publisher confirms, a durable
queue and persistent messages; Redis (``redis://``, ``rediss://``) gets
Kombu's reliable-fetch emulation (unacked messages come back after
``visibility_timeout``). Both use the default exchange: the routing key is
the queue name, so there is nothing else to declare or misconfigure.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import urllib.parse
from typing import TYPE_CHECKING, Any, Optional

import kombu
from kombu.exceptions import OperationalError

from salt_engine_lib import message
from salt_engine_lib.errors import BrokerUnavailable, ConfigError
from salt_engine_lib.urls import mask_url

if TYPE_CHECKING:
    from salt_engine_lib.config import RelayConfig

log = logging.getLogger(__name__)

# Redis defaults: bounded socket waits, so an unreachable Redis is an error
# and not a hang; one hour before a dead worker's messages are redelivered
# (Kombu's default, lower it with relay:broker_transport_options).
_REDIS_DEFAULTS = {"socket_connect_timeout": 5, "socket_timeout": 30, "visibility_timeout": 3600}
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_unverified_warned_pid = None  # the PID that logged the cert_reqs: none warning


def is_redis(url: str) -> bool:
    return url.split("://", 1)[0] in ("redis", "rediss")


def _cert_reqs(value):
    if isinstance(value, bool):  # YAML true/false
        return ssl.CERT_REQUIRED if value else ssl.CERT_NONE
    if isinstance(value, int):
        return value
    key = str(value).lower().removeprefix("cert_")
    if key not in _CERT_REQS:
        raise ConfigError(f"relay:broker_ssl:cert_reqs must be one of none, optional, required, got {value!r}")
    return _CERT_REQS[key]


def _warn_unverified(url):
    global _unverified_warned_pid
    if _unverified_warned_pid == os.getpid():
        return
    _unverified_warned_pid = os.getpid()
    # Host and port only: the URL may carry a password.
    where = urllib.parse.urlsplit(url.split(";", 1)[0]).netloc.rsplit("@", 1)[-1] or "localhost"
    log.warning(
        "relay:broker_ssl:cert_reqs is none: TLS to the broker at %s does not check the "
        "server certificate or host name, so anyone on the path can pose as the broker",
        where,
    )


def ssl_options(url: str, broker_ssl: Optional[dict]) -> Optional[dict]:
    """Kombu's ``ssl=`` argument for this transport, from relay:broker_ssl.

    TLS (``amqps://``, ``rediss://`` or any broker_ssl) verifies the broker by
    default: its certificate against ``ca_certs``, or against the system CA
    store when ``ca_certs`` is not given, and its host name. ``cert_reqs:
    none`` drops both checks and is logged at WARNING once per process.
    """
    scheme = url.split("://", 1)[0]
    if broker_ssl is None and scheme not in ("amqps", "rediss"):
        return None
    options = dict(broker_ssl or {})
    options["cert_reqs"] = _cert_reqs(options.get("cert_reqs", "required"))
    verify = options["cert_reqs"] != ssl.CERT_NONE
    if not verify:
        _warn_unverified(url)
    if is_redis(url):  # redis-py spells them ssl_*
        options = {f"ssl_{key}": value for key, value in options.items()}
        # redis-py < 6 does not check the host name unless told to; it loads
        # the system store itself (create_default_context) when ca_certs is unset.
        options["ssl_check_hostname"] = verify
        return options
    if verify:
        # py-amqp checks the host name only when given one, and loads the system
        # store itself (load_default_certs) when ca_certs is unset. The name is
        # the URL's as written: Kombu's own server_hostname=None fill-in takes
        # it after turning localhost into 127.0.0.1. With a failover list
        # (host1;host2) it is the first host's name.
        options["server_hostname"] = urllib.parse.urlsplit(url.split(";", 1)[0]).hostname
    return options


def connection(config: RelayConfig, url: Optional[str] = None) -> kombu.Connection:
    url = url or config.broker_url
    transport_options = dict(config.broker_transport_options or {})
    if is_redis(url):
        transport_options = {**_REDIS_DEFAULTS, **transport_options}
    else:
        transport_options.setdefault("confirm_publish", True)
    return kombu.Connection(
        url,
        ssl=ssl_options(url, config.broker_ssl),
        transport_options=transport_options,
        connect_timeout=5,
        heartbeat=0,
    )


def queue(name: str) -> kombu.Queue:
    """A durable queue on the default exchange (routing key = name)."""
    return kombu.Queue(name, exchange=kombu.Exchange(""), routing_key=name, durable=True)


def connection_errors(conn: kombu.Connection) -> tuple[type[BaseException], ...]:
    return tuple(conn.connection_errors) + tuple(conn.channel_errors) + (OperationalError, socket.error, OSError)


# Kombu's own retry of a publish: a few quick tries; beyond them the caller keeps the body (journal, unacked message).
RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1}


def publish(
    producer: kombu.Producer,
    body: bytes,
    queue_name: str,
    message_id: Optional[str] = None,
    headers: Optional[dict[str, Any]] = None,
    retry_policy: dict[str, float] = RETRY_POLICY,
) -> None:
    """The one way salt-relay publishes a body: persistent, confirmed, to ``queue_name`` on the default exchange.

    The queue is declared with the message (Kombu remembers per connection
    what it declared): a fresh broker gets the queue before the first
    message, so nothing is routed nowhere.
    """
    producer.publish(
        body,
        routing_key=queue_name,
        exchange="",
        declare=[queue(queue_name)],
        serializer=None,
        content_type=message.CONTENT_TYPE,
        content_encoding="binary",
        delivery_mode=2,
        message_id=message_id,
        headers=headers or {},
        retry=True,
        retry_policy=retry_policy,
        timeout=30,
        confirm_timeout=30,
    )


class Publisher:
    """The engine's publisher: :func:`publish` on a connection of its own; BrokerUnavailable when it cannot.

    One per thread (Kombu connections are not thread-safe).
    """

    def __init__(self, config: RelayConfig, max_retries: int = RETRY_POLICY["max_retries"]) -> None:
        self.config = config
        self.retry_policy = {**RETRY_POLICY, "max_retries": max_retries}
        self._conn = None
        self._producer = None

    def publish(self, body: bytes, message_id: Optional[str], queue_name: Optional[str] = None) -> None:
        try:
            if self._producer is None:
                self._conn = connection(self.config)
                self._conn.ensure_connection(**self.retry_policy)
                self._producer = self._conn.Producer()
            publish(self._producer, body, queue_name or self.config.queue, message_id, retry_policy=self.retry_policy)
        except Exception as err:  # any failure here (refused, reset, nack, timeout) means "not confirmed"
            self.close()
            raise BrokerUnavailable(f"{mask_url(self.config.broker_url)}: {type(err).__name__}: {err}") from err

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.release()
            except Exception:  # closing a connection that already failed
                pass
        self._conn = None
        self._producer = None


def queue_stats(config: RelayConfig) -> dict[str, dict[str, Optional[int]]]:
    """{queue name: {messages, consumers}} for the work queue and the dead-letter queue.

    ``consumers`` is None on Redis (Kombu's Redis transport cannot count
    them); ``messages`` is None for a RabbitMQ queue not declared yet.
    """
    stats = {}
    redis = is_redis(config.broker_url)
    with connection(config) as conn:
        try:
            conn.ensure_connection(max_retries=1)
            channel = conn.default_channel
            for name in (config.queue, config.dead_letter_queue):
                try:
                    _, count, consumers = channel.queue_declare(queue=name, passive=True)
                except conn.channel_errors:
                    # Not declared yet; on Redis an emptied queue's list is gone.
                    count, consumers = (0 if redis else None), (None if redis else 0)
                    channel = conn.channel()
                stats[name] = {"messages": count, "consumers": None if redis else consumers}
        except Exception as err:  # status reports any failure as "unreachable", with the reason
            raise BrokerUnavailable(f"{mask_url(config.broker_url)}: {type(err).__name__}: {err}") from err
    return stats


def queue_depths(config: RelayConfig) -> dict[str, Optional[int]]:
    """{queue name: messages waiting} for the work queue and the dead-letter queue."""
    return {name: stats["messages"] for name, stats in queue_stats(config).items()}
