"""Schema management: Alembic on first use, explicit upgrades, the auto_upgrade switch."""

import datetime
import json
import threading
import time

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from salt_engine_lib.errors import StoreError
from salt_engine_lib import records
from salt_engine_lib.store import Store, connection, migrate, queries, writes
from salt_engine_lib.store.schema import metadata


def test_schema_is_created_on_first_use(database_url):
    engine = connection.get_engine(database_url)
    assert migrate.current_revision(engine) is None
    assert not sa.inspect(engine).get_table_names()

    store = Store(database_url)
    assert store.read(queries.counts) == {"jobs": 0, "returns": 0, "events": 0}
    assert migrate.current_revision(engine) == migrate.head_revision() is not None
    assert {"jobs", "returns", "events", "alembic_version"} <= set(sa.inspect(engine).get_table_names())


def test_migrations_match_schema_py(store):
    # The frozen migration and schema.py must describe the same tables, columns and indexes.
    store.ensure_schema()
    with store.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_upgrade_twice_is_a_no_op(database_url):
    engine = connection.get_engine(database_url)
    head = migrate.head_revision()
    assert migrate.upgrade(engine) == (None, head)
    assert migrate.upgrade(engine) == (head, head)
    assert migrate.current_revision(engine) == head
    migrate.ensure_current(engine)
    assert migrate.current_revision(engine) == head


def test_without_auto_upgrade_an_empty_database_is_refused(database_url):
    store = Store(database_url, auto_upgrade=False)
    with pytest.raises(StoreError, match="salt-relay db upgrade"):
        store.write_batch(jobs=[])
    assert migrate.current_revision(connection.get_engine(database_url)) is None  # nothing created

    migrate.upgrade(connection.get_engine(database_url))
    assert Store(database_url, auto_upgrade=False).read(queries.counts)["jobs"] == 0


@pytest.mark.timeout(120)
def test_concurrent_first_use_upgrades_once(database_url):
    """Several processes may open an empty database at once; the upgrade lock serialises them."""
    engines = [connection.create_engine(database_url) for _ in range(4)]
    # Connect one by one first: on a brand-new SQLite file, simultaneous first
    # connections can fail in `PRAGMA journal_mode=WAL` ("database is locked").
    # That is a separate known issue (connection.py); this test is about the upgrade lock.
    for engine in engines:
        with engine.connect():
            pass
        # A slow commit widens the window between the upgrade and its commit:
        # the upgrade lock has to cover the commit, or a loser reads no revision.
        sa.event.listen(engine, "commit", lambda conn: time.sleep(0.2))
    barrier = threading.Barrier(len(engines))
    results, errors = [], []

    def upgrade(engine):
        try:
            barrier.wait(timeout=30)
            results.append(migrate.upgrade(engine))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=upgrade, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    for engine in engines:
        engine.dispose()
    assert errors == []
    head = migrate.head_revision()
    assert sorted(results, key=str) == sorted([(None, head)] + [(head, head)] * 3, key=str)


def test_the_head_revision_constant_is_alembics_head():
    # The store checks the revision without importing Alembic (migrate.HEAD_REVISION); a new
    # migration must move the constant.
    assert migrate.head_revision() == migrate.alembic_head_revision()


def test_a_database_newer_than_this_salt_relay_is_refused_and_left_alone(database_url):
    """A revision this build does not know (a newer salt-relay upgraded the database): a clear error, nothing written."""
    store = Store(database_url)
    store.ensure_schema()
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StoreError, match="at schema revision 9999, newer than this salt-relay's"):
        Store(database_url).ensure_schema()
    assert migrate.current_revision(store.engine) == "9999"


# Rows as revision 0001 stored them: one master's job and return, a row a minion
# wrote (no master), and events of both.
_JID = "20261125120000000001"
_ROWS_0001 = {
    "jobs": [
        {"jid": _JID, "master_id": "m-1", "fun": "test.ping", "load": '{"fun": "test.ping"}', "minions": '["web1"]'},
        {"jid": "20261125120000000002", "master_id": None, "fun": "test.arg", "load": '{"fun": "test.arg"}', "minions": None},
    ],
    "returns": [
        {"jid": _JID, "minion_id": "web1", "master_id": "m-1", "fun": "test.ping", "ret": "true", "document": "{}"},
        {"jid": "20261125120000000002", "minion_id": "web1", "master_id": None, "fun": "test.arg", "ret": "1", "document": "{}"},
    ],
}


def _insert_0001_rows(conn):
    stored = {"stored_at": datetime.datetime(2026, 11, 25, 12, 0, 1)}
    for table, rows in _ROWS_0001.items():
        for row in rows:
            columns = {**row, **stored}
            names = ", ".join(f'"{name}"' if name in ("user", "load") else name for name in columns)
            if conn.dialect.name in ("mysql", "mariadb"):
                names = names.replace('"', "`")
            conn.execute(sa.text(f"INSERT INTO {table} ({names}) VALUES ({', '.join(':' + name for name in columns)})"), columns)
    for master_id, tag in (("m-1", "salt/key"), (None, "custom/minion")):
        key = records.content_key(tag, {"n": 1}, master_id)
        conn.execute(
            sa.text("INSERT INTO events (content_key, tag, data, master_id, stamp, stored_at) VALUES (:key, :tag, :data, :master, :t, :t)"),
            {"key": key, "tag": tag, "data": '{"n": 1}', "master": master_id, "t": stored["stored_at"]},
        )


