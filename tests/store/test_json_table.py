"""MariaDB's JSON_TABLE write path stores exactly what the executemany path stores.

Two fresh databases on the real MariaDB server get the same rows, one through
each path; every column of every table must read back identical.
"""

import datetime

import pytest
import sqlalchemy as sa

from salt_engine_lib import records
from salt_engine_lib.errors import BulkPathUnsupported
from salt_engine_lib.store import Store, json_table, writes
from salt_engine_lib.store.schema import events, jobs, returns
from tests.conftest import server_database

pytestmark = pytest.mark.mysql

JID = "20261125150000123456"
AWKWARD = [
    "it's",
    'say "hi"',
    "back\\slash",
    "tab\t new\n line\r",
    "nul\x00byte",
    "ctrl-z\x1a",
    "é 😀 中文",
    "",
    "%s %(x)s ?",
    "'); DROP TABLE returns; --",
]


def awkward_rows():
    now = datetime.datetime(2026, 11, 25, 15, 0, 0)  # no microseconds: the shortest DATETIME text
    job_rows = [
        records.job_row(JID, {"fun": "test.echo", "tgt": AWKWARD, "user": AWKWARD[6], "arg": AWKWARD}, ["m0", "m1"], "master-1", now=now)
    ]
    return_rows = []
    for index, value in enumerate(AWKWARD + [None, True, False, 0, -1, 2**63 - 1, 1.5, {"nested": AWKWARD}, [None]]):
        ret = {
            "id": f"m{index}",
            "jid": JID,
            "fun": "test.echo",
            "return": value,
            "retcode": index if index % 3 else None,
            "success": [True, False, None][index % 3],
            "_stamp": f"2026-11-25T15:00:00.{index:06d}+00:00",
        }
        return_rows.append(records.return_row(ret, "master-1", now=now + datetime.timedelta(microseconds=index)))
    event_rows = [records.event_row(f"tag/{index}/{text}", {"value": text}, "master-1", now=now) for index, text in enumerate(AWKWARD)]
    return job_rows, return_rows, event_rows


def table_rows(store, table):
    keys = list(table.primary_key.columns) if table is not events else [events.c.content_key]
    with store.connect() as conn:
        return [{k: v for k, v in row._mapping.items() if k != "id"} for row in conn.execute(sa.select(table).order_by(*keys))]


@pytest.fixture
def two_stores():
    with server_database("mysql") as first, server_database("mysql") as second:
        yield Store(first), Store(second)


def test_both_paths_store_identical_rows_and_upserts(two_stores, monkeypatch):
    fast, slow = two_stores
    job_rows, return_rows, event_rows = awkward_rows()
    fast.write_batch(jobs=job_rows, returns=return_rows, events=event_rows)
    with fast.connect() as conn:
        assert json_table.supported(conn)
    monkeypatch.setattr(json_table, "supported", lambda conn: False)
    slow.write_batch(jobs=job_rows, returns=return_rows, events=event_rows)
    monkeypatch.undo()
    for table in (jobs, returns, events):
        assert table_rows(fast, table) == table_rows(slow, table), table.name
    assert len(table_rows(fast, returns)) == len(return_rows)

    # Redelivery changes nothing; an authoritative return replaces the stored one.
    fast.write_batch(jobs=job_rows, returns=return_rows, events=event_rows)
    assert table_rows(fast, returns) == table_rows(slow, returns)
    replacement = dict(return_rows[0], ret={"full": "value"}, retcode=2, success=False)
    fast.write_batch(returns=[replacement], authoritative_returns=True)
    [row] = [r for r in table_rows(fast, returns) if r["minion_id"] == "m0"]
    assert (row["ret"], row["retcode"], row["success"]) == ({"full": "value"}, 2, False)


def test_rows_orjson_refuses_take_the_executemany_path(two_stores):
    store, _ = two_stores
    # An integer over 64 bits in a scalar column: the server refuses it either way,
    # but through executemany, with its own error.
    row = records.return_row({"id": "m1", "jid": JID, "fun": "f", "return": 1, "retcode": 2**70}, "master-1")
    with pytest.raises(BulkPathUnsupported):
        json_table.chunks(returns, [row])
    with pytest.raises(Exception, match="Out of range"):
        store.write_batch(returns=[row])


def test_a_big_batch_is_split_under_the_packet_limit(two_stores, monkeypatch):
    store, _ = two_stores
    monkeypatch.setattr(json_table, "MAX_CHUNK_BYTES", 4096)
    rows = [records.return_row({"id": f"m{i}", "jid": JID, "fun": "f", "return": "x" * 1000}, "master-1") for i in range(50)]
    columns, documents = json_table.chunks(returns, rows)
    assert len(documents) > 10 and all(len(doc.encode()) <= 4096 + 1200 for doc in documents)
    store.ensure_schema()
    with store.engine.begin() as conn:
        writes.insert_ignoring_duplicates(conn, returns, rows)
    assert len(table_rows(store, returns)) == 50
