"""``salt-relay import mysql URL`` (GitHub issue #18): a saltext-mysql database into relay, answered alike.

A real master with ``master_job_cache: mysql`` and ``event_return: mysql``
(saltext-mysql's own returner, its documented schema on MariaDB) and a
minion run real jobs. Then, with the daemons stopped, the real CLI imports
that database into a fresh relay database of each dialect, and saltext-mysql's
get_jids / get_load / get_jid answer as relay's do, read through Salt's loader
in the importing master's namespace, modulo one documented normalization:
saltext-mysql's get_jid answers each minion's whole return document, relay's
(as local_cache's) its return, retcode, success and out. Every salt_events
row becomes one relay event. A second run imports nothing.

Refusals: a job with a jid longer than relay's column (written by
saltext-mysql's own save_load and returner, through the loader) and a
``full_ret`` that is not JSON (written with SQL: saltext-mysql cannot write
one, the fault is made by hand).
"""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import _saltext_mysql
from tests.integration import parity_helpers as ph
from tests.support import databases as dbs
from tests.support.processes import in_forked_process

pytestmark = [pytest.mark.integration, pytest.mark.mysql]

# Not a skip: scripts/venv.sh installs saltext-mysql with the test extra; a missing one fails.
import saltext.mysql.returners.mysql  # noqa: E402, F401

DIALECTS = [pytest.param("sqlite"), pytest.param("mysql"), pytest.param("postgresql", marks=pytest.mark.postgresql)]
SALT_RELAY = os.path.join(os.path.dirname(sys.executable), "salt-relay")
LONG_JID = "20261203000000000001" + "9" * 60
RETURN_KEYS = ("return", "retcode", "success", "out")


@pytest.fixture(scope="module")
def source_name():
    with dbs.mysql_admin() as admin:
        name = _saltext_mysql.create_database(admin)
    yield name
    dbs.drop_database("mysql", name)


@pytest.fixture(scope="module")
def master_config(salt_factories, source_name):
    """The config of a master whose job cache and event returner were saltext-mysql; its jobs run, the daemons stopped."""
    overrides = {**ph.COMMON_MASTER_CONFIG, "master_job_cache": "mysql", "event_return": "mysql", **_saltext_mysql.opts(source_name)}
    master = salt_factories.salt_master_daemon("import-my-master", overrides=overrides)
    with master.started(start_timeout=120), ph.started_minions(master, "importmy", count=1) as minions:
        minion = minions[0].id
        cli = master.salt_cli(timeout=60)
        assert cli.run("test.ping", minion_tgt=minion).data is True
        assert cli.run("test.arg", "one", "color=blue", minion_tgt=minion).data["args"] == ["one"]
        assert cli.run("cmd.run", "echo hi", minion_tgt=minion).data == "hi"
        assert cli.run("cmd.run", "exit 3", minion_tgt=minion).data == ""
    in_forked_process(_write_oddities, dict(master.config))
    with dbs.mysql_admin(database=source_name) as conn, conn.cursor() as cursor:
        cursor.execute(
            "INSERT INTO salt_returns (fun, jid, `return`, id, success, full_ret) VALUES (%s, %s, %s, %s, %s, %s)",
            ("test.ping", "20261203000000000002", "true", "broken-minion", "1", "{not json"),
        )
    return master.config_dir, dict(master.config)


def _write_oddities(opts):
    """A job with a jid relay's column cannot hold, through saltext-mysql's own functions."""
    import salt.minion

    returners = salt.minion.MasterMinion(opts).returners
    returners["mysql.save_load"](LONG_JID, {"fun": "test.ping", "arg": [], "tgt": "x", "tgt_type": "glob", "jid": LONG_JID, "user": "root"})
    returners["mysql.returner"](
        {"id": "x", "jid": LONG_JID, "fun": "test.ping", "fun_args": [], "return": True, "retcode": 0, "success": True}
    )


