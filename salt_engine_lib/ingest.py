"""The one way into the store: events -> rows -> one transaction, refusals set aside with the reason.

The worker (broker messages), the engine's embedded sink (its journal), the
outbox drainer when the journal is full, and the returner when no engine runs
all store what they were handed through :func:`store_events`:

1. every event becomes its rows (:func:`records.rows_from_event`); an event
   that cannot (a missing id, a jid too long, data the code cannot read) is
   refused at once;
2. the rows of the rest go in one transaction; if the database refuses it
   while it answers other queries, :func:`store_isolating` splits the batch
   until each refused event is alone, and stores everything else;
3. each refused event goes to the caller's ``refused(event, reason, error)``,
   which dead-letters it (a queue, a file) or raises it to Salt.

A database that does not answer raises :class:`StoreError` out of here with
nothing refused: the caller keeps the batch and retries (nothing is dropped).
Reasons have one format (:func:`reason_of`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Optional

from salt_engine_lib import message, records
from salt_engine_lib.errors import RecordError, StoreError
from salt_engine_lib.store.writes import Rows


@dataclasses.dataclass(frozen=True)
class Event:
    """One event to store, with what its rows depend on."""

    tag: str
    data: Any
    #: The master that captured it.
    master_id: Optional[str] = None
    #: False when the master's job cache is relay: its own records carry every
    #: job and return, so their bus copies make ``events`` rows only.
    jobs_from_bus: bool = True
    #: Whatever the caller needs back with a refusal (the broker message it came in).
    origin: Any = None
    #: The capturing master's job namespace (its cluster id or id); None: ``master_id``.
    namespace: Optional[str] = None


Refused = Callable[[Event, str, Exception], None]


def events_of(batch: message.Batch, origin: Any = None) -> list[Event]:
    """The :class:`Event` of each event of a broker message or journaled batch."""
    jobs_from_bus = not batch.returns_from_job_cache
    return [Event(tag, data, batch.master_id, jobs_from_bus, origin, batch.namespace) for tag, data in batch.events]


def reason_of(error: Exception) -> str:
    """Why an event was not stored, in the one format of every dead letter and log line."""
    if isinstance(error, RecordError):
        return str(error)
    if isinstance(error, StoreError):
        return f"the database refused it: {error}"
    return f"{type(error).__name__}: {error}"


def rows_of(events: Iterable[Event]) -> tuple[list[tuple[Event, Rows]], list[tuple[Event, Exception]]]:
    """([(event, its rows)], [(event, why it makes no rows)])."""
    prepared, rejected = [], []
    for event in events:
        try:
            rows = records.rows_from_event(
                event.tag, event.data, event.master_id, jobs_from_bus=event.jobs_from_bus, namespace=event.namespace
            )
        except Exception as err:  # RecordError, or data the code cannot read: refused, never a crash
            rejected.append((event, err))
        else:
            prepared.append((event, rows))
    return prepared, rejected


def store_isolating(store, prepared: list[tuple[Event, Rows]], refused: Refused) -> None:
    """Write ``prepared`` in one transaction if the database takes it; else bisect down to the refused events.

    StoreError when the database is unreachable (the caller keeps everything).
    """
    if not prepared:
        return
    try:
        store.write_rows(Rows.merge(rows for _event, rows in prepared))
        return
    except StoreError as err:
        if not store.reachable():
            raise
        if len(prepared) == 1:
            refused(prepared[0][0], reason_of(err), err)
            return
    half = len(prepared) // 2
    store_isolating(store, prepared[:half], refused)
    store_isolating(store, prepared[half:], refused)


def store_events(store, events: Iterable[Event], refused: Refused) -> None:
    """Store ``events``; each one that cannot be stored goes to ``refused`` with its reason."""
    prepared, rejected = rows_of(events)
    for event, err in rejected:
        refused(event, reason_of(err), err)
    store_isolating(store, prepared, refused)


def raise_refusal(event: Event, reason: str, error: Exception) -> None:
    """The ``refused`` of a caller with a person waiting (the returner without an engine): raise it."""
    raise error
