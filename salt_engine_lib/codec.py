"""The one msgpack codec of salt-relay: broker messages, outbox records and kept loads.

Bus data is whatever Salt's serializer accepted: sets and tuples travel as
lists, anything else msgpack cannot hold as its text, and lone surrogates
(Salt's spelling of invalid UTF-8) as they are.
"""

from __future__ import annotations

from typing import Any

import msgpack


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True, default=_default, unicode_errors="surrogatepass")


def unpack(payload: bytes) -> Any:
    return msgpack.unpackb(payload, raw=False, strict_map_key=False, unicode_errors="surrogatepass")


def unpacker(payload: bytes) -> msgpack.Unpacker:
    """A streaming reader over ``payload``, to read a document's first keys without decoding the rest."""
    reader = msgpack.Unpacker(raw=False, strict_map_key=False, unicode_errors="surrogatepass", max_buffer_size=max(len(payload), 1))
    reader.feed(payload)
    return reader
