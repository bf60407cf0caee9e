"""Broker messages: one msgpack-encoded batch of bus events.

A message body is a msgpack map::

    {"v": 1, "id": "<hex>", "master": "<master id>", "namespace": "<job namespace, optional>",
     "created": <epoch s>, "returns_from_job_cache": <bool, optional>, "events": [[tag, data], ...]}

``v`` is the schema version; a worker rejects (dead-letters) versions it
does not know instead of guessing. ``id`` is also the AMQP message id, so a
dead letter can be traced to the engine log line that sent it.
``returns_from_job_cache`` says the master's job cache is relay: its own
records (tag ``salt-relay/job-cache/return``) carry every minion return, so
the bus copies of jobs and returns make ``events`` rows only. ``namespace`` is
the sending master's job namespace (its cluster id) where it is not its
master id; a message without it is from a master whose namespace is its
id. The header comes before
``events`` so :func:`peek` reads it without decoding the events.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any, Iterable, Optional

from salt_engine_lib import codec
from salt_engine_lib.errors import DecodeError

SCHEMA_VERSION = 1
CONTENT_TYPE = "application/x-salt-relay+msgpack"


@dataclasses.dataclass(frozen=True)
class Batch:
    id: str
    master_id: object
    created: float
    events: list  # [(tag, data), ...]
    returns_from_job_cache: bool = False
    namespace: Optional[str] = None  # None: the master id


def encode(
    events: Iterable[tuple[str, Any]],
    master_id: Optional[str],
    message_id: Optional[str] = None,
    created: Optional[float] = None,
    returns_from_job_cache: bool = False,
    namespace: Optional[str] = None,
) -> tuple[str, bytes]:
    """(message id, body bytes) for a batch of ``(tag, data)`` events."""
    message_id = message_id or uuid.uuid4().hex
    document = {
        "v": SCHEMA_VERSION,
        "id": message_id,
        "master": master_id,
        "created": time.time() if created is None else created,
    }
    if namespace is not None and namespace != master_id:
        document["namespace"] = namespace
    if returns_from_job_cache:
        document["returns_from_job_cache"] = True
    document["events"] = [[tag, data] for tag, data in events]  # last: see peek()
    return message_id, codec.pack(document)


def decode(body: Any, max_bytes: Optional[int] = None) -> Batch:
    """The :class:`Batch` in ``body``; DecodeError with a reason a person can act on."""
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise DecodeError(f"body is {type(body).__name__}, not bytes", b"")
    body = bytes(body)
    if max_bytes is not None and len(body) > max_bytes:
        raise DecodeError(f"message of {len(body)} bytes exceeds relay:max_message_bytes ({max_bytes})", body)
    try:
        document = codec.unpack(body)
    except Exception as err:  # msgpack raises several unrelated types
        raise DecodeError(f"not a msgpack document ({type(err).__name__}: {err})", body) from None
    if not isinstance(document, dict) or "v" not in document:
        raise DecodeError("not a salt-relay batch (no schema version)", body)
    if document["v"] != SCHEMA_VERSION:
        raise DecodeError(f"schema version {document['v']!r} is not supported (this worker reads {SCHEMA_VERSION})", body)
    events = document.get("events")
    if not isinstance(events, list):
        raise DecodeError("batch has no events list", body)
    pairs = []
    for index, event in enumerate(events):
        if not isinstance(event, (list, tuple)) or len(event) != 2 or not isinstance(event[0], str):
            raise DecodeError(f"event {index} is not a [tag, data] pair", body)
        pairs.append((event[0], event[1]))
    created = document.get("created")
    return Batch(
        id=str(document.get("id") or ""),
        master_id=document.get("master"),
        created=float(created) if isinstance(created, (int, float)) else time.time(),
        events=pairs,
        returns_from_job_cache=document.get("returns_from_job_cache") is True,
        namespace=document["namespace"] if isinstance(document.get("namespace"), str) else None,
    )


def peek(body: bytes) -> tuple[str, int]:
    """(message id, number of events) of a body :func:`encode` made, without decoding the events.

    The engine's forwarder needs both for every batch it sends; decoding a
    batch of 500 big returns just to count them costs milliseconds.
    """
    unpacker = codec.unpacker(body)
    message_id, count = "", 0
    for _ in range(unpacker.read_map_header()):
        key = unpacker.unpack()
        if key == "events":
            count = unpacker.read_array_header()
            break
        value = unpacker.unpack()
        if key == "id":
            message_id = str(value)
    return message_id, count


def created_at(body: bytes) -> Optional[float]:
    """The ``created`` time of a body :func:`encode` made, without decoding the events; None if unreadable."""
    unpacker = codec.unpacker(body)
    try:
        for _ in range(unpacker.read_map_header()):
            key = unpacker.unpack()
            if key == "events":
                return None
            value = unpacker.unpack()
            if key == "created" and isinstance(value, (int, float)):
                return float(value)
    except Exception:  # a status must not fail on one bad record
        return None
    return None
