"""``salt <minions> test.ping`` with ``master_job_cache: relay`` needs no ``saltutil.find_job`` (issue #15).

On Salt 3007 the ``salt`` CLI (LocalClient) polls the event bus with
``PublishClient.recv(timeout=0)``, whose ``select()`` peek misses frames
Tornado has already buffered. The relay returner's first ``get_load`` in the
CLI process is slower than the minions, so their returns were already
buffered: the CLI waited for its whole ``--timeout``, then asked the minions
with ``saltutil.find_job`` whether the job was still running (30-50 s per
call instead of ~0.5 s). ``saltcompat.fix_publish_client_poll()``, called by
the returner's ``__virtual__``, fixes it.

Not a timed test (speed belongs in benchmarks): it asserts what the CLI did.
A real master (relay job cache and engine) and two minions run
``test.ping`` a few times; every call must return True for both minions,
and no ``saltutil.find_job`` job may be published meanwhile. The master
announces every job it publishes on its event bus (``salt/job/<jid>/new``
with ``fun``); :class:`MasterBusRecorder` records that bus from the test
process. Wall times are printed only.
"""

import threading
import time

import pytest

from tests.integration import parity_helpers as ph

pytestmark = pytest.mark.integration

PREFIX = "cl"  # minion ids cl-m1, cl-m2: unique in the session's factories root
CALLS = 3
CLI_TIMEOUT = 15  # returns take ~0.1 s; the bug made each call wait all of it
FIND_JOB = "saltutil.find_job"

READY_TAG = "salt-relay-test/cli-latency/ready"
STOP_TAG = "salt-relay-test/cli-latency/stop"
RECORDER_WAIT = 60  # seconds, generous: a shared 2-core machine


class MasterBusRecorder:
    """Every event of the master's bus between entering and leaving the ``with``.

    A thread of the test process reads the bus with ``get_event(wait=0)``,
    which blocks until the next event: a read without a timeout on every
    Salt version, so it is subject neither to 3007's polling bug
    (``recv(timeout=0)``) nor to 3007's reconnect after each timed-out
    ``recv(timeout>0)``, which drops what is published meanwhile.
    Entering returns once the thread has seen an event fired after it
    subscribed; leaving fires a stop event and waits for the thread to see
    it, so everything the master published before that was read.
    """

    def __init__(self, master_opts):
        self.opts = master_opts
        self.events = []  # (tag, data), from the first ready event seen on
        self.error = None
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._record, name="master-bus-recorder", daemon=True)
        self._sender = None

    def __enter__(self):
        import salt.utils.event

        self._sender = salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=False)
        self._thread.start()
        # Events fired before the subscription is in place reach no one: fire until one is seen.
        deadline = time.monotonic() + RECORDER_WAIT
        while not self._ready.wait(0.5):
            assert self.error is None, f"the bus recorder failed: {self.error!r}"
            assert time.monotonic() < deadline, "the bus recorder never saw its ready event"
            self._sender.fire_event({}, READY_TAG)
        return self

    def __exit__(self, exc_type, exc, traceback):
        try:
            deadline = time.monotonic() + RECORDER_WAIT
            self._sender.fire_event({}, STOP_TAG)
            while not self._stopped.wait(1) and time.monotonic() < deadline and self.error is None:
                self._sender.fire_event({}, STOP_TAG)
        finally:
            self._sender.destroy()
        if exc_type is None:
            assert self.error is None, f"the bus recorder failed: {self.error!r}"
            assert self._stopped.is_set(), "the bus recorder never saw its stop event: it may have missed events"

    def _record(self):
        import salt.utils.event

        bus = None
        try:
            bus = salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=True)
            while True:
                event = bus.get_event(wait=0, full=True)
                if event is None:
                    continue  # a read that ended without a frame; the next one reconnects
                if event["tag"] == READY_TAG:
                    self._ready.set()
                elif event["tag"] == STOP_TAG:
                    self._stopped.set()
                    return
                elif self._ready.is_set():
                    self.events.append((event["tag"], event["data"]))
        except Exception as err:  # reported by the test thread
            self.error = err
        finally:
            if bus is not None:
                bus.destroy()

    def published_jobs(self, fun):
        """``salt/job/<jid>/new`` data of the jobs of ``fun`` the master published."""
        return [data for tag, data in self.events if tag.startswith("salt/job/") and tag.endswith("/new") and data.get("fun") == fun]

    def returned_minions(self, jid):
        prefix = f"salt/job/{jid}/ret/"
        return {tag[len(prefix) :] for tag, _ in self.events if tag.startswith(prefix)}


@pytest.fixture(scope="module")
def relay_cluster(salt_factories, tmp_path_factory):
    database_url = f"sqlite:///{tmp_path_factory.mktemp('cli-latency') / 'relay.db'}"
    overrides = {
        **ph.COMMON_MASTER_CONFIG,
        "master_job_cache": "relay",
        "engines": [{"relay": {"batch_max_wait": 0.1}}],
        "relay": {"database_url": database_url},
    }
    master = salt_factories.salt_master_daemon(f"{PREFIX}-master", overrides=overrides)
    with master.started(start_timeout=120), ph.started_minions(master, PREFIX) as minions:
        yield ph.Cluster("relay", PREFIX, master, minions)


def ping_both_minions(cluster):
    return cluster.salt(f"--timeout={CLI_TIMEOUT}", "-L", "test.ping", minion_tgt=f"{cluster.m1},{cluster.m2}")


def test_salt_cli_sees_returns_without_find_job(relay_cluster):
    import salt.version

    both_true = {relay_cluster.m1: True, relay_cluster.m2: True}
    warm_up = ping_both_minions(relay_cluster)
    assert warm_up.returncode == 0 and warm_up.data == both_true, warm_up

    results, seconds = [], []
    with MasterBusRecorder(relay_cluster.master.config) as bus:
        for _ in range(CALLS):
            started = time.monotonic()
            results.append(ping_both_minions(relay_cluster))
            seconds.append(time.monotonic() - started)
    print(
        f"Salt {salt.version.__version__}: salt -L <2 minions> test.ping --timeout={CLI_TIMEOUT}, "
        f"seconds per call: {', '.join(f'{s:.2f}' for s in seconds)}"
    )

    for result in results:
        assert result.returncode == 0 and result.data == both_true, result

    # The recorder saw these calls' jobs, so it would have seen a find_job too.
    pings = bus.published_jobs("test.ping")
    assert len(pings) == CALLS, f"the bus recorder saw {len(pings)} test.ping jobs, not {CALLS}"
    for ping in pings:
        assert bus.returned_minions(ping["jid"]) == set(both_true), f"the bus recorder missed returns of {ping['jid']}"

    asked_about = [job["arg"] for job in bus.published_jobs(FIND_JOB)]
    assert not asked_about, (
        f"the salt CLI published {len(asked_about)} {FIND_JOB} jobs (args: {asked_about}): it did not see "
        f"returns that had reached the master and waited for its --timeout"
    )
