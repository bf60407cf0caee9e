"""What every importer shares: batches, the counting write, progress, the refused file, the summary.

A source (:mod:`.local_cache`, :mod:`.saltext_mysql`) yields :class:`Unit`
(the rows one source item becomes, written together) and :class:`Refusal`
(an item, or part of one, that cannot become rows, with the reason).
:func:`run` writes units in batches of at most ``batch_size`` rows, one
transaction each, and sets every refusal aside in a JSON-lines file: nothing
is dropped without a line there and a count in the summary.

Idempotent and resumable: every row goes through the store's
insert-if-absent writes (:mod:`salt_engine_lib.store.writes`), so a second
run, or a re-run after a kill, adds only what is missing. Rows already in
the store are not touched (the importer never replaces what a live master
wrote).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import os
import sys
import time
from typing import Any, Callable, Iterable, Optional, Union

import sqlalchemy as sa

from salt_engine_lib import jsonsafe
from salt_engine_lib.errors import ConfigError, StoreError
from salt_engine_lib.store import queries, schema, writes

#: Tables counted, in the order the summary shows them.
TABLES = ("jobs", "returns", "events")
# Keys per IN (...) list: far under SQLite's bound-parameter limit.
_KEYS_PER_QUERY = 500


@dataclasses.dataclass
class Unit:
    """One source item's rows (a job with its returns, a row of a source table), written in one transaction."""

    kind: str  # job, return or event: what the item is, for a refusal
    label: str  # names the item in the refused file if the database refuses it
    rows: writes.Rows
    #: (jid, namespace, ended_at) of jobs whose end time the source knows.
    endtimes: list = dataclasses.field(default_factory=list)
    #: Progress steps the item counts for (a source item: 1).
    steps: int = 1
    #: What the refused file keeps if the database refuses the unit.
    data: Any = None

    @property
    def size(self) -> int:
        return len(self.rows.jobs) + len(self.rows.returns) + len(self.rows.events)


@dataclasses.dataclass(frozen=True)
class Refusal:
    """An item (or part of one) that cannot be imported; ``reason`` is short and groups the summary."""

    kind: str  # job, return, event, endtime, entry (a source entry that names no job yet)
    key: dict
    reason: str
    detail: str = ""
    data: Any = None
    #: Progress steps: 1 if the whole source item is refused, 0 for a part of one.
    steps: int = 0


Item = Union[Unit, Refusal]


@dataclasses.dataclass
class Tally:
    """Counts of one run: per table rows imported (new) and skipped (already in the store); refusals by kind and reason."""

    imported: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    refused: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    endtimes: int = 0
    batches: int = 0
    refused_path: Optional[str] = None

    def add_written(self, counts: dict) -> None:
        for table, (imported, skipped) in counts.items():
            self.imported[table] += imported
            self.skipped[table] += skipped

    def document(self) -> dict:
        refused = collections.defaultdict(dict)
        for (kind, reason), count in sorted(self.refused.items()):
            refused[kind][reason] = count
        return {
            "imported": {table: self.imported[table] for table in TABLES},
            "skipped": {table: self.skipped[table] for table in TABLES},
            "endtimes_set": self.endtimes,
            "refused": dict(refused),
            "refused_total": sum(self.refused.values()),
            "refused_file": self.refused_path,
            "batches": self.batches,
        }

    def render(self) -> str:
        doc = self.document()
        lines = ["imported (new rows) / skipped (already in the store):"]
        lines += [f"  {table:<8} {doc['imported'][table]:>10} / {doc['skipped'][table]}" for table in TABLES]
        lines.append(f"  end times set (of the new jobs): {doc['endtimes_set']}")
        if not doc["refused_total"]:
            lines.append("refused: none")
        else:
            lines.append(f"refused: {doc['refused_total']} (each one in {doc['refused_file']})")
            for kind, reasons in doc["refused"].items():
                lines += [f"  {kind}: {reason}: {count}" for reason, count in reasons.items()]
        return "\n".join(lines)


