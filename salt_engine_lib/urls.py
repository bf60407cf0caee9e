"""Broker and database URLs: validation and password masking."""

from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from salt_engine_lib.errors import ConfigError

BROKER_SCHEMES = ("amqp", "amqps", "pyamqp", "redis", "rediss", "memory")
DATABASE_DIALECTS = ("sqlite", "mysql", "mariadb", "postgresql")


def mask_url(url):
    """The URL with its password replaced by ``***`` (None stays None)."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return parts._replace(netloc=f"{userinfo}:***@{netloc[1]}").geturl()


def validate_broker_url(key, url):
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in BROKER_SCHEMES:
        raise ConfigError(
            f"relay:{key} {mask_url(url)!r} has an unsupported scheme {scheme!r}; "
            f"allowed: {', '.join(BROKER_SCHEMES)}"
        )


def validate_database_url(key, url):
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"relay:{key} is not a valid SQLAlchemy URL: {mask_url(url)!r}") from None
    if parsed.get_backend_name() not in DATABASE_DIALECTS:
        raise ConfigError(
            f"relay:{key} {mask_url(url)!r} uses dialect {parsed.get_backend_name()!r}; "
            f"allowed: {', '.join(DATABASE_DIALECTS)}"
        )
