"""The ``relay`` engine: bus -> filter -> batch -> journal -> broker or store.

Runs in the engine process Salt forks from the master, in three threads that
never wait on each other: the reader (:mod:`bus`) only reads the bus; this
loop filters, batches and appends each batch to the on-disk journal; the
forwarder (:mod:`forwarder`) sends journaled batches to the broker (or, in
the embedded mode, writes them to the store) and forgets them once
confirmed. A broker or database outage only grows the journal.
"""

import json
import logging
import os
import queue
import threading
import time

from salt_engine_lib import config as relay_config
from salt_engine_lib import forwarder, handoff, metrics, paths, records
from salt_engine_lib.batching import Batcher
from salt_engine_lib.broker import Publisher
from salt_engine_lib.bus import BusReader
from salt_engine_lib.errors import CaptureStopped, ConfigError, JournalFull
from salt_engine_lib.filters import EventFilter
from salt_engine_lib.deadletters import DeadLetterFile
from salt_engine_lib.outbox_drainer import OutboxDrainer
from salt_engine_lib.signals import stop_on_signals
from salt_engine_lib.store import Store

log = logging.getLogger(__name__)


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


def relay_is_job_cache(opts):
    """True when Salt hands every minion return to the relay returner (salt/utils/job.py store_job)."""
    return opts.get("master_job_cache") == "relay" and bool(opts.get("job_cache", True)) and not opts.get("ext_job_cache")


def make_sink(config, store, dead_letters):
    """The broker when ``broker_url`` is set, else the store (the embedded mode)."""
    if config.broker_url:
        return forwarder.BrokerSink(Publisher(config))
    return forwarder.StoreSink(store, dead_letters)