class RefusedFile:
    """JSON lines, one per refusal, opened at the first one (a clean run leaves no file) and flushed each time (a kill keeps them)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._handle = None

    def write(self, refusal: Refusal, source: str) -> None:
        if self._handle is None:
            self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held for the whole run, closed in close()
        record = {
            "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "source": source,
            "kind": refusal.kind,
            "key": refusal.key,
            "reason": refusal.reason,
            "detail": refusal.detail,
            "data": refusal.data,
        }
        self._handle.write(jsonsafe.dumps(record) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def default_refused_path(source: str) -> str:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return os.path.join(os.getcwd(), f"salt-relay-import-{source}-{stamp}.refused.jsonl")


class Progress:
    """A bar with rate and ETA on a terminal; elsewhere a plain line every ``interval`` seconds (stderr)."""

    def __init__(self, total: Optional[int], unit: str, interval: float = 10.0, stream=None, tty: Optional[bool] = None) -> None:
        self.total = total
        self.unit = unit
        self.interval = interval
        self.stream = stream or sys.stderr
        self.done = 0
        self.started = self._last_line = time.monotonic()
        self._bar = None
        if self.stream.isatty() if tty is None else tty:
            import click

            self._bar = click.progressbar(
                length=total, label=f"importing {unit}", show_pos=True, show_eta=True, file=self.stream, item_show_func=self._rate_text
            )
            self._bar.__enter__()

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def _rate_text(self, _item=None) -> str:
        return f"{self.rate():.0f} {self.unit}/s"

    def advance(self, steps: int) -> None:
        self.done += steps
        if self._bar is not None:
            self._bar.update(steps)
        elif time.monotonic() - self._last_line >= self.interval:
            self._last_line = time.monotonic()
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self) -> str:
        rate = self.rate()
        if self.total:
            left = max(self.total - self.done, 0)
            eta = f", ETA {left / rate:.0f} s" if rate > 0 else ""
            return f"salt-relay import: {self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f}%), {rate:.0f}/s{eta}"
        return f"salt-relay import: {self.done} {self.unit}, {rate:.0f}/s"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
        else:
            self.stream.write(self.line() + " - done\n")
            self.stream.flush()


# -- the counting write ----------------------------------------------------------


def _chunks(values, size=_KEYS_PER_QUERY):
    values = list(values)
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _present(conn, table, key_columns, rows, lookup_column):
    """The keys of ``rows`` already in ``table``, read by ``lookup_column`` (the leading primary-key column)."""
    wanted = {tuple(row[column] for column in key_columns) for row in rows}
    found = set()
    columns = [table.c[column] for column in key_columns]
    for chunk in _chunks({row[lookup_column] for row in rows}):
        for stored in conn.execute(sa.select(*columns).where(table.c[lookup_column].in_(chunk))):
            found.add(tuple(stored))
    return wanted, found & wanted


_COUNTED = (
    ("jobs", schema.jobs, ("jid", "namespace"), "jid"),
    ("returns", schema.returns, ("jid", "namespace", "minion_id"), "jid"),
    ("events", schema.events, ("content_key",), "content_key"),
)


def write_units(conn: sa.Connection, units: list[Unit]) -> tuple[dict[str, tuple[int, int]], int]:
    """Store ``units`` in the caller's transaction; ({table: (rows new, rows skipped)}, end times set).

    The store's writes report the rows given, not the rows added (and on
    MySQL the affected-rows count of a no-op ON DUPLICATE KEY cannot tell
    them apart), so the keys already present are read first, in the same
    transaction: "imported" counts rows the database did not have.
    """
    rows = writes.Rows.merge(unit.rows for unit in units)
    counts, new_jobs = {}, set()
    for name, table, keys, lookup in _COUNTED:
        given = getattr(rows, name)
        wanted, present = _present(conn, table, keys, given, lookup) if given else (set(), set())
        counts[name] = (len(wanted) - len(present), len(given) - (len(wanted) - len(present)))
        if name == "jobs":
            new_jobs = wanted - present
    writes.write_batch(conn, rows.jobs, rows.returns, rows.events)
    # Only the jobs this batch adds get their end time: a job already stored keeps what is there.
    endtimes = [(jid, namespace, ended_at) for unit in units for jid, namespace, ended_at in unit.endtimes if (jid, namespace) in new_jobs]
    queries.set_endtimes(conn, endtimes)
    return counts, len(endtimes)


# -- the run -----------------------------------------------------------------------


class _Run:
    def __init__(self, store, source_name, refused_file, progress, tally):
        self.store = store
        self.source_name = source_name
        self.refused_file = refused_file
        self.progress = progress
        self.tally = tally

    def refuse(self, refusal: Refusal) -> None:
        self.refused_file.write(refusal, self.source_name)
        self.tally.refused[(refusal.kind, refusal.reason)] += 1
        self.tally.refused_path = self.refused_file.path

    def flush(self, units: list[Unit]) -> None:
        if not units:
            return
        self._store_isolating(units)
        self.tally.batches += 1
        self.progress.advance(sum(unit.steps for unit in units))

    def _store_isolating(self, units):
        """One transaction for the batch; if the database refuses it while it answers, bisect to the refused units."""
        try:
            counts, endtimes = self.store.write(write_units, units)
        except StoreError as err:
            if not self.store.reachable():
                raise  # down, not refusing: stop here; a re-run resumes
            if len(units) == 1:
                unit = units[0]
                self.refuse(Refusal(unit.kind, {"item": unit.label}, "the database refused it", str(err), unit.data))
                return
            half = len(units) // 2
            self._store_isolating(units[:half])
            self._store_isolating(units[half:])
            return
        self.tally.add_written(counts)
        self.tally.endtimes += endtimes


def run(
    store,
    items: Iterable[Item],
    source_name: str,
    batch_size: int,
    refused_path: str,
    progress: Progress,
    on_batch: Optional[Callable[[Tally], None]] = None,
) -> Tally:
    """Import ``items``: batches of at most ``batch_size`` rows (a unit is never split), refusals to ``refused_path``."""
    tally = Tally()
    refused_file = RefusedFile(refused_path)
    state = _Run(store, source_name, refused_file, progress, tally)
    batch, batch_rows = [], 0
    try:
        for item in items:
            if isinstance(item, Refusal):
                state.refuse(item)
                progress.advance(item.steps)
                continue
            if batch and batch_rows + item.size > batch_size:
                state.flush(batch)
                batch, batch_rows = [], 0
                if on_batch:
                    on_batch(tally)
            batch.append(item)
            batch_rows += item.size
        state.flush(batch)
    finally:
        refused_file.close()
        progress.close()
    return tally


def json_or_refusal(text: Any, kind: str, key: dict, what: str) -> Union[Any, Refusal]:
    """Parsed JSON, or the :class:`Refusal` of the whole source row saying it is not JSON (``what`` names the column)."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "surrogateescape")
    try:
        return json.loads(text)
    except (TypeError, ValueError) as err:
        return Refusal(kind, key, f"bad JSON in {what}", f"{type(err).__name__}: {err}", {what: text}, steps=1)


def short_reason(error: Exception) -> str:
    """The summary's reason for a :class:`RecordError` ("jid longer than 64 characters"), without the value it names."""
    return str(error).split(": ", 1)[0]


@dataclasses.dataclass(frozen=True)
class Options:
    """How a run writes and reports (the ``salt-relay import`` flags)."""

    batch_size: int = 1000
    refused_path: Optional[str] = None  # None: default_refused_path(source)
    progress_interval: float = 10.0
    tty: Optional[bool] = None  # None: the progress bar if stderr is a terminal


def importing_master(settings) -> None:
    """ConfigError unless the settings name a master: imported rows go to its namespace."""
    if not settings.master_id:
        raise ConfigError(
            "salt-relay import files the jobs under a master's namespace: point -c at the master's config dir "
            "(the one with its `master` file) or set relay:master_id"
        )


def run_source(store, items: Iterable[Item], source_name: str, total: Optional[int], unit: str, options: Options) -> Tally:
    """:func:`run` with the progress and refused file the options say."""
    store.ensure_schema()  # a wrong database fails before anything is read
    progress = Progress(total, unit, options.progress_interval, tty=options.tty)
    return run(store, items, source_name, options.batch_size, options.refused_path or default_refused_path(source_name), progress)
