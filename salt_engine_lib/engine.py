"""The ``relay`` engine: bus -> filter -> batch -> journal -> broker or store.

Runs in the engine process Salt forks from the master, in three threads that
never wait on each other: the reader (:mod:`bus`) only reads the bus; this
loop filters, batches and appends each batch to the on-disk journal; the
forwarder (:mod:`forwarder`) sends journaled batches to the broker (or, in
the embedded mode, writes them to the store) and forgets them once
confirmed. A broker or database outage only grows the journal.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import queue
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

from salt_engine_lib import __version__
from salt_engine_lib import config as relay_config
from salt_engine_lib import forwarder, handoff, metrics, paths, records
from salt_engine_lib.batching import Batcher
from salt_engine_lib.broker import Publisher
from salt_engine_lib.bus import BusReader
from salt_engine_lib.deadletters import DeadLetterFile
from salt_engine_lib.errors import CaptureStopped, ConfigError, JournalFull
from salt_engine_lib.filters import EventFilter
from salt_engine_lib.outbox_drainer import OutboxDrainer
from salt_engine_lib.signals import stop_on_signals
from salt_engine_lib.store import Store

# How often an engine reports itself into the store (relay_engines), for `salt-relay status`.
REPORT_SECONDS = 30.0
# What of its stats an engine's report carries.
REPORTED_STATS = (
    "captured",
    "accepted",
    "journaled",
    "forwarded",
    "rejected",
    "journal_lost_events",
    "last_error",
    "subscribed_after_start_s",
)

if TYPE_CHECKING:
    from salt_engine_lib.forwarder import BrokerSink, StoreSink

log = logging.getLogger(__name__)


def master_pillar(opts: dict, runners: Optional[Mapping[str, Any]]) -> Any:
    """The ``relay:`` block of the master's own pillar, or None.

    The master has no pillar of its own (``__pillar__ == {}``); compiling it
    for the master id is what ``pillar.show_pillar`` does. ``pillar.get``
    would return masked values.
    """
    if not runners or "pillar.show_pillar" not in runners:
        return None
    try:
        return (runners["pillar.show_pillar"](opts["id"]) or {}).get("relay")
    except Exception as err:  # a broken pillar must not keep the engine from starting
        log.warning("relay: could not compile the master's pillar, ignoring it: %s: %s", type(err).__name__, err)
        return None


def load_config(opts: dict, engine_kwargs: Optional[dict], runners: Optional[Mapping[str, Any]] = None) -> relay_config.RelayConfig:
    return relay_config.from_salt_opts(opts, overrides=engine_kwargs, pillar_block=master_pillar(opts, runners))


class RelayEngine:
    def __init__(
        self,
        opts: dict,
        config: relay_config.RelayConfig,
        reader: Optional[BusReader] = None,
        sink: Optional[Union[BrokerSink, StoreSink]] = None,
    ) -> None:
        self.opts = opts
        self.settings = relay_config.resolve(config, opts)
        self.config = config
        self.filter = EventFilter(config)
        self.batcher = Batcher(config.batch_size, config.batch_max_wait)
        self.reader = reader or BusReader(opts)
        # Opened lazily: in broker mode only the returner's outbox uses it.
        self.store = Store.from_settings(self.settings)
        self.dead_letters = DeadLetterFile(self.settings.dead_letters_dir)
        # The embedded mode's sink, and in every mode the outbox's way into the
        # store when the journal is full: one sink, so its refusals are counted once.
        self.store_sink = forwarder.StoreSink(self.store, self.dead_letters)
        adopt_legacy_journal(opts, self.settings)
        self.forwarder = forwarder.Forwarder(
            self.settings.journal_dir,
            sink or (forwarder.BrokerSink(Publisher(config)) if config.broker_url else self.store_sink),
            max_bytes=config.journal_max_bytes,
            max_message_bytes=config.max_message_bytes,
            returns_from_job_cache=self.settings.returns_from_job_cache,
            namespace=self.settings.namespace,
        )
        # What the returner handed over (write-behind) joins the journal.
        self.drainer = OutboxDrainer(opts, self.forwarder, self.store_sink, batch_size=config.batch_size)
        self.stopping = threading.Event()
        self._stats_written_at = 0.0
        self._reported_at = time.monotonic()  # serve_forever reports at once
        self.reports = 0  # journaled (and counted in "journaled" and "forwarded" like events)
        self.started_at = _process_started_at()

    def install_signal_handlers(self) -> None:
        # Salt's own handler os._exit()s the engine: our pending batch would be lost.
        stop_on_signals(self.stopping, "flushing and stopping")

    def serve_forever(self) -> None:
        self.reader.start_once()
        self.forwarder.start()
        self.drainer.start()
        self.report()
        metrics.serve(self.config.metrics_port, "engine", self.stats, self.config.metrics_address)
        log.info("relay engine started (%s mode): %s", self.settings.mode, self.config.describe())
        while not self.stopping.is_set():
            self.step()
            self.exit_if_a_thread_died()
        self.stop()

    def threads(self) -> dict[str, threading.Thread]:
        """The threads without which the engine would only pretend to work."""
        return {"bus reader": self.reader, "forwarder": self.forwarder, "outbox drainer": self.drainer}

    def exit_if_a_thread_died(self) -> None:
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

    def stop(self) -> None:
        self._drain_reader()
        self.flush()
        self.forwarder.stop()
        self.drainer.stop()
        if self.drainer.is_alive():
            self.drainer.join(timeout=5)
        self.write_stats()
        log.info("relay engine stopped")

    def step(self) -> None:
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
        if time.monotonic() - self._reported_at >= REPORT_SECONDS:
            self.report()

    def _drain_reader(self):
        self.reader.stop()
        while True:
            try:
                tag, data = self.reader.events.get_nowait()
            except queue.Empty:
                return
            self.consider(tag, data)

    def consider(self, tag: Any, data: Any) -> None:
        try:
            keep = self.filter.accept(tag, data)
        except Exception as err:  # whatever an event holds, it must not stop the engine
            self.filter.dropped["malformed"] = self.filter.dropped.get("malformed", 0) + 1
            log.error("relay: event %r dropped, it cannot be read: %s: %s", str(tag)[:200], type(err).__name__, err)
            return
        if keep:
            if self.settings.returns_from_job_cache and records.is_minion_return(tag):
                data = records.without_return_value(data)
            self.batcher.add((tag, data))

    def flush(self) -> None:
        batch = self.batcher.take()
        if not batch:
            return
        try:
            self.forwarder.submit(batch, self.settings.master_id)
        except JournalFull:
            pass  # counted and logged by the forwarder
        except OSError as err:
            # The disk itself failed: nothing else can keep the batch.
            self.forwarder.dropped_events += len(batch)
            log.critical("relay: cannot write the journal (%s): %d events LOST", err, len(batch))

    def stats(self) -> dict[str, Any]:
        fwd = self.forwarder
        return {
            "pid": os.getpid(),
            "mode": self.settings.mode,
            "updated": time.time(),
            "captured": self.filter.accepted + sum(self.filter.dropped.values()),
            "accepted": self.filter.accepted,
            "dropped": dict(self.filter.dropped),
            "journaled": fwd.journaled,
            "forwarded": fwd.sink.sent_events,
            "rejected": self.store_sink.rejected + (getattr(fwd.sink, "rejected", 0) if fwd.sink is not self.store_sink else 0),
            "unencodable": fwd.unencodable,
            "dead_lettered": self.dead_letters.count,
            "journal_pending_bytes": fwd.pending_bytes(fresh=True),
            "journal": {**fwd.unforwarded(), "max_bytes": self.config.journal_max_bytes},
            "reader_alive": self.reader.is_alive(),
            "subscribed_after_start_s": self.subscribed_after_start(),
            "reader_failure": _described(getattr(self.reader, "failure", None)),
            "journal_lost_events": fwd.dropped_events,
            "forward_failures": fwd.failures,
            "last_error": fwd.last_error,
            "pending": len(self.batcher) + self.reader.events.qsize(),
            "reader_overflowed": self.reader.overflowed,
            "bus_disconnects": getattr(self.reader, "disconnects", 0),
            "outbox_moved": self.drainer.moved,
            "outbox_written_directly": self.drainer.written_directly,
            "outbox_pending_bytes": self.drainer.reader.pending_bytes(),
            "reports": self.reports,
        }

    def subscribed_after_start(self) -> Optional[float]:
        """Seconds from this engine process's start to its bus subscription: what the bus published meanwhile the engine never saw.

        The master starts its event publisher before it forks its engines,
        so the window opens a little earlier than this process; it is the
        part that the engine's own start-up adds.
        """
        subscribed_at = getattr(self.reader, "subscribed_at", None)
        if subscribed_at is None or self.started_at is None:
            return None
        return round(max(0.0, subscribed_at - self.started_at), 3)

    def report(self) -> None:
        """Tell the store this engine is alive, the way its events go (``salt-relay status`` lists every engine)."""
        self._reported_at = time.monotonic()
        stats = self.stats()
        summary = {key: stats[key] for key in REPORTED_STATS}
        report = {
            "mode": self.settings.mode,
            "host": socket.gethostname(),
            "version": __version__,
            "reported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "stats": summary,
        }
        try:
            self.forwarder.submit([(records.ENGINE_REPORT_TAG, report)], self.settings.master_id)
        except (JournalFull, OSError) as err:  # a report is not an event: the next one follows
            log.debug("relay: engine report not journaled: %s", err)
        else:
            self.reports += 1

    def write_stats(self) -> None:
        self._stats_written_at = time.monotonic()
        stats_file = self.settings.engine_stats_file
        try:
            stats_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = stats_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.stats()))
            os.replace(tmp, stats_file)
        except OSError as err:
            log.warning("relay: cannot write %s: %s", stats_file, err)


def adopt_legacy_journal(opts: dict, settings: relay_config.Settings) -> None:
    """Earlier builds journaled to ``<cachedir>/relay/spool``: move what is left there to the journal's place."""
    legacy = paths.legacy_journal(opts)
    if settings.config.journal_dir or not legacy.is_dir() or settings.journal_dir.exists():
        return
    try:
        os.replace(legacy, settings.journal_dir)
        log.warning("relay: moved the journal left in %s to %s", legacy, settings.journal_dir)
    except OSError as err:
        log.error("relay: cannot move the journal left in %s to %s, its batches stay there: %s", legacy, settings.journal_dir, err)


def _process_started_at():
    try:
        import psutil  # a dependency of Salt

        return psutil.Process().create_time()
    except Exception:  # the figure is informative only: never a reason not to start
        return None


def _described(err):
    return None if err is None else f"{type(err).__name__}: {err}"


def run(opts: dict, engine_kwargs: Optional[dict], runners: Optional[Mapping[str, Any]] = None) -> None:
    """Entry point of ``_engines/relay.py``: subscribe, validate, then serve until SIGTERM.

    The bus subscription comes first: compiling the master's pillar and
    opening the sinks take a second or more, and the master's publisher is
    already up (a burst of events from minions reconnecting after a master
    restart was lost in that window). The reader's queue holds what arrives
    meanwhile.
    """
    reader = BusReader(opts)
    reader.start()
    try:
        engine = _configured_engine(opts, engine_kwargs, runners, reader)
    except BaseException:
        reader.stop()
        raise
    engine.install_signal_handlers()
    engine.serve_forever()


def _configured_engine(opts, engine_kwargs, runners, reader):
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
    return RelayEngine(opts, config, reader=reader)
