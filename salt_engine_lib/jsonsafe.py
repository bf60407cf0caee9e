"""JSON for Salt data, which is not always JSON: bytes, sets, tuples, datetimes.

Used for every JSON column (the engine's ``json_serializer``) and for the
content key of events, so the same data always gives the same text.
"""

import base64
import datetime
import json


def _default(value):
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            # Invalid UTF-8 is kept losslessly rather than dropped or mangled.
            return {"__bytes_base64__": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return str(value)


def dumps(value):
    return json.dumps(value, default=_default, ensure_ascii=False, separators=(",", ":"))


def canonical_dumps(value):
    """Key-sorted JSON; falls back to insertion order for mixed-type keys."""
    try:
        return json.dumps(value, default=_default, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    except TypeError:
        return dumps(value)
