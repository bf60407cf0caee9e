"""``salt-relay import local-cache`` (GitHub issue #18): Salt's own job cache into relay, answered alike.

A real master with Salt's default job cache (local_cache) and a minion run
real jobs; the real CLI (a subprocess) imports the master's jobs dir into a
fresh database of each dialect. Then, through Salt's loader, local_cache's
get_jids / get_load / get_jid / get_endtime and relay's, read in the
importing master's namespace, must answer the same for every job (no
normalization needed: relay keeps the load, the return and local_cache's
retcode/success/out as they were). A second run imports nothing.

Then, on jobs written by Salt's local_cache functions (no daemon): a run
SIGKILLed after its first batch, re-run, ends complete without doubles
(counted with GROUP BY); corrupt job files end in the refused file and the
summary.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.integration import parity_helpers as ph
from tests.support import databases as dbs
from tests.support.processes import in_forked_process
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

DIALECTS = ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql), pytest.param("postgresql", marks=pytest.mark.postgresql)]
SALT_RELAY = os.path.join(os.path.dirname(sys.executable), "salt-relay")


def salt_relay_import(config_dir, url, workdir, *args):
    """The real CLI: ``salt-relay -c DIR --database-url URL import local-cache --json ...``; (exit status, summary, stderr)."""
    argv = [SALT_RELAY, "-c", str(config_dir), "--database-url", url, "import", "local-cache", "--json", *args]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=workdir, timeout=300)
    summary = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else None
    return done.returncode, summary, done.stderr


# -- a real master and minion ----------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(salt_factories):
    overrides = {**ph.COMMON_MASTER_CONFIG, "job_cache_store_endtime": True}  # local_cache keeps end times only then
    master = salt_factories.salt_master_daemon("import-lc-master", overrides=overrides)
    with master.started(start_timeout=120), ph.started_minions(master, "import", count=1) as minions:
        yield master, minions[0].id


@pytest.fixture(scope="module")
def jobs(cluster):
    master, minion = cluster
    cli = master.salt_cli(timeout=60)
    assert cli.run("test.ping", minion_tgt=minion).data is True
    arg = cli.run("test.arg", "one", "two", "color=blue", "size=3", minion_tgt=minion)
    assert arg.data["args"] == ["one", "two"] and arg.data["kwargs"]["color"] == "blue", arg
    assert cli.run("cmd.run", "echo hi", minion_tgt=minion).data == "hi"
    failed = cli.run("cmd.run", "exit 3", minion_tgt=minion)
    assert failed.data == "", failed
    runner = master.salt_run_cli(timeout=90).run("test.arg", "runner-arg")
    assert runner.returncode == 0, runner
    time.sleep(2)  # end times are written after the CLI has its answer
    return 5


def answers(opts, url):
    """{function: answer} of local_cache and of relay on ``url`` for local_cache's jobs, through Salt's loader.

    A MasterMinion's, as on a master (relay reads its nested ``relay:`` block
    through ``__salt__``); called in a process of its own (``in_forked_process``).
    """
    import salt.minion

    returners = salt.minion.MasterMinion(dict(opts, relay={"database_url": url})).returners
    jids = sorted(returners["local_cache.get_jids"]())
    return {
        cache: {
            "get_jids": returners[f"{cache}.get_jids"](),
            **{
                function: {jid: returners[f"{cache}.{function}"](jid) for jid in jids}
                for function in ("get_load", "get_jid", "get_endtime")
            },
        }
        for cache in ("local_cache", "relay")
    }


@pytest.mark.parametrize("dialect", DIALECTS)
def test_imported_jobs_answer_like_local_cache_and_a_rerun_adds_nothing(cluster, jobs, dialect, tmp_path):
    master, minion = cluster
    with dbs.fresh_database(dialect, tmp_path) as url:
        status, first, stderr = salt_relay_import(master.config_dir, url, tmp_path)
        assert status == 0, stderr
        assert first["refused_total"] == 0 and first["skipped"]["jobs"] == 0
        assert first["imported"]["jobs"] >= jobs and first["imported"]["returns"] >= jobs, first
        assert "salt-relay import: " in stderr and "/s" in stderr  # the plain progress line (no terminal here)

        found = in_forked_process(answers, dict(master.config), url)
        local, relay = found["local_cache"], found["relay"]
        assert len(local["get_jids"]) == first["imported"]["jobs"]
        funs = {job["Function"] for job in local["get_jids"].values()}
        assert {"test.ping", "test.arg", "cmd.run", "runner.test.arg"} <= funs, funs
        assert any(entry.get("retcode") == 3 for job in local["get_jid"].values() for entry in job.values())
        assert any(ended for ended in local["get_endtime"].values())  # the comparison covers end times
        differing = [function for function in ("get_jids", "get_load", "get_jid", "get_endtime") if relay[function] != local[function]]
        assert not differing, {function: (relay[function], local[function]) for function in differing}

        status, again, stderr = salt_relay_import(master.config_dir, url, tmp_path)
        assert status == 0, stderr
        assert again["imported"] == {"jobs": 0, "returns": 0, "events": 0}
        assert again["skipped"] == {**first["imported"], "events": 0}
        assert again["refused_total"] == 0


# -- jobs written by Salt's local_cache functions --------------------------------------


def write_jobs(cachedir, count, minions=("m1", "m2")):
    """``count`` jobs through Salt's local_cache (prep_jid, save_load, returner, update_endtime); their jids."""
    import salt.config
    import salt.loader

    opts = salt.config.master_config("/dev/null")
    opts.update(cachedir=str(cachedir), job_cache_store_endtime=True)
    cache = salt.loader.returners(opts, {})
    jids = []
    for n in range(count):
        jid = f"20261203{n // 1_000_000:06d}{n % 1_000_000:06d}"
        cache["local_cache.prep_jid"](False, passed_jid=jid)
        load = {"fun": "test.arg", "arg": [n, {"k": "v", "__kwarg__": True}], "tgt": "m*", "tgt_type": "glob", "jid": jid, "user": "root"}
        cache["local_cache.save_load"](jid, load, list(minions))
        for minion in minions:
            ret = {"id": minion, "jid": jid, "fun": "test.arg", "return": {"args": [n]}, "retcode": 0, "success": True}
            cache["local_cache.returner"](ret)
        cache["local_cache.update_endtime"](jid, "2026, Dec 03 00:00:01.000000")
        jids.append(jid)
    return jids


