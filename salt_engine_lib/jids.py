"""Salt jids and timestamps <-> naive UTC datetimes (what the store keeps).

Its own module, under both :mod:`records` and :mod:`store`, which both need it.
"""

from __future__ import annotations

import datetime
from typing import Any, Optional

_JID_FORMAT = "%Y%m%d%H%M%S%f"
#: Salt's jid_to_time format, ``2026, Nov 22 18:16:33.638280``: local_cache's ``endtime`` files and the
#: returner API's ``StartTime``/``EndTime``.
SALT_TIME_FORMAT = "%Y, %b %d %H:%M:%S.%f"


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def jid_time(jid: Any) -> Optional[datetime.datetime]:
    """Start time encoded in a Salt jid (naive UTC), or None."""
    try:
        return datetime.datetime.strptime(str(jid)[:20], _JID_FORMAT)
    except ValueError:
        return None


def format_salt_time(when: datetime.datetime) -> str:
    """``when`` in :data:`SALT_TIME_FORMAT` (what the listing's SQL renders too)."""
    return when.strftime(SALT_TIME_FORMAT)


def parse_salt_time(text: Any) -> Optional[datetime.datetime]:
    """A :data:`SALT_TIME_FORMAT` string -> datetime, or None."""
    try:
        return datetime.datetime.strptime(str(text).strip(), SALT_TIME_FORMAT)
    except ValueError:
        return None


def time_to_jid(when: datetime.datetime) -> str:
    """The smallest jid of that instant, for jid range scans."""
    return when.strftime(_JID_FORMAT)


def parse_stamp(value: Any) -> Optional[datetime.datetime]:
    """Salt's ``_stamp`` (aware or naive ISO-8601) or an epoch -> naive UTC."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.datetime.fromtimestamp(value, datetime.timezone.utc).replace(tzinfo=None)
        parsed = datetime.datetime.fromisoformat(str(value))
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return parsed
