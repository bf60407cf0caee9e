"""Helpers for tests/integration/test_local_cache_parity.py (GitHub issue #5).

The same scenario runs on a master with Salt's ``local_cache`` and on one with
``master_job_cache: relay``; the ``jobs.*`` runners' answers of both are
normalized (see :class:`Normalizer`) and must then be equal.
"""

import contextlib
import dataclasses
import functools
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

from salt_engine_lib.store import Store, queries
from tests.support.waiting import wait_for

# -- a master with its minions --------------------------------------------------

# Shared by both masters, so that only the job cache differs.
COMMON_MASTER_CONFIG = {
    "loop_interval": 5,
    "log_level_logfile": "info",
}
MINION_CONFIG = {"multiprocessing": False}

# Labels of the scenario's jobs (see run_scenario).
PING, ECHO, CMD_RUN, FAILED, RUNNER = "ping", "echo", "cmd_run", "failed", "runner"
JOB_LABELS = (PING, ECHO, CMD_RUN, FAILED, RUNNER)

ECHO_TEXT = "parity-echo"
RUNNER_ARG = "parity-arg"


@dataclasses.dataclass
class Cluster:
    """One master, its two minions and an accepted key nobody answers for."""

    kind: str  # "relay" or "local_cache"
    prefix: str  # minion ids are <prefix>-m1, <prefix>-m2, <prefix>-ghost
    master: object  # saltfactories SaltMaster
    minions: list
    store: Store = None  # relay only

    @property
    def m1(self):
        return self.minions[0].id

    @property
    def m2(self):
        return self.minions[1].id

    @property
    def ghost(self):
        return f"{self.prefix}-ghost"

    @property
    def glob(self):
        return f"{self.prefix}-m*"

    @property
    def master_id(self):
        # What runner jobs store as "id"/"tgt" (the master's opts["id"]).
        return self.master.config["id"]

    def salt(self, *args, minion_tgt, **kwargs):
        return self.master.salt_cli(timeout=60).run(*args, minion_tgt=minion_tgt, **kwargs)

    def salt_run(self, *args, **kwargs):
        # A new CLI factory per call: they keep per-run state, and calls run in threads.
        return self.master.salt_run_cli(timeout=90).run(*args, **kwargs)


@contextlib.contextmanager
def started_minions(master, prefix, count=2):
    """``<prefix>-m1`` ... started together (half the wait), killed at the end.

    Killed rather than stopped gracefully (which took ~5 s per minion here):
    nothing of theirs is read after the tests.
    """
    minions = [master.salt_minion_daemon(f"{prefix}-m{n}", overrides=dict(MINION_CONFIG)) for n in range(1, count + 1)]
    for minion in minions:
        minion.slow_stop = False
    with contextlib.ExitStack() as stack:
        stack.callback(_in_parallel, [minion.terminate for minion in minions])
        _in_parallel([functools.partial(minion.start, start_timeout=120) for minion in minions])
        yield minions


def _in_parallel(calls):
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        for future in [pool.submit(call) for call in calls]:
            future.result()


def add_ghost_key(cluster):
    """Accept a key for ``<prefix>-ghost``: targeted, counted in Minions, never returns.

    It makes ``jobs.lookup_jid missing=True`` report a minion. A copy of m1's
    public key is enough: targeting only reads the accepted key names.
    """
    accepted = os.path.join(cluster.master.config["pki_dir"], "minions")
    shutil.copyfile(os.path.join(accepted, cluster.m1), os.path.join(accepted, cluster.ghost))


def write_pillar(master, files):
    pillar_dir = master.config["pillar_roots"]["base"][0]
    os.makedirs(pillar_dir, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(pillar_dir, name), "w", encoding="utf-8") as handle:
            handle.write(text)


# -- the scenario -------------------------------------------------------------


def _ok(result, expected):
    assert result.returncode == 0, result
    assert result.data == expected, result