@pytest.fixture
def config_dir(tmp_path):
    """A master config dir whose cachedir is ``tmp_path/cache``."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "master").write_text(json.dumps({"id": "import-kill-master", "cachedir": str(tmp_path / "cache")}) + "\n")
    return etc


def doubles(reader):
    """Rows stored more than once per natural key, counted with GROUP BY rather than trusted to the primary key."""
    return {
        "jobs": reader.scalar("SELECT COUNT(*) FROM (SELECT jid FROM jobs GROUP BY jid, namespace HAVING COUNT(*) > 1) d"),
        "returns": reader.scalar("SELECT COUNT(*) FROM (SELECT jid FROM returns GROUP BY jid, namespace, minion_id HAVING COUNT(*) > 1) d"),
    }


@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_import_killed_after_its_first_batch_completes_when_run_again(tmp_path, config_dir, dialect):
    count = 3000
    jids = write_jobs(tmp_path / "cache", count)
    with dbs.fresh_database(dialect, tmp_path) as url:
        reader = dbs.Reader(url)
        argv = [SALT_RELAY, "-c", str(config_dir), "--database-url", url, "import", "local-cache", "--json", "--batch-size", "30"]
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
        try:
            assert wait_for(lambda: reader.counts(("jobs",))["jobs"] > 0 or child.poll() is not None, timeout=120, interval=0.01)
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait(timeout=30)
        killed_at = reader.counts()
        assert child.returncode == -signal.SIGKILL, "the import ended before it was killed"
        assert 0 < killed_at["jobs"] < count, killed_at  # killed midway

        status, summary, stderr = salt_relay_import(config_dir, url, tmp_path)
        assert status == 0, stderr
        assert summary["imported"]["jobs"] + summary["skipped"]["jobs"] == count
        assert summary["skipped"]["jobs"] >= killed_at["jobs"]
        assert reader.counts() == {"jobs": count, "returns": 2 * count, "events": 0}
        assert doubles(reader) == {"jobs": 0, "returns": 0}
        assert reader.scalar("SELECT COUNT(*) FROM jobs WHERE ended_at IS NULL") == 0
        stored = {row[0] for row in reader.rows("SELECT jid FROM jobs")}
        assert stored == set(jids)
        reader.dispose()


def test_a_corrupt_job_dir_is_refused_with_its_reason_and_counted(tmp_path, config_dir):
    import salt.utils.jid

    good, broken = write_jobs(tmp_path / "cache", 2)
    job_dir = salt.utils.jid.jid_dir(broken, str(tmp_path / "cache" / "jobs"), "sha256")
    load = os.path.join(job_dir, ".load.p")
    with open(load, "r+b") as handle:
        handle.truncate(os.path.getsize(load) // 2)
    refused = tmp_path / "refused.jsonl"
    with dbs.fresh_database("sqlite", tmp_path) as url:
        status, summary, stderr = salt_relay_import(config_dir, url, tmp_path, "--refused", str(refused))
        assert status == 3, stderr  # done, with refused items
        assert summary["imported"] == {"jobs": 1, "returns": 2, "events": 0}
        assert summary["refused"] == {"job": {"unreadable .load.p": 1}, "return": {"its job was refused": 2}}
        assert summary["refused_file"] == str(refused)
        lines = [json.loads(line) for line in refused.read_text().splitlines()]
        assert [line["kind"] for line in lines] == ["job", "return", "return"]
        assert lines[0]["key"] == {"jid": broken, "path": job_dir} and lines[0]["reason"] == "unreadable .load.p"
        assert lines[0]["detail"] and lines[0]["source"] == "local-cache"
        assert dbs.Reader(url).rows("SELECT jid FROM jobs") == [(good,)]

        # the human summary, without --json, says the same
        human = subprocess.run(
            [SALT_RELAY, "-c", str(config_dir), "--database-url", url, "import", "local-cache"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
        assert human.returncode == 3
        assert "job: unreadable .load.p: 1" in human.stdout and "salt-relay-import-local-cache-" in human.stdout
        defaults = list(tmp_path.glob("salt-relay-import-local-cache-*.refused.jsonl"))
        assert len(defaults) == 1 and len(defaults[0].read_text().splitlines()) == 3
