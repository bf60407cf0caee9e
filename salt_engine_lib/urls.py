"""Broker and database URLs: validation and password masking."""

from __future__ import annotations

import re
from typing import Optional

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from salt_engine_lib.errors import ConfigError

BROKER_SCHEMES = ("amqp", "amqps", "pyamqp", "redis", "rediss", "memory")
DATABASE_DIALECTS = ("sqlite", "mysql", "mariadb", "postgresql")
# Query parameters the drivers take a password from: password, passwd, sslpassword, ssl_key_password...
_SECRET_QUERY_VALUE = re.compile(r"([?&][^=&#?]*pass[^=&#?]*=)[^&#]*", re.IGNORECASE)


def mask_url(url: Optional[str]) -> Optional[str]:
    """The URL with its password replaced by ``***`` (None stays None).

    Parsed the way SQLAlchemy parses it (Kombu URLs have the same shape), so
    a password with ``/``, ``#`` or ``?`` in it is still found and hidden.
    Query parameters such as ``?password=`` are hidden too.
    """
    if not url:
        return url
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return "<unparsable url>"
    if parsed.password is None:
        return _SECRET_QUERY_VALUE.sub(r"\1***", url)
    prefix, rest = url.split("://", 1)
    host_part = rest.rsplit("@", 1)[1] if "@" in rest else rest
    user = "" if parsed.username is None else rest.split(":", 1)[0]
    return _SECRET_QUERY_VALUE.sub(r"\1***", f"{prefix}://{user}:***@{host_part}")


def validate_broker_url(key: str, url: str) -> None:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in BROKER_SCHEMES:
        raise ConfigError(f"relay:{key} {mask_url(url)!r} has an unsupported scheme {scheme!r}; allowed: {', '.join(BROKER_SCHEMES)}")


def validate_database_url(key: str, url: str) -> None:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"relay:{key} is not a valid SQLAlchemy URL: {mask_url(url)!r}") from None
    if parsed.get_backend_name() not in DATABASE_DIALECTS:
        raise ConfigError(
            f"relay:{key} {mask_url(url)!r} uses dialect {parsed.get_backend_name()!r}; allowed: {', '.join(DATABASE_DIALECTS)}"
        )
