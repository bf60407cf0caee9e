"""salt_engine_lib.importers on jobs written by Salt's own local_cache functions (no daemons) into a real store."""

import io
import json
import os
import pathlib
import tempfile

import pytest
from click.testing import CliRunner

from salt_engine_lib import config as relay_config
from salt_engine_lib import jids
from salt_engine_lib.cli import main
from salt_engine_lib.importers import common, local_cache
from salt_engine_lib.store import Store, queries
from tests.support import databases

MASTER = "unit-import-master"


def _opts(cachedir):
    import salt.config

    opts = salt.config.master_config("/dev/null")
    opts.update(cachedir=str(cachedir), id=MASTER, job_cache_store_endtime=True)
    return opts


def _settings(opts, url):
    return relay_config.resolve(relay_config.from_salt_opts(dict(opts, relay={"database_url": url})), opts)


class Cache:
    """A local_cache jobs dir written through Salt's loader, as a master writes it."""

    def __init__(self, cachedir):
        import salt.loader

        self.opts = _opts(cachedir)
        self.functions = salt.loader.returners(self.opts, {})
        self.jobs_dir = os.path.join(self.opts["cachedir"], "jobs")

    def __getitem__(self, name):
        return self.functions[f"local_cache.{name}"]

    def job(self, jid, minions=("m1", "m2"), value="hi", endtime="2026, Dec 03 10:00:00.000001"):
        self["prep_jid"](False, passed_jid=jid)
        self["save_load"](
            jid, {"fun": "cmd.run", "arg": ["echo hi"], "tgt": "*", "tgt_type": "glob", "jid": jid, "user": "root"}, list(minions)
        )
        for minion in minions:
            self["returner"]({"id": minion, "jid": jid, "fun": "cmd.run", "return": value, "retcode": 0, "success": True, "out": "txt"})
        if endtime:
            self["update_endtime"](jid, endtime)
        return self.dir_of(jid)

    def dir_of(self, jid):
        import salt.utils.jid

        return salt.utils.jid.jid_dir(jid, self.jobs_dir, self.opts["hash_type"])


def _jid(n):
    return f"20261203100000{n:06d}"


def _import(cache, url, tmp_path, **options):
    settings = _settings(cache.opts, url)
    options = common.Options(refused_path=str(tmp_path / "refused.jsonl"), tty=False, **options)
    return local_cache.import_into(Store(url), settings, cache.opts, None, options)


def _refused(tmp_path):
    path = tmp_path / "refused.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'relay.db'}"


def test_import_then_reimport_counts_what_the_store_did_not_have(tmp_path, sqlite_url):
    cache = Cache(tmp_path / "cache")
    for n in range(5):
        cache.job(_jid(n))
    first = _import(cache, sqlite_url, tmp_path).document()
    assert first["imported"] == {"jobs": 5, "returns": 10, "events": 0}
    assert first["skipped"] == {"jobs": 0, "returns": 0, "events": 0}
    assert first["endtimes_set"] == 5 and first["refused_total"] == 0
    again = _import(cache, sqlite_url, tmp_path).document()
    assert again["imported"] == {"jobs": 0, "returns": 0, "events": 0}
    assert again["skipped"] == {"jobs": 5, "returns": 10, "events": 0}
    assert again["endtimes_set"] == 0  # a job already stored keeps its end time
    assert not (tmp_path / "refused.jsonl").exists()  # a clean run leaves no refused file

    store, scope = Store(sqlite_url), queries.Scope("master", MASTER, MASTER)
    jid = _jid(3)
    assert store.read(queries.get_load, jid, scope) == cache["get_load"](jid)
    assert store.read(queries.get_jid, jid, scope) == cache["get_jid"](jid)
    assert store.read(queries.get_endtime, jid, scope).strftime(jids.SALT_TIME_FORMAT) == cache["get_endtime"](jid)