def test_0002_keeps_every_0001_row_in_its_masters_namespace(database_url):
    """An existing 0001 database, rows in it, upgraded in place: nothing lost, nothing doubled later."""
    engine = connection.get_engine(database_url)
    migrate.upgrade(engine, "0001")
    with engine.begin() as conn:
        _insert_0001_rows(conn)
    assert migrate.upgrade(engine) == ("0001", migrate.head_revision())

    with engine.connect() as conn:
        jobs = conn.execute(sa.text("SELECT jid, namespace, master_id FROM jobs ORDER BY jid")).all()
        rets = conn.execute(sa.text("SELECT jid, namespace, minion_id FROM returns ORDER BY jid")).all()
        evts = conn.execute(sa.text("SELECT tag, namespace, content_key FROM events ORDER BY tag")).all()
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    assert [tuple(row) for row in jobs] == [(_JID, "m-1", "m-1"), ("20261125120000000002", "", None)]
    assert [tuple(row) for row in rets] == [(_JID, "m-1", "web1"), ("20261125120000000002", "", "web1")]
    assert [tuple(row)[:2] for row in evts] == [("custom/minion", ""), ("salt/key", "m-1")]

    # The same job, return and event arriving again after the upgrade collapse into the old rows...
    store = Store(database_url)
    load = {"jid": _JID, "load": {"fun": "test.ping"}, "minions": ["web1"]}
    ret = {"id": "web1", "jid": _JID, "fun": "test.ping", "return": True}
    store.write_rows(
        writes.Rows.merge(
            [
                records.rows_from_event(records.JOB_CACHE_LOAD_TAG, load, "m-1"),
                records.rows_from_event(records.JOB_CACHE_RETURN_TAG, ret, "m-1"),
                records.rows_from_event("salt/key", {"n": 1}, "m-1"),
            ]
        )
    )
    # ...while another master's job with the same jid is its own.
    store.write_rows(records.rows_from_event(records.JOB_CACHE_LOAD_TAG, load, "m-2"))
    with engine.connect() as conn:
        doubled = conn.execute(sa.text("SELECT jid, namespace, count(*) FROM jobs GROUP BY jid, namespace HAVING count(*) > 1")).all()
        per_jid = dict(conn.execute(sa.text("SELECT jid, count(*) FROM jobs GROUP BY jid")).all())
        returns_doubled = conn.execute(
            sa.text("SELECT jid, minion_id, count(*) FROM returns GROUP BY jid, minion_id HAVING count(*) > 1")
        ).all()
        events_of_tag = conn.execute(sa.text("SELECT count(*) FROM events WHERE tag = 'salt/key'")).scalar()
    assert doubled == [] and returns_doubled == [] and events_of_tag == 1
    assert per_jid == {_JID: 2, "20261125120000000002": 1}  # m-1's and m-2's jobs, apart


def test_0002_downgrades_to_0001_with_its_rows(database_url):
    engine = connection.get_engine(database_url)
    migrate.upgrade(engine, "0001")
    with engine.begin() as conn:
        _insert_0001_rows(conn)
    migrate.upgrade(engine)
    from alembic import command

    with engine.connect() as conn:
        command.downgrade(migrate.alembic_config(conn), "0001")
        conn.commit()
    assert migrate.current_revision(engine) == "0001"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar() == 2
        assert conn.execute(sa.text("SELECT count(*) FROM returns")).scalar() == 2
        assert "namespace" not in {column["name"] for column in sa.inspect(conn).get_columns("jobs")}


def test_0003_renders_the_listing_of_existing_jobs_0005_moves_it_and_both_downgrade(database_url):
    """Jobs stored before 0003 get their get_jids entry rendered by the upgrade, the same as a new write's;
    0005 moves it into job_listings (with an end time set in between as its tail), and back on downgrade."""
    import salt.utils.jid

    engine = connection.get_engine(database_url)
    migrate.upgrade(engine, "0001")
    with engine.begin() as conn:
        _insert_0001_rows(conn)
    migrate.upgrade(engine, "0002")
    assert migrate.upgrade(engine, "0003") == ("0002", "0003")
    expected = {row["jid"]: salt.utils.jid.format_jid_instance(row["jid"], json.loads(row["load"])) for row in _ROWS_0001["jobs"]}
    with engine.connect() as conn:
        rendered = dict(conn.execute(sa.text("SELECT jid, listing FROM jobs")).all())
    assert {jid: json.loads("{" + member + "}")[jid] for jid, member in rendered.items()} == expected

    ended_jid = _ROWS_0001["jobs"][0]["jid"]
    ended_at = datetime.datetime(2026, 12, 4, 9, 5, 1, 7)
    migrate.upgrade(engine, "0004")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET ended_at = :ended WHERE jid = :jid"), {"ended": ended_at, "jid": ended_jid})
    assert migrate.upgrade(engine) == ("0004", "0005")
    expected[ended_jid]["EndTime"] = "2026, Dec 04 09:05:01.000007"
    with engine.connect() as conn:
        assert "listing" not in {column["name"] for column in sa.inspect(conn).get_columns("jobs")}
        assert conn.execute(sa.text("SELECT count(*) FROM job_listings WHERE head IS NOT NULL")).scalar() == len(expected)
        assert queries.job_listing(conn) == expected

    with engine.connect() as conn:
        from alembic import command

        command.downgrade(migrate.alembic_config(conn), "0004")
        conn.commit()
    with engine.connect() as conn:
        assert dict(conn.execute(sa.text("SELECT jid, listing FROM jobs")).all()) == rendered
        assert not sa.inspect(conn).has_table("job_listings")
        command.downgrade(migrate.alembic_config(conn), "0002")
        conn.commit()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar() == 2
        assert "listing" not in {column["name"] for column in sa.inspect(conn).get_columns("jobs")}
