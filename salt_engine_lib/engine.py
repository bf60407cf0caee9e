"""The ``relay`` engine: bus -> filter -> batch -> sink.

Runs in the engine process Salt forks from the master. A reader thread
(:mod:`bus`) only reads; this loop filters, batches and hands each batch to
the sink. The sink in this version writes batches straight to the store in
one transaction each (the embedded mode); a failed write is retried with
backoff and the batch is kept, while the reader keeps draining the bus.
"""

import json
import logging
import os
import pathlib
import queue
import signal
import threading
import time

from salt_engine_lib import config as relay_config
from salt_engine_lib import records
from salt_engine_lib.batching import Batcher
from salt_engine_lib.bus import BusReader
from salt_engine_lib.errors import ConfigError
from salt_engine_lib.filters import EventFilter
from salt_engine_lib.outbox import OutboxDrainer
from salt_engine_lib.store import Store

log = logging.getLogger(__name__)

STATS_INTERVAL = 2.0


def master_pillar(opts, runners):
    """The ``relay:`` block of the master's own pillar, or None.

    The master has no pillar of its own (``__pillar__ == {}``); compiling it
    for the master id is what ``pillar.show_pillar`` does. ``pillar.get``
    would return masked values.
    """
    if not runners or "pillar.show_pillar" not in runners:
        return None
    try:
        return (runners["pillar.show_pillar"](opts["id"]) or {}).get("relay")
    except Exception as err:  # pylint: disable=broad-except
        log.warning("relay: could not compile the master's pillar, ignoring it: %s: %s", type(err).__name__, err)
        return None


def load_config(opts, engine_kwargs, runners=None):
    return relay_config.from_salt_opts(opts, overrides=engine_kwargs, pillar_block=master_pillar(opts, runners))


def stats_path(opts):
    return pathlib.Path(opts.get("cachedir") or "/var/cache/salt/master", "relay", "engine-stats.json")


class StoreSink:
    """Writes a batch of events to the store in one transaction."""

    def __init__(self, store, master_id):
        self.store = store
        self.master_id = master_id
        self.stored = 0
        self.rejected = 0

    def rows(self, batch):
        jobs, returns, events = [], [], []
        for tag, data in batch:
            try:
                new_jobs, new_returns, new_events = records.rows_from_event(tag, data, self.master_id)
            except records.RecordError as err:
                self.rejected += 1
                log.error("relay: event %r rejected: %s", str(tag)[:200], err)
                continue
            jobs += new_jobs
            returns += new_returns
            events += new_events
        return jobs, returns, events

    def write(self, batch):
        jobs, returns, events = self.rows(batch)
        self.store.write_batch(jobs, returns, events)
        self.stored += len(events)


class RelayEngine:
    def __init__(self, opts, config, reader=None, sink=None):
        self.opts = opts
        self.config = config
        self.filter = EventFilter(config)
        self.batcher = Batcher(config.batch_size, config.batch_max_wait)
        self.reader = reader or BusReader(opts)
        master_id = config.master_id or opts.get("id")
        url = relay_config.database_url(config, opts)
        self.sink = sink or StoreSink(Store.from_config(config, url), master_id)
        # Returns the returner handed over (write-behind), stored by this process.
        self.drainer = OutboxDrainer(opts, self.sink.store, batch_size=config.batch_size)
        self.stopping = threading.Event()
        self._stats_file = stats_path(opts)
        self._stats_written_at = 0.0

    def install_signal_handlers(self):
        # Salt's own handler os._exit()s the engine: our pending batch would be lost.
        def handle(signum, _frame):
            log.info("relay: signal %s received, flushing and stopping", signum)
            self.stopping.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def serve_forever(self):
        self.reader.start()
        self.drainer.start()
        log.info("relay engine started: %s", self.config.describe())
        while not self.stopping.is_set():
            self.step()
        self._drain_reader()
        self.flush()
        self.drainer.stop()
        self.drainer.join(timeout=5)
        self.write_stats()
        log.info("relay engine stopped")

    def step(self):
        wait = self.batcher.seconds_until_due()
        try:
            tag, data = self.reader.events.get(timeout=1.0 if wait is None else max(wait, 0.001))
        except queue.Empty:
            pass
        else:
            if self.filter.accept(tag, data):
                self.batcher.add((tag, data))
        if self.batcher.is_due():
            self.flush()
        if time.monotonic() - self._stats_written_at >= STATS_INTERVAL:
            self.write_stats()

    def _drain_reader(self):
        self.reader.stop()
        while True:
            try:
                tag, data = self.reader.events.get_nowait()
            except queue.Empty:
                return
            if self.filter.accept(tag, data):
                self.batcher.add((tag, data))

    def flush(self):
        batch = self.batcher.take()
        delay = 0.5
        while batch:
            try:
                self.sink.write(batch)
                return
            except Exception as err:  # pylint: disable=broad-except
                log.error(
                    "relay: storing a batch of %d events failed, retrying in %.1fs (events are kept): %s: %s",
                    len(batch), delay, type(err).__name__, err,
                )
                if self.stopping.wait(delay) and delay >= 8:
                    log.critical("relay: stopping with %d unstored events", len(batch))
                    return
                delay = min(delay * 2, 30)

    def stats(self):
        return {
            "pid": os.getpid(),
            "updated": time.time(),
            "captured": self.filter.accepted + sum(self.filter.dropped.values()),
            "accepted": self.filter.accepted,
            "dropped": dict(self.filter.dropped),
            "stored": self.sink.stored,
            "rejected": self.sink.rejected,
            "pending": len(self.batcher) + self.reader.events.qsize(),
            "reader_overflowed": self.reader.overflowed,
            "outbox_stored": self.drainer.stored,
            "outbox_pending_bytes": self.drainer.reader.pending_bytes(),
        }

    def write_stats(self):
        self._stats_written_at = time.monotonic()
        try:
            self._stats_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._stats_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.stats()))
            os.replace(tmp, self._stats_file)
        except OSError as err:
            log.warning("relay: cannot write %s: %s", self._stats_file, err)


def run(opts, engine_kwargs, runners=None):
    """Entry point of ``_engines/relay.py``: validate, then serve until SIGTERM."""
    try:
        config = load_config(opts, engine_kwargs or {}, runners)
    except ConfigError as err:
        # Salt restarts a crashed engine every ~10 s; say why each time.
        log.critical("relay engine cannot start: %s", err)
        raise
    engine = RelayEngine(opts, config)
    engine.install_signal_handlers()
    engine.serve_forever()
