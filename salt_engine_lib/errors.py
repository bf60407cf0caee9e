"""The salt-relay exception tree.

Library code raises these; only the Salt loader modules translate them into
``CommandExecutionError`` / ``SaltInvocationError`` for Salt's callers.
"""

from __future__ import annotations


class RelayError(Exception):
    """Base of every error salt-relay raises on purpose."""


class ConfigError(RelayError):
    """The ``relay:`` configuration is invalid; the message names the key."""


class StoreError(RelayError):
    """The SQL store could not be reached or refused a statement."""


class RecordError(RelayError):
    """A Salt document cannot become a row (missing or oversize key)."""


class JournalFull(RelayError):
    """The engine's journal is at ``journal_max_bytes``: the batch was not written (the caller counts it)."""


class BulkPathUnsupported(RelayError):
    """These rows cannot take MariaDB's JSON_TABLE bulk path; the store writes them with executemany."""


class BrokerUnavailable(RelayError):
    """The message broker could not be reached within the retry budget."""


class DecodeError(RelayError):
    """A broker message could not be decoded; keeps the raw bytes for the DLQ."""

    def __init__(self, reason: str, raw: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


class CaptureStopped(RelayError):
    """A thread the engine needs (the bus reader above all) stopped: the engine exits so Salt restarts it."""


class ImportSourceError(RelayError):
    """``salt-relay import``: the source (a jobs dir, a saltext-mysql database) cannot be read at all."""


class LegacyViewConflict(ConfigError):
    """``relay:legacy_views`` is on, but a table (not a view) named jids, salt_returns or salt_events exists."""
