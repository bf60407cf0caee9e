"""The journal: the engine's on-disk FIFO and the returner's outbox (real files, real processes)."""

import multiprocessing
import os
import signal

from salt_engine_lib.codec import pack, unpack
from salt_engine_lib.journal import JournalReader, JournalWriter


def test_records_round_trip_in_order_and_finished_segments_are_deleted(tmp_path):
    writer = JournalWriter(tmp_path, max_segment_bytes=200)
    sent = [{"n": n, "payload": b"\xff\x00bytes", "text": "x" * 30} for n in range(50)]
    for record in sent:
        writer.append(pack(record))
    writer.close()
    reader = JournalReader(tmp_path)
    got = []
    while True:
        records, positions = reader.read(7)
        if not records:
            break
        got += [unpack(record) for record in records]
        reader.commit(positions)
    assert [r["n"] for r in got] == list(range(50))
    assert got[0]["payload"] == b"\xff\x00bytes"
    assert list(tmp_path.iterdir()) == []


def test_uncommitted_records_are_read_again_by_a_new_reader(tmp_path):
    writer = JournalWriter(tmp_path)
    for n in range(5):
        writer.append(pack({"n": n}))
    first, _ = JournalReader(tmp_path).read(100)  # reader "crashes" before commit
    again, positions = JournalReader(tmp_path).read(100)
    assert [unpack(r)["n"] for r in first] == [unpack(r)["n"] for r in again] == list(range(5))
    # the writer is alive and its segment open: reading it fully does not delete it
    reader = JournalReader(tmp_path)
    reader.commit(positions)
    assert len(list(tmp_path.iterdir())) == 1


def _write_and_die(directory, count):
    writer = JournalWriter(directory)
    for n in range(count):
        writer.append(pack({"pid": os.getpid(), "n": n}))
    # an unfinished frame: header promises more bytes than were written
    os.write(writer._fd, b"\x00\x00\x10\x00partial")  # the writer's own descriptor: a frame cut short, as a kill mid-append leaves it
    os.kill(os.getpid(), signal.SIGKILL)


def test_many_writer_processes_and_a_killed_writer(tmp_path):
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_and_die, args=(tmp_path, 100)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    reader = JournalReader(tmp_path)
    got = []
    while True:
        records, positions = reader.read(64)
        got += [unpack(record) for record in records]
        reader.commit(positions)
        if not records:
            break
    assert len(got) == 400
    assert len({(r["pid"], r["n"]) for r in got}) == 400
    assert list(tmp_path.iterdir()) == []  # dead writers' segments, fully read, are gone
