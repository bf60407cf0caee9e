"""relay:legacy_views: saltext-mysql's jids, salt_returns and salt_events as views of the relay tables.

On every dialect: the upgrade creates them and is idempotent, refuses a real
table of those names, keeps them across a migration. On MariaDB: saltext-mysql's
own returner, loaded by Salt's loader, reads them and answers as relay's
returner does, and what the views hold is what saltext-mysql writes into its
tables. On MariaDB and PostgreSQL: Alcali's reads use an index.
"""

import json

import pytest
import sqlalchemy as sa

from salt_engine_lib import config, records
from salt_engine_lib.errors import ConfigError, LegacyViewConflict
from salt_engine_lib.store import Store, connection, legacy_views, migrate
from tests.support import alcali, databases

JID = "20261203120000000001"
STAMP = "2026-12-03T12:00:01.250000"
# saltext-mysql's columns, in its order (its module docstring's CREATE TABLEs).
COLUMNS = {
    "jids": ["jid", "load"],
    "salt_returns": ["fun", "jid", "return", "id", "success", "full_ret", "alter_time"],
    "salt_events": ["id", "tag", "data", "alter_time", "master_id"],
}
# saltext-mysql's jids table as its docstring creates it; elsewhere, as Salt's pgjsonb returner does.
FOREIGN_JIDS_TABLES = {
    "mysql": "CREATE TABLE `jids` (`jid` varchar(255) NOT NULL, `load` mediumtext NOT NULL, UNIQUE KEY `jid` (`jid`))",
    "postgresql": 'CREATE TABLE jids (jid varchar(255) NOT NULL PRIMARY KEY, "load" jsonb NOT NULL)',
    "sqlite": 'CREATE TABLE jids (jid varchar(255) NOT NULL PRIMARY KEY, "load" text NOT NULL)',
}


def _engine(database_url):
    return connection.get_engine(database_url)


def _views(engine):
    with engine.connect() as conn:
        return legacy_views.present(conn)


def _write_sample(database_url):
    load = {"fun": "state.apply", "arg": ["web"], "tgt": "web*", "tgt_type": "glob", "user": "root"}
    succeeded = {"id": "web1", "jid": JID, "fun": "state.apply", "fun_args": ["web"], "return": {"a": [1, "x"]}, "retcode": 0}
    Store(database_url).write_batch(
        jobs=[records.job_row(JID, load, ["web1", "web2", "web3"], "master1")],
        returns=[
            records.return_row(dict(succeeded, success=True, _stamp=STAMP), "master1"),
            # No "success" (as from salt-call): saltext-mysql stores '0'.
            records.return_row(dict(succeeded, id="web2", retcode=1, _stamp=STAMP), "master1"),
            records.return_row(dict(succeeded, id="web3", success=False, **{"return": "failed"}, _stamp=STAMP), "master1"),
        ],
        events=[records.event_row("custom/deploy", {"v": 1, "_stamp": STAMP}, "master1")],
    )
    return load, succeeded


def _rows(engine, view):
    with engine.connect() as conn:
        result = conn.execute(sa.text(f"SELECT * FROM {view}"))
        return list(result.keys()), [dict(row._mapping) for row in result]


def _naive(value):
    """A timestamp as the drivers give it (SQLite: text) -> ISO text without the 'T'."""
    return str(value).replace("T", " ")


def test_the_setting_defaults_to_false_and_is_validated():
    assert config.load().legacy_views is False
    assert config.load(daemon_block={"legacy_views": "yes"}).legacy_views is True
    with pytest.raises(ConfigError, match="relay:legacy_views must be true or false, got 'maybe'"):
        config.load(daemon_block={"legacy_views": "maybe"})