def run_scenario(cluster):
    """The jobs both masters run; on return, every result is stored."""
    m1, m2 = cluster.m1, cluster.m2
    _ok(cluster.salt("test.ping", minion_tgt=cluster.glob), {m1: True, m2: True})
    _ok(cluster.salt("test.echo", ECHO_TEXT, minion_tgt=m1), ECHO_TEXT)
    _ok(cluster.salt("cmd.run", "echo hi", minion_tgt=cluster.glob), {m1: "hi", m2: "hi"})

    # m2 fails (retcode 3), the ghost never answers. --async: the CLI would
    # wait for the ghost (timeout + find_job polling) and publish find_job jobs.
    failed = cluster.salt("-L", "--async", "cmd.run", "exit 3", minion_tgt=f"{m2},{cluster.ghost}")
    assert failed.returncode == 0, failed
    match = re.search(r"job ID: (\S+)", failed.stdout)
    assert match, failed
    failed_jid = match.group(1)
    assert wait_for(lambda: m2 in job_returns(cluster, failed_jid), timeout=60), f"{m2} never returned job {failed_jid}"

    runner = cluster.salt_run("test.arg", RUNNER_ARG)
    assert runner.returncode == 0, runner

    if cluster.kind == "relay":
        wait_until_relay_stored(cluster)


def job_returns(cluster, jid):
    """Minion ids with a stored return for ``jid``, read straight from the job cache."""
    if cluster.kind == "relay":
        return set(cluster.store.read(queries.get_jid, jid))
    # local_cache layout: <cachedir>/jobs/<sha256(jid)[:2]>/<rest>/<minion>/return.p
    import salt.utils.jid

    jid_dir = salt.utils.jid.jid_dir(
        jid, os.path.join(cluster.master.config["cachedir"], "jobs"), cluster.master.config.get("hash_type", "sha256")
    )
    try:
        return {name for name in os.listdir(jid_dir) if os.path.isfile(os.path.join(jid_dir, name, "return.p"))}
    except OSError:
        return set()


def _scenario_label(load):
    fun, arg = load.get("fun"), list(load.get("arg") or [])
    if fun == "test.ping":
        return PING
    if fun == "test.echo" and arg == [ECHO_TEXT]:
        return ECHO
    if fun == "cmd.run" and arg == ["echo hi"]:
        return CMD_RUN
    if fun == "cmd.run" and arg == ["exit 3"]:
        return FAILED
    if fun == "runner.test.arg":
        return RUNNER
    return None


def wait_until_relay_stored(cluster, timeout=60):
    """relay stores returns (and runner jobs) write-behind, through its engine.

    local_cache has stored everything when the CLI returns; relay a moment
    later. Wait for every expected job row and return, so that the comparison
    is about content, not about the write-behind delay.
    """
    expected = {
        PING: {cluster.m1, cluster.m2},
        ECHO: {cluster.m1},
        CMD_RUN: {cluster.m1, cluster.m2},
        FAILED: {cluster.m2},
        RUNNER: {cluster.master_id},
    }

    def missing():
        jids = {}
        for row in cluster.store.read(queries.list_jobs, limit=200):
            label = _scenario_label(row.load or {})
            if label and label not in jids:
                jids[label] = row.jid
        absent = {label: sorted(minions) for label, minions in expected.items() if label not in jids}
        for label, jid in jids.items():
            lacking = expected[label] - set(cluster.store.read(queries.get_jid, jid))
            if lacking:
                absent[label] = sorted(lacking)
        return absent

    deadline = time.monotonic() + timeout
    while missing() and time.monotonic() < deadline:
        time.sleep(0.2)
    absent = missing()
    assert not absent, f"relay did not store these jobs/returns within {timeout}s: {absent}"


# -- the answers ------------------------------------------------------------------

# The jobs each per-job runner is asked about; every answer is one salt-run
# (~1.3 CPU-s). jobs.list_job (get_load + get_jid, every field) and
# jobs.lookup_jid missing=True (returns + Minions) see every job. Plain
# jobs.lookup_jid is missing=True without the missing minions, and
# jobs.print_job is list_job keyed by jid (the same two returner calls), so
# they see one plain job, the failed job with a missing minion, and the runner job.
PER_JOB_MATRIX = {
    "lookup_jid": (PING, FAILED, RUNNER),
    "lookup_jid_missing": JOB_LABELS,
    "list_job": JOB_LABELS,
    "print_job": (PING, FAILED, RUNNER),
}
_PER_JOB_CALLS = {
    "lookup_jid": ("jobs.lookup_jid",),
    "lookup_jid_missing": ("jobs.lookup_jid", "missing=True"),
    "list_job": ("jobs.list_job",),
    "print_job": ("jobs.print_job",),
}


def _data(result):
    assert result.returncode == 0, result
    return result.data


