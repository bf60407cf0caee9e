"""Broker message encoding and the reasons bad bodies are refused with."""

import msgpack
import pytest

from salt_engine_lib import message
from salt_engine_lib.errors import DecodeError


def test_round_trip_keeps_events_master_and_id():
    events = [("salt/job/1/new", {"fun": "test.ping", "raw": b"\x00\xff", "set": {1}}), ("custom/tag", [1, "two"])]
    message_id, body = message.encode(events, "master-1")
    batch = message.decode(body)
    assert batch.id == message_id
    assert batch.master_id == "master-1"
    assert batch.events == [("salt/job/1/new", {"fun": "test.ping", "raw": b"\x00\xff", "set": [1]}), ("custom/tag", [1, "two"])]


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"\xc1not msgpack", "not a msgpack document"),
        (msgpack.packb({"v": 1, "events": [["t", {}]]})[:-3], "not a msgpack document"),
        (msgpack.packb([1, 2, 3]), "not a salt-relay batch"),
        (msgpack.packb({"v": 99, "events": []}), "schema version 99 is not supported"),
        (msgpack.packb({"v": 1}), "no events list"),
        (msgpack.packb({"v": 1, "events": [["only-tag"]]}), "event 0 is not a [tag, data] pair"),
        (msgpack.packb({"v": 1, "events": [[7, {}]]}), "event 0 is not a [tag, data] pair"),
        ("text", "body is str, not bytes"),
    ],
)
def test_bad_bodies_are_refused_with_a_reason(body, reason):
    with pytest.raises(DecodeError) as info:
        message.decode(body)
    assert reason in info.value.reason


def test_oversize_body_is_refused_before_decoding():
    _, body = message.encode([("t", "x" * 5000)], "m")
    with pytest.raises(DecodeError, match="exceeds relay:max_message_bytes"):
        message.decode(body, max_bytes=1000)


def test_peek_reads_id_and_count_without_the_events():
    message_id, body = message.encode([("a", {"x": 1}), ("b", {"y": "z" * 1000})], "master-1", returns_from_job_cache=True)
    assert message.peek(body) == (message_id, 2)
    batch = message.decode(body)
    assert batch.returns_from_job_cache is True
    assert message.decode(message.encode([("a", {})], "m")[1]).returns_from_job_cache is False
