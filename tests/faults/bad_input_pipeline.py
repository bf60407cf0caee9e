"""The long-lived broker -> Worker -> SQL pipeline of test_bad_input.py.

One real worker per (database, broker) pair serves every test of the module:
a worker that survives a hostile batch must also store the next test's
batches, which is the "the worker keeps running" half of every case. Tests
only ever add rows with keys of their own (:func:`new_jid`, :func:`new_tag`),
and pick their dead letters by the id of the message they published.
"""

import itertools
import uuid

import sqlalchemy as sa

from salt_engine_lib import broker, message
from salt_engine_lib.store.schema import events as events_table
from salt_engine_lib.store.schema import jobs as jobs_table
from salt_engine_lib.store.schema import returns as returns_table
from salt_engine_lib.worker import REASON_HEADER
from tests.pipeline_helpers import WorkerThread
from tests.support.brokers import take_all
from tests.support.waiting import wait_for

MASTER = "master-1"
_jids = itertools.count(1)
_RUN = uuid.uuid4().hex[:6]


def new_jid():
    """A fresh 20-digit Salt jid (a time in 2026-12-01), unique in this process."""
    return f"20261201{next(_jids):012d}"


def new_tag(kind):
    return f"faults/{kind}/{_RUN}-{next(_jids)}"


def good_events(count=1):
    """``count`` jobs, each a publish and one return: what a healthy batch carries."""
    found = []
    for _ in range(count):
        jid = new_jid()
        found.append(
            (f"salt/job/{jid}/new", {"fun": "test.ping", "tgt": "*", "tgt_type": "glob", "minions": ["m1"], "arg": [], "jid": jid})
        )
        found.append(
            (f"salt/job/{jid}/ret/m1", {"fun": "test.ping", "id": "m1", "jid": jid, "return": True, "retcode": 0, "success": True})
        )
    return found


def jids_of(events):
    return sorted({tag.split("/")[2] for tag, _ in events if tag.startswith("salt/job/")})


def event_data(store, tag):
    """The ``data`` of every stored event with exactly this tag."""
    with store.connect() as conn:
        return [row.data for row in conn.execute(sa.select(events_table.c.data).where(events_table.c.tag == tag))]


def return_row(store, jid, minion_id):
    with store.connect() as conn:
        return conn.execute(sa.select(returns_table).where(returns_table.c.jid == jid, returns_table.c.minion_id == minion_id)).first()


def job_row(store, jid):
    with store.connect() as conn:
        return conn.execute(sa.select(jobs_table).where(jobs_table.c.jid == jid)).first()


def stored_jobs_and_returns(store, jids):
    """(jobs, returns) stored for these jids."""
    with store.connect() as conn:
        jobs = conn.execute(sa.select(sa.func.count()).select_from(jobs_table).where(jobs_table.c.jid.in_(jids))).scalar()
        rets = conn.execute(sa.select(sa.func.count()).select_from(returns_table).where(returns_table.c.jid.in_(jids))).scalar()
    return jobs, rets


def all_stored(store, events):
    """True when every job and return of ``good_events`` output is in the store."""
    jids = jids_of(events)
    return stored_jobs_and_returns(store, jids) == (len(jids), len(jids))


class Pipeline:
    """A real worker consuming ``cfg.queue`` into ``store``, in a thread."""

    def __init__(self, name, cfg, store, broker_url):
        self.name = name
        self.cfg = cfg
        self.store = store
        self.broker_url = broker_url
        self.dialect = store.engine.dialect.name
        self.letters = []  # every dead letter taken so far: (headers, body)
        self.runner = WorkerThread(cfg, store)
        self.worker = self.runner.worker

    def __enter__(self):
        self.runner.__enter__()
        return self

    def __exit__(self, *exc):
        self.runner.__exit__(*exc)

    @property
    def alive(self):
        return self.runner.thread.is_alive()

    def publish_body(self, body, message_id):
        publisher = broker.Publisher(self.cfg)
        try:
            publisher.publish(body, message_id)
        finally:
            publisher.close()

    def publish(self, events, master=MASTER):
        """Encode ``events`` as one message, publish it; its message id."""
        message_id, body = message.encode(events, master)
        self.publish_body(body, message_id)
        return message_id

    def process(self, events, timeout=60):
        """Publish ``events`` as one message and wait until the worker acked it.

        Dead letters of its events are published before the ack, so they are
        all in the dead-letter queue when this returns.
        """
        before = self.worker.counts["messages_stored"]
        message_id = self.publish(events)
        assert wait_for(lambda: self.worker.counts["messages_stored"] > before or not self.alive, timeout=timeout, interval=0.05)
        assert self.alive, f"the worker died on message {message_id}"
        return message_id

    def dead_letters(self, message_id, count=None, timeout=30):
        """Dead letters of ``message_id`` as [(reason, headers, decoded batch or raw body)]."""

        def mine():
            self.letters += take_all(self.broker_url, self.cfg.dead_letter_queue)
            return [(h, b) for h, b in self.letters if h.get("x-relay-original-message-id") == message_id]

        if count:
            wait_for(lambda: len(mine()) >= count, timeout=timeout)
        found = mine()
        if count is not None:
            assert len(found) == count, [h.get(REASON_HEADER) for h, _ in found]
        return [(h[REASON_HEADER], h, b) for h, b in found]

    def assert_still_working(self):
        """A good batch published now is stored: the worker survived what came before."""
        assert self.alive, "the worker thread died"
        batch = good_events(2)
        self.process(batch)
        assert all_stored(self.store, batch), "a good batch published after the bad input was not stored"