def test_upgrade_creates_the_views_with_saltext_mysql_columns_and_meanings(database_url):
    engine = _engine(database_url)
    migrate.upgrade(engine, legacy_views=True)
    assert _views(engine) == set(legacy_views.VIEW_NAMES)
    load, succeeded = _write_sample(database_url)

    columns, jids = _rows(engine, "jids")
    assert columns == COLUMNS["jids"]
    assert [(row["jid"], json.loads(row["load"])) for row in jids] == [(JID, load)]

    columns, returns = _rows(engine, "salt_returns")
    assert columns == COLUMNS["salt_returns"]
    by_minion = {row["id"]: row for row in returns}
    assert {minion: row["success"] for minion, row in by_minion.items()} == {"web1": "1", "web2": "0", "web3": "0"}
    web1 = by_minion["web1"]
    assert (web1["fun"], web1["jid"], json.loads(web1["return"])) == ("state.apply", JID, {"a": [1, "x"]})
    # full_ret: the return document as the returner got it, "return" included.
    assert json.loads(web1["full_ret"]) == dict(succeeded, success=True, _stamp=STAMP)
    assert json.loads(by_minion["web3"]["return"]) == "failed"
    assert json.loads(by_minion["web3"]["full_ret"])["return"] == "failed"
    assert _naive(web1["alter_time"]).startswith("2026-12-03 12:00:01.25")

    columns, events = _rows(engine, "salt_events")
    assert columns == COLUMNS["salt_events"]
    assert [(row["tag"], json.loads(row["data"]), row["master_id"]) for row in events] == [
        ("custom/deploy", {"v": 1, "_stamp": STAMP}, "master1")
    ]
    assert _naive(events[0]["alter_time"]).startswith("2026-12-03 12:00:01.25")


def test_a_second_upgrade_is_idempotent(database_url):
    engine = _engine(database_url)
    head = migrate.head_revision()
    assert migrate.upgrade(engine, legacy_views=True) == (None, head)
    _write_sample(database_url)
    before = [_rows(engine, view) for view in legacy_views.VIEW_NAMES]
    assert migrate.upgrade(engine, legacy_views=True) == (head, head)
    assert _views(engine) == set(legacy_views.VIEW_NAMES)
    assert [_rows(engine, view) for view in legacy_views.VIEW_NAMES] == before


def test_a_saltext_mysql_jids_table_is_refused_and_left_alone(database_url):
    engine = _engine(database_url)
    quoted_load = "`load`" if engine.dialect.name == "mysql" else '"load"'
    with engine.begin() as conn:
        conn.exec_driver_sql(FOREIGN_JIDS_TABLES[engine.dialect.name])
        conn.exec_driver_sql(f"INSERT INTO jids (jid, {quoted_load}) VALUES ('{JID}', '{{}}')")
    with pytest.raises(LegacyViewConflict, match=r"already has the table\(s\) jids .*relay:legacy_views: false"):
        migrate.upgrade(engine, legacy_views=True)
    assert migrate.current_revision(engine) is None  # refused before any migration ran
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT jid FROM jids")).scalars().all() == [JID]
    # Without the views the store works beside the foreign table.
    assert migrate.upgrade(engine, legacy_views=False)[1] == migrate.head_revision()
    assert _views(engine) == set()


def test_false_drops_the_views_and_none_keeps_them(database_url):
    engine = _engine(database_url)
    migrate.upgrade(engine, legacy_views=True)
    migrate.upgrade(engine)  # legacy_views unknown (None): as they were
    assert _views(engine) == set(legacy_views.VIEW_NAMES)
    migrate.upgrade(engine, legacy_views=False)
    assert _views(engine) == set()
    assert {"jobs", "returns", "events"} <= set(sa.inspect(engine).get_table_names())


def test_the_automatic_upgrade_creates_missing_views_and_never_drops_them(database_url):
    engine = _engine(database_url)
    migrate.ensure_current(engine, legacy_views=True)
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert _views(engine) == set(legacy_views.VIEW_NAMES)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP VIEW salt_events")
    migrate.ensure_current(engine, legacy_views=True)  # the schema is current: only the view is missing
    assert _views(engine) == set(legacy_views.VIEW_NAMES)
    migrate.ensure_current(engine)  # a process without the setting
    assert _views(engine) == set(legacy_views.VIEW_NAMES)


def test_the_views_are_dropped_around_a_migration_and_come_back(database_url):
    """0002 copies tables on SQLite (batch mode), whose final rename fails while a view names the table."""
    engine = _engine(database_url)
    migrate.upgrade(engine, "0001", legacy_views=True)
    assert _views(engine) == set(legacy_views.VIEW_NAMES)
    assert migrate.upgrade(engine) == ("0001", migrate.head_revision())  # legacy_views unknown: kept
    assert _views(engine) == set(legacy_views.VIEW_NAMES)
    _write_sample(database_url)
    assert sorted(row["id"] for row in _rows(engine, "salt_returns")[1]) == ["web1", "web2", "web3"]


# -- saltext-mysql's own returner on MariaDB ------------------------------------------------


