"""The one way into the store: rows of events, one transaction, refusals isolated with their reason."""

import pytest

from salt_engine_lib import ingest, records
from salt_engine_lib.errors import RecordError, StoreError
from salt_engine_lib.store import Store, queries

JID = "20261125120000000001"


def ret(minion, value=True):
    return ingest.Event(f"salt/job/{JID}/ret/{minion}", {"fun": "test.ping", "id": minion, "jid": JID, "return": value}, "master-1")


class RefusingStore(Store):
    """Refuses every transaction holding a return of a minion named ``bad*`` while it answers
    queries: a database refusing data it cannot hold (produced for real on PostgreSQL and
    MariaDB in tests/faults/test_bad_input.py); counts the transactions it was asked for."""

    def __init__(self, url, up=True):
        super().__init__(url)
        self.up = up
        self.transactions = 0

    def write_rows(self, rows):
        self.transactions += 1
        if not self.up:
            raise StoreError("connection refused")
        if any(row["minion_id"].startswith("bad") for row in rows.returns):
            raise StoreError(f"refused {[row['minion_id'] for row in rows.returns if row['minion_id'].startswith('bad')]}")
        return super().write_rows(rows)

    def reachable(self):
        return self.up


@pytest.fixture
def store(tmp_path):
    return RefusingStore(f"sqlite:///{tmp_path / 'relay.db'}")


def test_everything_goes_in_one_transaction_when_the_database_takes_it(store):
    refused = []
    ingest.store_events(store, [ret(f"m{i}") for i in range(50)], lambda *args: refused.append(args))
    assert store.transactions == 1 and refused == []
    assert len(store.read(queries.get_jid, JID)) == 50


def test_refused_events_are_isolated_and_the_rest_is_stored(store):
    events = [ret(f"m{i}") for i in range(30)] + [ret("bad-1")] + [ret(f"n{i}") for i in range(30)] + [ret("bad-2")]
    refused = []
    ingest.store_events(store, events, lambda event, reason, error: refused.append((event.data["id"], reason, type(error))))
    assert sorted(refused) == [
        ("bad-1", "the database refused it: refused ['bad-1']", StoreError),
        ("bad-2", "the database refused it: refused ['bad-2']", StoreError),
    ]
    assert len(store.read(queries.get_jid, JID)) == 60
    assert store.transactions < 30  # bisected, not one transaction per event


def test_an_event_without_rows_is_refused_with_its_reason_before_any_write(store):
    nobody = ingest.Event(f"salt/job/{JID}/ret/x", {"fun": "test.ping", "jid": JID, "return": 1}, "master-1")
    unreadable = ingest.Event(None, {}, "master-1")
    refused = []
    ingest.store_events(store, [ret("m1"), nobody, unreadable], lambda event, reason, error: refused.append((reason, type(error))))
    assert refused[0] == ("missing id", RecordError)
    assert refused[1][1] is AttributeError and refused[1][0].startswith("AttributeError: ")
    assert store.read(queries.get_jid, JID).keys() == {"m1"}


def test_an_unreachable_database_raises_and_refuses_nothing(store):
    store.up = False
    refused = []
    with pytest.raises(StoreError, match="connection refused"):
        ingest.store_events(store, [ret("m1"), ret("bad")], lambda *args: refused.append(args))
    assert refused == [] and store.transactions == 1


def test_raise_refusal_gives_the_caller_the_original_error(store):
    with pytest.raises(RecordError, match="missing id"):
        ingest.store_events(store, [ingest.Event(f"salt/job/{JID}/ret/x", {"jid": JID}, None)], ingest.raise_refusal)


def test_the_job_cache_records_replace_the_bus_copies(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'relay.db'}")
    trimmed = ret("m1", "VALUE_TRIMMED")
    full = ingest.Event(records.JOB_CACHE_RETURN_TAG, dict(trimmed.data, **{"return": {"full": 1}}), "master-1")
    bus_job = ingest.Event(f"salt/job/{JID}/new", {"jid": JID, "fun": "test.ping", "tgt": "bus", "minions": ["m1"]}, "master-1")
    publish = ingest.Event(
        records.JOB_CACHE_LOAD_TAG, {"jid": JID, "load": {"jid": JID, "fun": "test.ping", "tgt": "cli"}, "publish": True}, "master-1"
    )
    ingest.store_events(store, [bus_job, trimmed, full, publish], ingest.raise_refusal)
    assert store.read(queries.get_jid, JID) == {"m1": {"return": {"full": 1}}}
    assert store.read(queries.get_load, JID)["tgt"] == "cli"
