"""``salt-relay status``: what a person paged at night, or a monitor, needs to know.

:func:`gather` builds the report (the ``--json`` document, schema below),
:func:`assess` adds the warnings and the state, :func:`render` prints it.
Nothing here changes anything: the database is read without the automatic
schema upgrade.

JSON document, ``schema_version`` 1 (keys are stable; new keys may appear)::

    schema_version, state ("ok" | "degraded" | "down"), exit_status (0 | 1 | 2),
    warnings [text], checked_at (epoch s), mode ("embedded" | "broker"),
    engine   {state ("up" | "down"), reported, pid, mode, seconds_since_report, capture ("up" | "down" | "unknown"),
             capture_failure (why the reader stopped, or null), subscribed_after_start_s (engine process start ->
             bus subscribed, or null), stats_file}
    events   {captured, kept, filtered, filtered_by_reason {reason: n}, stored, published, job_cache_records, engine_reports,
              lost_to_journal_bound, lost_to_spool_bound (its earlier name, same value), bus_drops, reader_overflowed}
    journal  {batches, bytes, max_bytes, used_percent, lag_seconds, directory}
    outbox   {bytes, directory}
    dead_letters {on_disk, directory, in_queue}
    broker   {url, reachable, error, queues {name: {messages, consumers}}}   (null when embedded)
    database {url, reachable, error, schema_revision, code_revision, schema_current,
              rows {jobs, returns, events},
              engines [{master_id, namespace, mode, host, version, seconds_since_report, stats}]
                      (every engine writing into this store, from its last report; null before schema 0002)}
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import time
from typing import TYPE_CHECKING, Callable, Optional

from salt_engine_lib import paths
from salt_engine_lib.errors import RelayError
from salt_engine_lib.urls import mask_url

if TYPE_CHECKING:
    import sqlalchemy as sa

    from salt_engine_lib import config as relay_config

SCHEMA_VERSION = 1
EXIT_STATUS = {"ok": 0, "degraded": 1, "down": 2}


@dataclasses.dataclass(frozen=True)
class Thresholds:
    #: Silent longer than this (its heartbeat is older), the engine is down.
    engine_silent_seconds: float = paths.HEARTBEAT_STALE_SECONDS
    #: Journal use (percent of journal_max_bytes) that needs a person.
    journal_percent: float = 80.0
    #: Age of the oldest unforwarded batch that needs a person.
    lag_seconds: float = 60.0


def _read_engine_stats(path):
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return None


def gather(settings: relay_config.Settings, raw_engine: Callable[[], sa.Engine], now: Optional[float] = None) -> dict:
    """The report (without warnings) for these :class:`config.Settings`; never raises for an unreachable server."""
    from salt_engine_lib import deadletters  # here: importing status stays cheap for the CLI's other commands

    config = settings.config
    now = time.time() if now is None else now
    stats_file = settings.engine_stats_file
    stats = _read_engine_stats(stats_file)
    seconds = round(now - stats.get("updated", 0), 1) if stats else None
    reader_alive = stats.get("reader_alive") if stats else None
    report = {
        "schema_version": SCHEMA_VERSION,
        "checked_at": round(now, 3),
        "mode": "broker" if config.broker_url else "embedded",
        "engine": {
            "reported": stats is not None,
            "pid": stats.get("pid") if stats else None,
            "mode": stats.get("mode") if stats else None,
            "seconds_since_report": seconds,
            "capture": "unknown" if reader_alive is None else ("up" if reader_alive else "down"),
            "capture_failure": stats.get("reader_failure") if stats else None,
            # Seconds from the engine process's start to its bus subscription (what it could not see).
            "subscribed_after_start_s": stats.get("subscribed_after_start_s") if stats else None,
            "stats_file": str(stats_file),
        },
    }
    stats = stats or {}
    dropped = stats.get("dropped") or {}
    embedded = report["mode"] == "embedded"
    report["events"] = {
        "captured": stats.get("captured", 0),
        "kept": stats.get("accepted", 0),
        "filtered": sum(dropped.values()),
        "filtered_by_reason": dict(sorted(dropped.items())),
        # Embedded: the engine itself stores; broker: it publishes and workers store.
        "stored": stats.get("forwarded", 0) - stats.get("rejected", 0) if embedded else None,
        "published": None if embedded else stats.get("forwarded", 0),
        # Stored/published counts include the job cache's records (returns, loads) the engine carried,
        # and its own reports (relay_engines).
        "job_cache_records": stats.get("outbox_moved", 0),
        "engine_reports": stats.get("reports", 0),
        "lost_to_journal_bound": stats.get("journal_lost_events", 0),
        "lost_to_spool_bound": stats.get("journal_lost_events", 0),
        "bus_drops": stats.get("bus_disconnects", 0),
        "reader_overflowed": stats.get("reader_overflowed", 0),
    }
    journal = stats.get("journal") or {}
    max_bytes = journal.get("max_bytes", config.journal_max_bytes)
    size = journal.get("bytes", stats.get("journal_pending_bytes", 0))
    oldest = journal.get("oldest_created")
    report["journal"] = {
        "batches": journal.get("batches", 0),
        "bytes": size,
        "max_bytes": max_bytes,
        "used_percent": round(100.0 * size / max_bytes, 1) if max_bytes else 0.0,
        "lag_seconds": round(max(0.0, now - oldest), 1) if oldest else 0.0,
        "directory": str(settings.journal_dir),
    }
    report["outbox"] = {"bytes": stats.get("outbox_pending_bytes", 0), "directory": str(settings.outbox_dir)}
    report["dead_letters"] = {
        "on_disk": deadletters.count_dead_letters(settings.dead_letters_dir),
        "directory": str(settings.dead_letters_dir),
        "in_queue": None,
    }
    report["broker"] = _broker(config, report) if config.broker_url else None
    report["database"] = _database(settings.database_url, raw_engine, report["checked_at"])
    return report


def _broker(config, report):
    from salt_engine_lib import broker  # here: Kombu is imported only in the broker mode

    found = {"url": mask_url(config.broker_url), "reachable": True, "error": None, "queues": {}}
    try:
        found["queues"] = broker.queue_stats(config)
    except RelayError as err:
        found.update(reachable=False, error=str(err))
        return found
    report["dead_letters"]["in_queue"] = found["queues"].get(config.dead_letter_queue, {}).get("messages")
    return found


def _engine_entry(row, now):
    reported = row.reported_at.replace(tzinfo=datetime.timezone.utc).timestamp()
    return {
        "master_id": row.master_id,
        "namespace": row.namespace,
        "mode": row.mode,
        "host": row.host,
        "version": row.version,
        "seconds_since_report": max(0.0, now - reported),
        "stats": row.stats,
    }


def _database(database_url, raw_engine, now):
    from salt_engine_lib.store import migrate, queries, translate_errors  # here: SQLAlchemy only when a report is made

    found = {
        "url": mask_url(database_url),
        "reachable": True,
        "error": None,
        "schema_revision": None,
        "code_revision": migrate.head_revision(),
        "schema_current": False,
        "rows": None,
        "engines": None,
    }
    try:
        with translate_errors(database_url):
            engine = raw_engine()
            found["schema_revision"] = migrate.current_revision(engine)
            found["schema_current"] = found["schema_revision"] == found["code_revision"]
            if found["schema_revision"] is not None:
                with engine.connect() as conn:
                    found["rows"] = queries.counts(conn)
                    if found["schema_current"]:
                        found["engines"] = [_engine_entry(row, now) for row in queries.engines(conn)]
    except RelayError as err:
        found.update(reachable=False, error=str(err))
    return found


def assess(report: dict, config: relay_config.RelayConfig, thresholds: Thresholds = Thresholds()) -> dict:
    """Adds ``warnings``, ``state`` and ``exit_status``: 0 healthy, 1 degraded, 2 down or unreachable."""
    down, degraded = [], []
    engine, events, journal = report["engine"], report["events"], report["journal"]
    if not engine["reported"]:
        down.append(f"engine: no report at {engine['stats_file']}: the relay engine has not run on this master")
    elif engine["seconds_since_report"] > thresholds.engine_silent_seconds:
        down.append(
            f"engine silent for {engine['seconds_since_report']:.0f} s (more than {thresholds.engine_silent_seconds:g} s): "
            "is salt-master running with engines: [relay]? see the master log"
        )
    elif engine["capture"] == "down":
        why = f" ({engine['capture_failure']})" if engine.get("capture_failure") else ""
        down.append(f"capture down: the engine's bus reader stopped{why}; no events are captured (see the master log)")
    engine["state"] = "up" if engine["reported"] and not down else "down"
    database = report["database"]
    if not database["reachable"]:
        down.append(f"database unreachable: {database['error']}")
    elif not database["schema_current"]:
        degraded.append(
            f"schema behind: database at {database['schema_revision'] or 'empty'}, code at {database['code_revision']}: "
            "run salt-relay db upgrade"
        )
    broker = report["broker"]
    if broker is not None:
        if not broker["reachable"]:
            down.append(f"broker unreachable: {broker['error']}")
        else:
            work = broker["queues"].get(config.queue) or {}
            if work.get("consumers") == 0:
                degraded.append(f"no worker consumes {config.queue}: start salt-relay worker")
    if journal["used_percent"] > thresholds.journal_percent:
        degraded.append(
            f"journal {journal['used_percent']:.1f} % full (more than {thresholds.journal_percent:g} % of "
            f"relay:journal_max_bytes): beyond 100 % new events are lost"
        )
    if journal["lag_seconds"] > thresholds.lag_seconds:
        degraded.append(f"lag {journal['lag_seconds']:.0f} s (more than {thresholds.lag_seconds:g} s): batches wait in the journal")
    if events["lost_to_journal_bound"]:
        degraded.append(
            f"{events['lost_to_journal_bound']} events lost to the journal bound (relay:journal_max_bytes) since the engine started"
        )
    if events["bus_drops"]:
        degraded.append(
            f"the master's publisher dropped the engine's subscription ({events['bus_drops']} times since the engine started): "
            "raise pub_server_write_queue_size"
        )
    if events["reader_overflowed"]:
        degraded.append(f"{events['reader_overflowed']} events dropped by the engine's full in-memory queue")
    dead = report["dead_letters"]
    if dead["in_queue"]:
        degraded.append(f"DLQ {config.dead_letter_queue} holds {dead['in_queue']} messages (reason in the x-relay-reason header)")
    if dead["on_disk"]:
        degraded.append(f"{dead['on_disk']} dead letters on disk in {dead['directory']}")
    state = "down" if down else ("degraded" if degraded else "ok")
    report.update(state=state, exit_status=EXIT_STATUS[state], warnings=down + degraded)
    return report


def _bytes(size):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024.0


def _n(value):
    return "-" if value is None else f"{value:,}"


def render(report: dict) -> str:
    """The aligned text report."""
    lines = []
    checked = datetime.datetime.fromtimestamp(report["checked_at"], datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines.append(("salt-relay", f"{report['state'].upper()} ({report['mode']} mode, checked {checked})"))
    engine = report["engine"]
    if engine["reported"]:
        lines.append(("engine", f"{engine['state']}, pid {engine['pid']}, last report {engine['seconds_since_report']:.1f} s ago"))
    else:
        lines.append(("engine", "down (never reported on this master)"))
    window = engine.get("subscribed_after_start_s")
    lines.append(("capture", engine["capture"] + (f", subscribed {window:.3f} s after the engine started" if window is not None else "")))
    events = report["events"]
    reasons = ", ".join(f"{reason} {_n(count)}" for reason, count in events["filtered_by_reason"].items())
    carried = f" incl. {_n(events['job_cache_records'])} job-cache records" if events["job_cache_records"] else ""
    if events["published"] is None:
        stored = f"stored {_n(events['stored'])}{carried}"
    else:
        stored = f"published {_n(events['published'])}{carried} (workers: stored)"
    lines.append(
        (
            "events",
            f"captured {_n(events['captured'])}  kept {_n(events['kept'])}  filtered {_n(events['filtered'])}"
            f"{f' ({reasons})' if reasons else ''}  {stored}",
        )
    )
    journal = report["journal"]
    lines.append(
        (
            "journal",
            f"{_n(journal['batches'])} batches, {_bytes(journal['bytes'])} of {_bytes(journal['max_bytes'])} "
            f"({journal['used_percent']:.1f} %), lag {journal['lag_seconds']:.1f} s",
        )
    )
    lines.append(("outbox", f"{_bytes(report['outbox']['bytes'])} waiting"))
    dead = report["dead_letters"]
    lines.append(("dead letters", f"{_n(dead['on_disk'])} on disk, {_n(dead['in_queue']) if report['broker'] else '-'} in the DLQ"))
    broker = report["broker"]
    if broker is not None:
        lines.append(("broker", f"{broker['url']}{'' if broker['reachable'] else ' UNREACHABLE'}"))
        for name, queue in broker["queues"].items():
            consumers = "consumers unknown" if queue["consumers"] is None else f"{queue['consumers']} consumers"
            lines.append(("queue", f"{name}: {_n(queue['messages'])} messages, {consumers}"))
    database = report["database"]
    if database["reachable"]:
        rows = database["rows"] or {}
        lines.append(
            (
                "database",
                f"{database['url']}: schema {database['schema_revision'] or 'empty'} (code {database['code_revision']}), "
                f"rows stored: {', '.join(f'{table} {_n(count)}' for table, count in rows.items()) or 'none'}",
            )
        )
        for entry in database["engines"] or ():
            lines.append(
                (
                    "engine in store",
                    f"{entry['master_id']} ({entry['mode']} mode, namespace {entry['namespace']}, host {entry['host']}): "
                    f"last report {entry['seconds_since_report']:.0f} s ago",
                )
            )
    else:
        lines.append(("database", f"{database['url']} UNREACHABLE"))
    lines += [("WARN", warning) for warning in report["warnings"]]
    width = max(len(label) for label, _ in lines)
    return "\n".join(f"{label:<{width}}  {text}" for label, text in lines)