def _master_returners(tmp_path, name, extra_opts):
    """Salt's loader with master opts, as the master's job cache gets them (no daemons)."""
    import salt.config
    import salt.minion

    opts = salt.config.master_config("/dev/null")
    opts["cachedir"] = str(tmp_path / name)
    opts.update(extra_opts)
    return salt.minion.MasterMinion(opts).returners


def _saltext_mysql_opts(database):
    # As benchmarks/_saltext_mysql.py: root has no password here, and the string
    # "None" is how saltext-mysql is told so (an empty value means "salt").
    return {
        "mysql.host": databases.MYSQL_HOST,
        "mysql.user": databases.MYSQL_USER,
        "mysql.pass": "None",
        "mysql.db": database,
        "mysql.port": databases.MYSQL_PORT,
    }


def _jobs():
    """(jid, load, minions, [returns]): what a master hands its job cache for three jobs."""
    first, second, third = "20261203120000000001", "20261203120500000002", "20261203121000000003"
    ping = {"fun": "test.ping", "arg": [], "tgt": "*", "tgt_type": "glob", "user": "root"}
    state = {"fun": "state.apply", "arg": ["web"], "tgt": "web2", "tgt_type": "glob", "user": "alice"}

    def ret(jid, minion, fun, value, success=True, **extra):
        return {
            "cmd": "_return",
            "id": minion,
            "jid": jid,
            "fun": fun,
            "fun_args": [],
            "return": value,
            "retcode": 0 if success else 2,
            "success": success,
            "_stamp": f"{jid[:4]}-{jid[4:6]}-{jid[6:8]}T{jid[8:10]}:{jid[10:12]}:{jid[12:14]}.500000",
            **extra,
        }

    # Every minion's newest test.ping is in the same job: saltext-mysql's get_fun joins
    # on MAX(jid) per (fun, id) by jid alone, so older jobs of the same function
    # could otherwise answer for a minion.
    return [
        (first, dict(ping, jid=first), ["web1", "web2"], [ret(first, "web1", "test.ping", True), ret(first, "web2", "test.ping", True)]),
        (
            second,
            dict(ping, jid=second),
            ["web1", "web2"],
            [ret(second, "web1", "test.ping", True), ret(second, "web2", "test.ping", True)],
        ),
        (
            third,
            dict(state, jid=third),
            ["web2"],
            [
                ret(
                    third,
                    "web2",
                    "state.apply",
                    {"file_|-/etc/motd_|-/etc/motd_|-managed": {"result": False}},
                    success=False,
                    out="highstate",
                )
            ],
        ),
    ]


def _events(jobs):
    return [{"tag": f"salt/job/{jid}/new", "data": dict(load, _stamp="2026-12-03T12:00:00.000000")} for jid, load, _, _ in jobs] + [
        {"tag": "custom/deploy", "data": {"app": "web", "_stamp": "2026-12-03T12:11:00.000000"}}
    ]


def _write_through(returners, prefix, jobs, events):
    """The job-cache calls of a master, through the loader: save_load, one returner call per return, event_return."""
    for jid, load, minions, rets in jobs:
        returners[f"{prefix}.save_load"](jid, load, minions)
        for ret in rets:
            returners[f"{prefix}.returner"](json.loads(json.dumps(ret)))
    returners[f"{prefix}.event_return"](events)


@pytest.fixture
def relay_database_on_mariadb():
    # Not a skip: scripts/venv.sh installs saltext-mysql with the test extra; a missing one fails.
    import saltext.mysql.returners.mysql  # noqa: F401

    with databases.server_database("mysql") as url:
        migrate.upgrade(_engine(url), legacy_views=True)
        yield url, sa.engine.make_url(url).database