def collect_answers(cluster, workers=3):
    """Every compared runner answer, raw, plus the scenario's jids.

    ``jobs.last_run`` goes first: it prints the newest job, so the scenario's
    runner job, before the queries add jobs of their own (each salt-run does).
    """
    answers = {"last_run": _data(cluster.salt_run("jobs.last_run"))}
    answers["list_jobs"] = _data(cluster.salt_run("jobs.list_jobs"))
    answers["list_jobs_filter"] = _data(cluster.salt_run("jobs.list_jobs_filter", "50"))
    jids = {}
    for jid, job in answers["list_jobs"].items():
        label = _scenario_label({"fun": job.get("Function"), "arg": job.get("Arguments")})
        if label:
            assert label not in jids, f"two jobs look like {label}: {jids[label]}, {jid}"
            jids[label] = jid
    assert set(jids) == set(JOB_LABELS), f"scenario jobs missing from jobs.list_jobs: {sorted(set(JOB_LABELS) - set(jids))}"

    calls = {}
    for runner, labels in PER_JOB_MATRIX.items():
        function, *options = _PER_JOB_CALLS[runner]
        for label in labels:
            calls[(runner, label)] = (function, jids[label], *options)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {key: pool.submit(cluster.salt_run, *args) for key, args in calls.items()}
        for key, future in futures.items():
            answers[key] = _data(future.result())
    return jids, answers


# -- normalization ------------------------------------------------------------------

STAMP = "<_stamp>"
_ISO_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(\+00:00|Z)?$")


def _is_observation_job(job):
    """A job that exists only because the test queried the cache with salt-run."""
    return isinstance(job, dict) and str(job.get("Function", "")).startswith("runner.jobs.")


class Normalizer:
    """Maps what legitimately differs between the two masters to placeholders.

    Each rule says why it is not a difference in the job cache's answer.
    """

    def __init__(self, cluster, jids):
        self.jids = dict(jids)
        # 1. Minion ids: each master needs its own minions (one id is one
        #    daemon with one key, talking to one master here); m1, m2 and the
        #    ghost play the same role on both masters, so map to role names.
        # 2. The master id: runner jobs are stored with id/tgt = the master's
        #    id, which is the factory's name, different per master.
        # 3. The glob target: it names the minions' prefix.
        self.names = {
            cluster.m1: "<minion-1>",
            cluster.m2: "<minion-2>",
            cluster.ghost: "<ghost>",
            cluster.glob: "<minion-glob>",
            cluster.master_id: "<master>",
        }
        # 4. jids: both masters generate their own from the clock; the same
        #    scenario job has a different jid on each.
        for label, jid in self.jids.items():
            self.names[jid] = f"<jid:{label}>"
        # 5. StartTime: Salt's runner computes it from the jid
        #    (salt.utils.jid.jid_to_time), so it differs exactly as the jid
        #    does. Mapped only when it is that value: a StartTime that is not
        #    derived from the job's jid stays and fails the comparison.
        import salt.utils.jid

        for label, jid in self.jids.items():
            self.names[salt.utils.jid.jid_to_time(jid)] = f"<start:{label}>"

    def value(self, value):
        if isinstance(value, dict):
            return {self.value(key): self._item(key, item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, str):
            return self.names.get(value, value)
        return value

    def _item(self, key, item):
        # 6. _stamp (in a runner job's return): the wall-clock time of the
        #    run, different on each master. Only its presence and format count.
        if key == "_stamp" and isinstance(item, str) and _ISO_STAMP.match(item):
            return STAMP
        return self.value(item)

    def jobs_listing(self, listing):
        """list_jobs (a dict by jid) or list_jobs_filter (a list), without observation jobs.

        7. Jobs of the runner ``jobs.*`` itself: every ``salt-run jobs.X`` of
           this test stores one job. They are artefacts of measuring: their
           number depends on how many queries ran before, and relay stores
           them write-behind (the previous one may not be visible yet) and
           from the engine while they still run (so a query lists itself;
           test_last_run_like_local_cache is where that difference shows).
           The scenario's own runner job (runner.test.arg) stays.
        """
        if isinstance(listing, dict):
            return {self.value(jid): self.value(job) for jid, job in listing.items() if not _is_observation_job(job)}
        return [self.value(job) for job in listing if not _is_observation_job(job)]

    def answers(self, answers):
        normalized = {}
        for key, answer in answers.items():
            if key in ("list_jobs", "list_jobs_filter"):
                normalized[key] = self.jobs_listing(answer)
            else:
                normalized[key] = self.value(answer)
        return normalized