def answers(opts, url):
    """saltext-mysql's and relay's answers for saltext-mysql's jobs, through a MasterMinion's loader (own process)."""
    import salt.minion

    returners = salt.minion.MasterMinion(dict(opts, relay={"database_url": url})).returners
    jids = sorted(returners["mysql.get_jids"]())
    return {
        cache: {
            "get_jids": returners[f"{cache}.get_jids"](),
            **{function: {jid: returners[f"{cache}.{function}"](jid) for jid in jids} for function in ("get_load", "get_jid")},
        }
        for cache in ("mysql", "relay")
    }


def normalized(mysql):
    """saltext-mysql's answers as relay gives them: get_jid entries keep return/retcode/success/out; the refused jobs gone."""
    refused = {LONG_JID}
    return {
        "get_jids": {jid: job for jid, job in mysql["get_jids"].items() if jid not in refused},
        "get_load": {jid: load for jid, load in mysql["get_load"].items() if jid not in refused},
        "get_jid": {
            jid: {minion: {key: doc[key] for key in RETURN_KEYS if key in doc} for minion, doc in returns.items()}
            for jid, returns in mysql["get_jid"].items()
            if jid not in refused
        },
    }


def salt_relay_import(config_dir, url, source_url, workdir):
    argv = [SALT_RELAY, "-c", str(config_dir), "--database-url", url, "import", "mysql", source_url, "--json", "--batch-size", "7"]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=workdir, timeout=300)
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.mark.parametrize("dialect", DIALECTS)
def test_imported_database_answers_like_saltext_mysql_and_a_rerun_adds_nothing(master_config, source_name, dialect, tmp_path):
    config_dir, opts = master_config
    source_url = dbs.server_url("mysql", source_name)
    source = dbs.Reader(source_url)
    source_rows = {table: source.scalar(f"SELECT COUNT(*) FROM {table}") for table in ("jids", "salt_returns", "salt_events")}
    source.dispose()
    assert source_rows["salt_events"] > 10 and source_rows["jids"] >= 5, source_rows

    with dbs.fresh_database(dialect, tmp_path) as url:
        status, first, stderr = salt_relay_import(config_dir, url, source_url, tmp_path)
        assert status == 3, stderr  # done, with the two refused rows
        assert first["refused"] == {
            "job": {"jid longer than 64 characters": 1},
            "return": {"jid longer than 64 characters": 1, "bad JSON in full_ret": 1},
        }
        assert first["imported"]["jobs"] == source_rows["jids"] - 1
        assert first["imported"]["returns"] + first["skipped"]["returns"] == source_rows["salt_returns"] - 2
        assert first["imported"]["events"] + first["skipped"]["events"] == source_rows["salt_events"]
        assert first["imported"]["events"] == source_rows["salt_events"]  # each event is distinct (its _stamp)
        assert first["batches"] > 3
        refused = [json.loads(line) for line in open(first["refused_file"])]
        assert {(line["kind"], line["reason"]) for line in refused} == {
            ("job", "jid longer than 64 characters"),
            ("return", "jid longer than 64 characters"),
            ("return", "bad JSON in full_ret"),
        }

        found = in_forked_process(answers, opts, url)
        expected, relay = normalized(found["mysql"]), found["relay"]
        funs = {job["Function"] for job in expected["get_jids"].values()}
        assert {"test.ping", "test.arg", "cmd.run"} <= funs, funs
        assert relay["get_jids"] == expected["get_jids"]
        assert {jid: relay["get_load"][jid] for jid in expected["get_load"]} == expected["get_load"]
        assert {jid: relay["get_jid"][jid] for jid in expected["get_jid"]} == expected["get_jid"]

        reader = dbs.Reader(url)
        tags = sorted(row[0] for row in reader.rows("SELECT tag FROM events"))
        reader.dispose()
        source = dbs.Reader(source_url)
        assert tags == sorted(row[0] for row in source.rows("SELECT tag FROM salt_events"))
        source.dispose()

        status, again, stderr = salt_relay_import(config_dir, url, source_url, tmp_path)
        assert status == 3, stderr  # the same two rows are refused again
        assert again["imported"] == {"jobs": 0, "returns": 0, "events": 0}
        assert again["skipped"] == {table: first["imported"][table] + first["skipped"][table] for table in ("jobs", "returns", "events")}