@pytest.mark.mysql
def test_saltext_mysql_returner_reads_the_views_as_relay_reads_its_tables(tmp_path, relay_database_on_mariadb):
    url, name = relay_database_on_mariadb
    relay = _master_returners(tmp_path, "relay", {"relay": {"database_url": url, "legacy_views": True}})
    mysql = _master_returners(tmp_path, "mysql", _saltext_mysql_opts(name))
    assert "mysql.get_jid" in mysql, "saltext-mysql's returner did not load"
    jobs = _jobs()
    _write_through(relay, "relay", jobs, _events(jobs))

    assert mysql["mysql.get_jids"]() == relay["relay.get_jids"]()
    assert sorted(mysql["mysql.get_minions"]()) == relay["relay.get_minions"]() == ["web1", "web2"]
    for jid, load, minions, rets in jobs:
        # relay's load adds the minions it was published to ("Minions", as local_cache does).
        relay_load = relay["relay.get_load"](jid)
        assert relay_load.pop("Minions") == minions
        assert mysql["mysql.get_load"](jid) == relay_load == load
        # saltext-mysql answers the whole return document per minion, relay the
        # keys local_cache keeps (return, retcode, success, out): the same values.
        full, relay_entries = mysql["mysql.get_jid"](jid), relay["relay.get_jid"](jid)
        assert full == {ret["id"]: ret for ret in rets}
        assert set(full) == set(relay_entries)
        for minion, entry in relay_entries.items():
            assert entry == {key: full[minion][key] for key in entry}
    for fun in ("test.ping", "state.apply", "cmd.run"):
        full, values = mysql["mysql.get_fun"](fun), relay["relay.get_fun"](fun)
        # saltext-mysql: {minion: whole return document}; relay: {minion: return value}.
        assert {minion: document["return"] for minion, document in full.items()} == values
    assert set(mysql["mysql.get_fun"]("test.ping")) == {"web1", "web2"}
    assert mysql["mysql.get_fun"]("test.ping")["web1"]["jid"] == "20261203120500000002"


@pytest.mark.mysql
def test_the_views_hold_what_saltext_mysql_writes_into_its_tables(tmp_path, relay_database_on_mariadb):
    """The same job-cache calls through saltext-mysql into its own tables, and through relay into the views."""
    from benchmarks import _saltext_mysql  # its schema, read from the installed saltext-mysql's docstring

    url, _ = relay_database_on_mariadb
    with databases.mysql_admin() as admin:
        saltext_database = _saltext_mysql.create_database(admin)
    try:
        relay = _master_returners(tmp_path, "relay", {"relay": {"database_url": url}})
        mysql = _master_returners(tmp_path, "mysql", _saltext_mysql_opts(saltext_database))
        jobs = _jobs()
        _write_through(relay, "relay", jobs, _events(jobs))
        _write_through(mysql, "mysql", jobs, _events(jobs))
        ours = sa.create_engine(url)
        theirs = sa.create_engine(databases.server_url("mysql", saltext_database))
        json_columns = {"load", "return", "full_ret", "data"}

        def comparable(engine, view, key):
            # alter_time: saltext-mysql's is its INSERT time, ours the return's _stamp;
            # salt_events.id: each database's own counter.
            skipped = {"alter_time", "id"} if view == "salt_events" else {"alter_time"}
            _, rows = _rows(engine, view)
            kept = [
                {column: json.loads(value) if column in json_columns else value for column, value in row.items() if column not in skipped}
                for row in rows
            ]
            return sorted(kept, key=key)

        for view, key in (
            ("jids", lambda row: row["jid"]),
            ("salt_returns", lambda row: (row["jid"], row["id"])),
            ("salt_events", lambda row: (row["tag"], json.dumps(row["data"], sort_keys=True))),
        ):
            assert comparable(ours, view, key) == comparable(theirs, view, key), view
        ours.dispose()
        theirs.dispose()
    finally:
        databases.drop_database("mysql", saltext_database)


# -- Alcali's reads use an index -------------------------------------------------------------

ALCALI_JOBS = 3000
# The graph reads a time window: where it holds a good share of the returns the
# planner rightly prefers reading the table (its plan is in the benchmark's file).
INDEXED_QUERIES = [query for query in alcali.QUERIES if "graph" not in query.name]


@pytest.mark.parametrize(
    "dialect", [pytest.param("mysql", marks=pytest.mark.mysql), pytest.param("postgresql", marks=pytest.mark.postgresql)]
)
def test_alcali_reads_on_the_views_use_an_index(dialect):
    with databases.server_database(dialect) as url:
        engine = _engine(url)
        migrate.upgrade(engine, legacy_views=True)
        alcali.fill(Store(url), ALCALI_JOBS)
        params = alcali.parameters(ALCALI_JOBS)
        with engine.connect() as conn:
            plans = [alcali.explain(conn, query, params) for query in INDEXED_QUERIES]
            for query in INDEXED_QUERIES:  # and each runs, and finds rows
                assert conn.execute(sa.text(alcali.sql_for(conn, query)), params).fetchall(), query.name
    scanned = [f"{plan.query.name}: full scan of {', '.join(plan.full_scans)}\n{plan.text}" for plan in plans if plan.full_scans]
    assert not scanned, "\n\n".join(scanned)