class RelayEngine:
    def __init__(self, opts, config, reader=None, sink=None):
        self.opts = opts
        self.config = config
        self.master_id = config.master_id or opts.get("id")
        self.filter = EventFilter(config)
        self.batcher = Batcher(config.batch_size, config.batch_max_wait)
        self.reader = reader or BusReader(opts)
        self.returns_from_job_cache = relay_is_job_cache(opts)
        # Opened lazily: in broker mode only the returner's outbox uses it.
        self.store = Store.from_config(config, relay_config.database_url(config, opts))
        self.mode = "broker" if config.broker_url else "embedded"
        self.dead_letters = DeadLetterFile(paths.dead_letters(opts))
        self.forwarder = forwarder.Forwarder(
            paths.journal(opts, config.spool_dir),
            sink or make_sink(config, self.store, self.dead_letters),
            max_bytes=config.spool_max_bytes,
            max_message_bytes=config.max_message_bytes,
            returns_from_job_cache=self.returns_from_job_cache,
        )
        # What the returner handed over (write-behind) joins the journal.
        self.drainer = OutboxDrainer(opts, self.store, self.forwarder, batch_size=config.batch_size, dead_letters=self.dead_letters)
        self.stopping = threading.Event()
        self._stats_file = paths.engine_stats(opts)
        self._stats_written_at = 0.0

    def install_signal_handlers(self):
        # Salt's own handler os._exit()s the engine: our pending batch would be lost.
        stop_on_signals(self.stopping, "flushing and stopping")

    def serve_forever(self):
        self.reader.start()
        self.forwarder.start()
        self.drainer.start()
        metrics.serve(self.config.metrics_port, "engine", self.stats, self.config.metrics_address)
        log.info("relay engine started (%s mode): %s", self.mode, self.config.describe())
        while not self.stopping.is_set():
            self.step()
            self.exit_if_a_thread_died()
        self.stop()

    def threads(self):
        """The threads without which the engine would only pretend to work."""
        return {"bus reader": self.reader, "forwarder": self.forwarder, "outbox drainer": self.drainer}

    def exit_if_a_thread_died(self):
        """Flush, stop and raise :class:`CaptureStopped` if a needed thread ended.

        Going on would report a running engine that captures (or forwards)
        nothing; exiting lets Salt's process manager start the engine again.
        """
        for name, thread in self.threads().items():
            if thread.is_alive():
                continue
            failure = getattr(thread, "failure", None)
            why = f"{type(failure).__name__}: {failure}" if failure is not None else "it ended"
            log.critical(
                "relay engine: its %s stopped (%s); flushing what it holds and exiting, Salt starts it again",
                name,
                why,
                exc_info=failure,
            )
            self.stop()
            raise CaptureStopped(f"the relay engine's {name} stopped: {why}") from failure

    def stop(self):
        self._drain_reader()
        self.flush()
        self.forwarder.stop()
        self.drainer.stop()
        if self.drainer.is_alive():
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
            self.consider(tag, data)
        if self.batcher.is_due():
            self.flush()
        if time.monotonic() - self._stats_written_at >= paths.HEARTBEAT_SECONDS:
            self.write_stats()

    def _drain_reader(self):
        self.reader.stop()
        while True:
            try:
                tag, data = self.reader.events.get_nowait()
            except queue.Empty:
                return
            self.consider(tag, data)

    def consider(self, tag, data):
        try:
            keep = self.filter.accept(tag, data)
        except Exception as err:  # pylint: disable=broad-except
            # Whatever an event holds, it must not stop the engine.
            self.filter.dropped["malformed"] = self.filter.dropped.get("malformed", 0) + 1
            log.error("relay: event %r dropped, it cannot be read: %s: %s", str(tag)[:200], type(err).__name__, err)
            return
        if keep:
            if self.returns_from_job_cache and records.is_minion_return(tag):
                data = records.without_return_value(data)
            self.batcher.add((tag, data))

    def flush(self):
        batch = self.batcher.take()
        if not batch:
            return
        try:
            self.forwarder.submit(batch, self.master_id)
        except JournalFull:
            pass  # counted and logged by the forwarder
        except OSError as err:
            # The disk itself failed: nothing else can keep the batch.
            self.forwarder.dropped_events += len(batch)
            log.critical("relay: cannot write the spool (%s): %d events LOST", err, len(batch))

    def stats(self):
        fwd = self.forwarder
        return {
            "pid": os.getpid(),
            "mode": self.mode,
            "updated": time.time(),
            "captured": self.filter.accepted + sum(self.filter.dropped.values()),
            "accepted": self.filter.accepted,
            "dropped": dict(self.filter.dropped),
            "journaled": fwd.journaled,
            "forwarded": fwd.sink.sent_events,
            "rejected": getattr(fwd.sink, "rejected", 0),
            "unencodable": fwd.unencodable,
            "dead_lettered": self.dead_letters.count,
            "spool_pending_bytes": fwd.pending_bytes(fresh=True),
            "journal": {**fwd.unforwarded(), "max_bytes": self.config.spool_max_bytes},
            "reader_alive": self.reader.is_alive(),
            "reader_failure": _described(getattr(self.reader, "failure", None)),
            "spool_lost_events": fwd.dropped_events,
            "forward_failures": fwd.failures,
            "last_error": fwd.last_error,
            "pending": len(self.batcher) + self.reader.events.qsize(),
            "reader_overflowed": self.reader.overflowed,
            "bus_disconnects": getattr(self.reader, "disconnects", 0),
            "outbox_moved": self.drainer.moved,
            "outbox_written_directly": self.drainer.written_directly,
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


def _described(err):
    return None if err is None else f"{type(err).__name__}: {err}"


def run(opts, engine_kwargs, runners=None):
    """Entry point of ``_engines/relay.py``: validate, then serve until SIGTERM."""
    try:
        config = load_config(opts, engine_kwargs or {}, runners)
    except ConfigError as err:
        # Salt restarts a crashed engine every ~10 s; say why each time.
        log.critical("relay engine cannot start: %s", err)
        raise
    daemon_config = relay_config.from_salt_opts(opts)
    if daemon_config.database_url and config.database_url != daemon_config.database_url:
        log.critical(
            "relay engine cannot start: relay:database_url from the engine options or the master's pillar differs "
            "from the master config's, which the master's job cache uses: set it in one place"
        )
        raise ConfigError("relay:database_url differs between the engine and the master config")
    handoff.write(opts, config)  # the master's job cache uses the same store
    engine = RelayEngine(opts, config)
    engine.install_signal_handlers()
    engine.serve_forever()
