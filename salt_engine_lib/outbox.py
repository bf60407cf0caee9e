"""Write-behind for the returner: keep database round trips off the master.

``returner()`` and ``event_return()`` run in the master's MWorkers and
EventReturn process. When the relay engine is running on this master, they
append to the outbox spool (:mod:`spool`, ~10 us per call) and the engine's
:class:`OutboxDrainer` stores the records in batches, one transaction each.
Without a live engine they write to the database directly.

``save_load`` stays synchronous (the ``salt`` CLI reads the load right after
publishing); if the database is down the load is kept in ``pending-loads/``,
which ``get_load`` also reads, and goes through the outbox when it is back.
"""

import hashlib
import logging
import pathlib
import threading
import time

from salt_engine_lib import deadletters, records
from salt_engine_lib.errors import StoreError
from salt_engine_lib.spool import SpoolReader, SpoolWriter, pack, unpack

log = logging.getLogger(__name__)

# The engine rewrites its stats file every 2 s; older than this, it is gone.
ENGINE_ALIVE_SECONDS = 10.0


def relay_dir(opts):
    return pathlib.Path(opts.get("cachedir") or "/var/cache/salt/master", "relay")


def _pending_load_path(opts, jid):
    name = hashlib.sha256(str(jid).encode("utf-8", "surrogatepass")).hexdigest()
    return relay_dir(opts) / "pending-loads" / f"{name}.mp"


class Outbox:
    """The writer side, one per process (see :func:`for_opts`)."""

    def __init__(self, opts):
        self.opts = opts
        self.directory = relay_dir(opts) / "outbox"
        self.writer = SpoolWriter(self.directory)
        self._stats_file = relay_dir(opts) / "engine-stats.json"
        self._alive_checked_at = 0.0
        self._alive = False

    def engine_alive(self):
        now = time.monotonic()
        if now - self._alive_checked_at >= 1.0:
            try:
                self._alive = time.time() - self._stats_file.stat().st_mtime < ENGINE_ALIVE_SECONDS
            except OSError:
                self._alive = False
            self._alive_checked_at = now
        return self._alive

    def put_return(self, ret, master_id):
        self.writer.append({"k": "ret", "ret": ret, "m": master_id})

    def put_events(self, events, master_id):
        self.writer.append({"k": "events", "events": list(events), "m": master_id})

    def put_load(self, jid, load, master_id):
        self.writer.append({"k": "load", "jid": jid, "load": load, "minions": None, "m": master_id})

    def keep_load(self, jid, load, minions, master_id):
        """The database refused a publish load: keep it readable and queued."""
        record = {"k": "load", "jid": jid, "load": load, "minions": minions, "m": master_id, "publish": "return" not in load}
        path = _pending_load_path(self.opts, jid)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pack(record))
        tmp.replace(path)
        self.writer.append(record)


_outboxes = {}
_lock = threading.Lock()


def for_opts(opts):
    # Keyed by the opts object (it runs once per minion return on the master);
    # the Outbox holds opts, so the id cannot be reused by another object.
    outbox = _outboxes.get(id(opts))
    if outbox is None or outbox.opts is not opts:
        with _lock:
            outbox = _outboxes[id(opts)] = Outbox(opts)
    return outbox


def pending_load(opts, jid):
    """The load kept while the database was down, or None."""
    try:
        record = unpack(_pending_load_path(opts, jid).read_bytes())
    except (OSError, ValueError):
        return None
    load = dict(record.get("load") or {})
    if record.get("minions") is not None:
        load["Minions"] = sorted(record["minions"])
    return load


def rows_of_record(item, now=None):
    """(jobs, returns, events) of one outbox record; RecordError if it makes no sense."""
    kind, master_id = item.get("k"), item.get("m")
    try:
        if kind == "ret":
            return [], [records.return_row(item["ret"], master_id, now)], []
        if kind == "events":
            return [], [], [records.event_row(event["tag"], event.get("data"), master_id, now) for event in item["events"]]
        if kind == "load":
            return [records.job_row(item["jid"], item["load"], item.get("minions"), master_id, now)], [], []
    except records.RecordError:
        raise
    except Exception as err:  # pylint: disable=broad-except  # whatever the record holds, it must not block the outbox
        raise records.RecordError(f"malformed {kind} record: {type(err).__name__}: {err}") from None
    raise records.RecordError(f"unknown record kind {kind!r}")


def rows_from_records(items, now=None):
    """(jobs, returns, events, loads_done) rows of outbox records (bad records are logged, skipped)."""
    jobs, returns, events, loads = [], [], [], []
    for item in items:
        try:
            new_jobs, new_returns, new_events = rows_of_record(item, now)
        except records.RecordError as err:
            log.error("relay outbox: record rejected: %s", err)
            continue
        jobs += new_jobs
        returns += new_returns
        events += new_events
        if item.get("k") == "load":
            loads.append(item["jid"])
    return jobs, returns, events, loads


class OutboxDrainer(threading.Thread):
    """Engine thread: outbox -> store, one transaction per batch, retry on failure.

    A record the database refuses (while it answers) is dead-lettered to
    ``dead-letters/`` with the reason instead of blocking the records after it.
    """

    def __init__(self, opts, store, batch_size=1000, idle_seconds=0.05, dead_letters=None):
        super().__init__(name="relay-outbox-drainer", daemon=True)
        self.opts = opts
        self.store = store
        self.reader = SpoolReader(relay_dir(opts) / "outbox")
        self.batch_size = batch_size
        self.idle_seconds = idle_seconds
        self.dead_letters = dead_letters or deadletters.DeadLetterFile(relay_dir(opts) / "dead-letters")
        self.stored = 0
        self.failures = 0
        self.stopping = threading.Event()

    def run(self):
        delay = 0.5
        while not self.stopping.is_set():
            try:
                moved = self.drain_once()
                delay = 0.5
            except Exception as err:  # pylint: disable=broad-except
                self.failures += 1
                log.error("relay: storing outbox records failed, retrying in %.1fs (records are kept): %s: %s", delay, type(err).__name__, err)
                self.stopping.wait(delay)
                delay = min(delay * 2, 5)
                continue
            if not moved:
                self.stopping.wait(self.idle_seconds)

    def drain_once(self):
        items, positions = self.reader.read(self.batch_size)
        if not positions:
            return 0
        prepared, refused = [], set()
        for index, item in enumerate(items):
            try:
                rows = rows_of_record(item)
            except records.RecordError as err:
                refused.add(index)
                self.dead_letters.add(item, f"rejected: {err}")
                continue
            if item.get("publish"):
                # A publish load kept while the database was down: it replaces
                # whatever the bus copy wrote meanwhile (rare, so written alone).
                try:
                    self.store.write_batch(jobs=rows[0], authoritative_jobs=True)
                except StoreError as err:
                    if not self.store.reachable():
                        raise
                    refused.add(index)
                    self.dead_letters.add(item, f"the database refused it: {err}")
                continue
            prepared.append((index, rows))

        def refuse(entry, reason):
            refused.add(entry[0])
            self.dead_letters.add(items[entry[0]], reason)

        if prepared:
            deadletters.write_isolating(self.store, prepared, lambda entries: deadletters.merge_rows(entries, True), refuse)
        self.reader.commit(positions)
        for index, item in enumerate(items):
            # A refused load stays in pending-loads/: get_load keeps serving it.
            if item.get("k") == "load" and index not in refused:
                _pending_load_path(self.opts, item["jid"]).unlink(missing_ok=True)
        self.stored += len(items) - len(refused)
        return len(items)

    def stop(self):
        self.stopping.set()