def test_unreadable_and_oversize_items_are_refused_with_their_reason(tmp_path, sqlite_url):
    cache = Cache(tmp_path / "cache")
    cache.job(_jid(0))  # fine
    truncated_load = cache.job(_jid(1))
    with open(os.path.join(truncated_load, ".load.p"), "r+b") as handle:
        handle.truncate(7)
    truncated_return = cache.job(_jid(2))
    with open(os.path.join(truncated_return, "m2", "return.p"), "r+b") as handle:
        handle.truncate(3)  # local_cache's get_jid would loop forever on it
    long_jid = "2026120310000000000" + "7" * 60
    cache.job(long_jid)
    cache.job(_jid(4), endtime="not a time")
    no_jid_file = cache.job(_jid(5))
    os.remove(os.path.join(no_jid_file, "jid"))
    truncated_minions = cache.job(_jid(6))
    with open(os.path.join(truncated_minions, ".minions.p"), "r+b") as handle:
        handle.truncate(2)  # local_cache's get_load raises on it

    tally = _import(cache, sqlite_url, tmp_path)
    doc = tally.document()
    assert doc["imported"] == {"jobs": 3, "returns": 5, "events": 0}  # jobs 0, 2 (m1 only), 4
    assert doc["refused"] == {
        "entry": {"no readable jid file": 1},
        "job": {"unreadable .load.p": 1, "jid longer than 64 characters": 1, "local_cache could not read the load": 1},
        "return": {"unreadable return.p or out.p": 1, "its job was refused": 6},
        "endtime": {"end time not in Salt's format": 1},
    }
    lines = _refused(tmp_path)
    assert len(lines) == doc["refused_total"] == 12
    by_reason = {line["reason"]: line for line in lines}
    assert by_reason["unreadable .load.p"]["key"]["jid"] == _jid(1)
    assert by_reason["unreadable return.p or out.p"]["key"] == {"jid": _jid(2), "path": truncated_return, "minion": "m2"}
    assert by_reason["no readable jid file"]["key"] == {"path": no_jid_file}
    assert "FileNotFoundError" in by_reason["no readable jid file"]["detail"]
    assert "refused: 12" in tally.render()
    # the job with a broken return keeps its other return, read as get_jid reads it
    store = Store(sqlite_url)
    assert store.read(queries.get_jid, _jid(2)) == {"m1": {"return": "hi", "retcode": 0, "success": True, "out": "txt"}}


def test_batches_hold_at_most_batch_size_rows_and_never_split_a_job(tmp_path, sqlite_url):
    cache = Cache(tmp_path / "cache")
    for n in range(6):
        cache.job(_jid(n))  # 3 rows each
    tally = _import(cache, sqlite_url, tmp_path, batch_size=7)  # two jobs a batch
    assert tally.batches == 3
    assert tally.document()["imported"]["returns"] == 12


def test_progress_without_a_terminal_prints_plain_lines_with_rate_and_eta():
    stream = io.StringIO()
    progress = common.Progress(4, "jobs", interval=0, stream=stream, tty=False)
    progress.advance(1)
    progress.advance(3)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("salt-relay import: 1/4 jobs (25%), ") and "/s, ETA " in lines[0]
    assert lines[-1].startswith("salt-relay import: 4/4 jobs (100%)") and lines[-1].endswith("- done")


def test_import_commands_have_help():
    for args in (["import"], ["import", "local-cache"], ["import", "mysql"]):
        result = CliRunner().invoke(main, [*args, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output


def test_import_needs_a_master_config(tmp_path):
    result = CliRunner().invoke(main, ["-c", str(tmp_path), "--database-url", f"sqlite:///{tmp_path}/r.db", "import", "local-cache"])
    assert result.exit_code == 1
    assert "master's namespace" in result.output


@pytest.mark.postgresql
def test_a_job_the_database_refuses_is_set_aside_and_the_rest_imported(tmp_path):
    cache = Cache(tmp_path / "cache")
    for n in range(4):
        cache.job(_jid(n))
    cache.job(_jid(9), value="nul \x00 byte")  # PostgreSQL's JSONB refuses \u0000
    with databases.fresh_database("postgresql") as url:
        doc = _import(cache, url, tmp_path, batch_size=100).document()
        assert doc["imported"] == {"jobs": 4, "returns": 8, "events": 0}
        assert doc["refused"] == {"job": {"the database refused it": 1}}
        (line,) = _refused(tmp_path)
        assert line["key"] == {"item": f"job {_jid(9)}"} and "\\u0000" in line["detail"]


def test_a_jobs_dir_named_otherwise_is_read_through_a_link(tmp_path, sqlite_url):
    cache = Cache(tmp_path / "cache")
    cache.job(_jid(0))
    moved = tmp_path / "copied-job-cache"
    os.rename(cache.jobs_dir, moved)
    settings = _settings(cache.opts, sqlite_url)
    options = common.Options(refused_path=str(tmp_path / "refused.jsonl"), tty=False)
    scratch = pathlib.Path(tempfile.gettempdir())
    before = set(scratch.glob("salt-relay-import-*"))
    doc = local_cache.import_into(Store(sqlite_url), settings, cache.opts, str(moved), options).document()
    assert doc["imported"] == {"jobs": 1, "returns": 2, "events": 0}
    assert set(scratch.glob("salt-relay-import-*")) == before  # the temporary cachedir holding the link is gone


def test_a_missing_jobs_dir_is_an_import_source_error(tmp_path, sqlite_url):
    from salt_engine_lib.errors import ImportSourceError

    opts = _opts(tmp_path / "nowhere")
    with pytest.raises(ImportSourceError, match="no local_cache jobs dir"):
        local_cache.import_into(Store(sqlite_url), _settings(opts, sqlite_url), opts, None, common.Options(tty=False))
