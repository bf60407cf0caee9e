"""Salt documents -> store rows. Pure functions, no I/O.

Three return shapes reach a job cache (the reference notes on Salt's interfaces, section 3):
minion returns (``cmd="_return"``), ``salt-call`` returns (may lack
``success``) and runner jobs (``fun="runner.*"``, result nested under
``return``). Multi-function jobs carry lists/dicts for fun/retcode/success.
"""

from __future__ import annotations

import hashlib
import typing
from typing import Any, Iterable, Optional

from salt_engine_lib import jsonsafe, listing
from salt_engine_lib.jids import jid_time, parse_stamp, utcnow
from salt_engine_lib.errors import RecordError
from salt_engine_lib.store.schema import FUN_LENGTH, JID_LENGTH, MINION_ID_LENGTH, NAMESPACE_LENGTH
from salt_engine_lib.store.writes import Rows

if typing.TYPE_CHECKING:
    import datetime

# Keys a return row keeps in its own columns rather than in ``document``.
_RETURN_VALUE_KEY = "return"


# salt-relay's own records travel through the engine's journal as events
# with tags under this prefix (the engine refuses them from the bus, so a
# minion cannot forge one). The job cache's own return is authoritative: it
# replaces a row built from a bus copy, whose big values Salt may have trimmed.
RESERVED_TAG_PREFIX = "salt-relay/"
JOB_CACHE_TAG_PREFIX = RESERVED_TAG_PREFIX + "job-cache/"
JOB_CACHE_RETURN_TAG = JOB_CACHE_TAG_PREFIX + "return"
JOB_CACHE_LOAD_TAG = JOB_CACHE_TAG_PREFIX + "load"
#: save_minions: the minions a syndic reports for a job.
JOB_CACHE_MINIONS_TAG = JOB_CACHE_TAG_PREFIX + "minions"
#: An engine's periodic report of itself (the ``relay_engines`` row).
ENGINE_REPORT_TAG = RESERVED_TAG_PREFIX + "engine/report"


def _checked_key(name, value, max_length):
    if value is None or value == "":
        raise RecordError(f"missing {name}")
    value = str(value)
    if len(value) > max_length:
        raise RecordError(f"{name} longer than {max_length} characters: {value[:40]!r}...")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RecordError(f"{name} is not valid UTF-8: {value[:40]!r}") from None
    return value


def _label(value, max_length):
    """A descriptive text column: cut to its width, invalid UTF-8 escaped (the JSON keeps the original)."""
    if value is None:
        return None
    text = str(value)[:max_length]
    return text if text.isascii() else jsonsafe._utf8_safe(text)[:max_length]


def _fun_label(fun):
    if isinstance(fun, (list, tuple)):
        fun = ",".join(str(f) for f in fun)
    return _label(fun, FUN_LENGTH)


def namespace_of(document: Any, namespace: Optional[str]) -> str:
    """The job namespace of a job's or return's rows.

    A job published by a master-of-masters that sets Salt's ``master_id``
    option carries that id in its load and in every return (Salt copies it
    down through syndics): its rows belong to that master wherever they were
    captured, so a syndic node's own master stores them once with the top's.
    Anything else belongs to the namespace of the master that captured it
    (its cluster id or its id; ``''`` for rows a minion wrote).
    """
    return _label(published_by(document) or namespace or "", NAMESPACE_LENGTH)


def published_by(document):
    """Salt's ``master_id`` in a load or return: the master-of-masters that published the job, if it names itself.

    Returns and publications carry it at the top; the load a syndic's master
    saves (its ``save_load``) keeps it in the ``kwargs`` the syndic published with.
    """
    if not isinstance(document, dict):
        return None
    kwargs = document.get("kwargs")
    published_by = document.get("master_id") or (kwargs.get("master_id") if isinstance(kwargs, dict) else None)
    return published_by if isinstance(published_by, str) and published_by else None


def job_row(
    jid: Any,
    load: Optional[dict],
    minions: Optional[Iterable] = None,
    master_id: Optional[str] = None,
    now: Optional[datetime.datetime] = None,
    namespace: Optional[str] = None,
) -> dict:
    load = dict(load or {})
    tgt = load.get("tgt")
    jid = _checked_key("jid", jid, JID_LENGTH)
    return {
        "jid": jid,
        "namespace": namespace_of(load, namespace if namespace is not None else master_id),
        # The publisher: a master-of-masters named in the load, else the capturing master.
        "master_id": _label(published_by(load) or master_id, MINION_ID_LENGTH),
        "fun": _fun_label(load.get("fun")),
        # list targets (-L) arrive as lists
        "tgt": _label(tgt if tgt is None or isinstance(tgt, str) else jsonsafe.dumps(tgt), None),
        "tgt_type": _label(load.get("tgt_type"), 32),
        "user": _label(load.get("user"), 255),
        "load": load,
        "minions": sorted(str(m) for m in minions) if minions is not None else None,
        "listing_head": listing.head(jid, load),  # job_listings.head (store.writes)
        "started_at": jid_time(jid),
        "ended_at": None,
        "stored_at": now or utcnow(),
    }


def _derive_outcome(ret):
    """(retcode, success) for the three return shapes."""
    retcode, success = ret.get("retcode"), ret.get("success")
    nested = ret.get(_RETURN_VALUE_KEY)
    if str(ret.get("fun", "")).startswith("runner.") and isinstance(nested, dict):
        # Runner jobs nest the outcome under "return".
        success = nested.get("success", success)
        retcode = nested.get("retcode", retcode)
    if isinstance(retcode, (dict, list)):  # multi-function job: one per function (a list if multifunc_ordered)
        codes = [c for c in _per_function(retcode) if isinstance(c, int) and not isinstance(c, bool)]
        retcode = max(codes) if codes else None
    if isinstance(success, (dict, list)):
        success = all(bool(s) for s in _per_function(success))
    if isinstance(retcode, bool) or not isinstance(retcode, int):
        retcode = None if retcode is None else _int_or_none(retcode)
    if success is None and retcode is not None:
        success = retcode == 0
    return retcode, (None if success is None else bool(success))


def _per_function(values):
    return values.values() if isinstance(values, dict) else values


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def return_row(ret: Any, master_id: Optional[str] = None, now: Optional[datetime.datetime] = None, namespace: Optional[str] = None) -> dict:
    if not isinstance(ret, dict):
        raise RecordError(f"a return must be a mapping, got {type(ret).__name__}")
    retcode, success = _derive_outcome(ret)
    document = {k: v for k, v in ret.items() if k != _RETURN_VALUE_KEY}
    return {
        "jid": _checked_key("jid", ret.get("jid"), JID_LENGTH),
        "namespace": namespace_of(ret, namespace if namespace is not None else master_id),
        "minion_id": _checked_key("id", ret.get("id"), MINION_ID_LENGTH),
        "master_id": _label(master_id or ret.get("master_id"), MINION_ID_LENGTH),
        "fun": _fun_label(ret.get("fun")),
        "ret": ret.get(_RETURN_VALUE_KEY),
        "retcode": retcode,
        "success": success,
        "document": document,
        "returned_at": parse_stamp(ret.get("_stamp")) or parse_stamp(ret.get("ts")),
        "stored_at": now or utcnow(),
    }


#: Salt 3007+ marks the copy of an event a master-cluster peer forwarded with
#: the sending peer's id (salt/channel/server.py, extract_cluster_event); the
#: rest of the payload, ``_stamp`` included, is the original's.
CLUSTER_PEER_MARK = "__peer_id"


def content_key(tag: str, data: Any, namespace: Optional[str] = None) -> str:
    """Identity of an event: the same event redelivered, or captured by two masters of one cluster, gives the same key."""
    if isinstance(data, dict) and CLUSTER_PEER_MARK in data:
        data = {key: value for key, value in data.items() if key != CLUSTER_PEER_MARK}
    digest = hashlib.sha256()
    for part in (namespace or "", tag, jsonsafe.canonical_dumps(data)):
        digest.update(str(part).encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()


def event_row(
    tag: Any, data: Any, master_id: Optional[str] = None, now: Optional[datetime.datetime] = None, namespace: Optional[str] = None
) -> dict:
    if not isinstance(tag, str) or not tag:
        raise RecordError("an event needs a non-empty string tag")
    if not tag.isascii():
        try:
            tag.encode("utf-8")
        except UnicodeEncodeError:
            raise RecordError(f"tag is not valid UTF-8: {tag[:60]!r}") from None
    now = now or utcnow()
    stamp = parse_stamp(data.get("_stamp")) if isinstance(data, dict) else None
    namespace = _label(namespace if namespace is not None else master_id or "", NAMESPACE_LENGTH)
    return {
        "content_key": content_key(tag, data, namespace),
        "tag": tag,
        "data": data,
        "namespace": namespace,
        "master_id": _label(master_id, MINION_ID_LENGTH),
        "stamp": stamp or now,
        "stored_at": now,
    }


def is_minion_return(tag: str) -> bool:
    """``salt/job/<jid>/ret/<minion id>``: the bus copy of a minion's job return."""
    parts = tag.split("/", 4)
    return len(parts) == 5 and parts[0] == "salt" and parts[1] == "job" and parts[3] == "ret"


def without_return_value(data: Any) -> Any:
    """The bus copy of a return the job cache stores: its value lives in ``returns.ret`` only.

    With relay as the job cache the returner's record carries the value (in
    full: the bus copy may be trimmed), so the ``events`` row keeps the rest
    of the event (id, fun, retcode, success, _stamp, ...) and a 20 KB state
    return crosses the journal, the broker and the database once.
    """
    if isinstance(data, dict) and _RETURN_VALUE_KEY in data:
        return {key: value for key, value in data.items() if key != _RETURN_VALUE_KEY}
    return data


def _tag_parts(tag):
    return tag.split("/")


def rows_from_event(
    tag: str,
    data: Any,
    master_id: Optional[str] = None,
    now: Optional[datetime.datetime] = None,
    jobs_from_bus: bool = True,
    namespace: Optional[str] = None,
) -> Rows:
    """The :class:`Rows` one journaled event yields.

    Every kept bus event goes to ``events``; job publishes also make a
    ``jobs`` row, minion and runner returns a ``returns`` row shaped like the
    one the job cache writes for the same return, so both collapse into one
    row. ``jobs_from_bus=False`` (the master's job cache is relay, so its own
    records carry every job and every return) skips the job row of a
    ``salt/job/<jid>/new`` and the return row of a minion return's bus copy:
    each is written once, from the job cache, in the namespace its load
    names, and a return event a minion forged on the bus never becomes a job
    result. ``namespace`` is the capturing master's (default: ``master_id``).
    """
    now = now or utcnow()
    namespace = namespace if namespace is not None else master_id or ""
    if tag.startswith(RESERVED_TAG_PREFIX):
        return _own_record_rows(tag, data, master_id, namespace, now)
    jobs, returns = [], []
    parts = _tag_parts(tag)
    if len(parts) >= 4 and parts[0] == "salt" and isinstance(data, dict):
        kind, jid, action = parts[1], parts[2], parts[3]
        if kind == "job" and action == "new" and jobs_from_bus:
            jobs.append(job_row(jid, data, data.get("minions"), master_id, now, namespace))
        elif kind == "job" and action == "ret" and len(parts) >= 5 and jobs_from_bus:
            returns.append(return_row(data, master_id, now, namespace))
        elif kind == "run" and action == "ret" and master_id:
            # Shaped as Salt's store_job writes a finished runner job to the job
            # cache (salt/utils/job.py), so either copy makes the same rows. No
            # row at salt/run/*/new: the job cache has none until the runner ends.
            runner_load = {"id": master_id, "tgt": master_id, "jid": jid, "return": data, "fun": data.get("fun"), "user": data.get("user")}
            jobs.append(job_row(jid, runner_load, None, master_id, now, namespace))
            returns.append(return_row(runner_load, master_id, now, namespace))
    return Rows(jobs, returns, [event_row(tag, data, master_id, now, namespace)])


def _own_record_rows(tag, data, master_id, namespace, now):
    if not isinstance(data, dict):
        raise RecordError(f"{tag} record must be a mapping, got {type(data).__name__}")
    if tag == JOB_CACHE_RETURN_TAG:
        return Rows([], [], [], [return_row(data, master_id, now, namespace)])
    if tag == JOB_CACHE_LOAD_TAG:
        row = job_row(data.get("jid"), data.get("load"), data.get("minions"), master_id, now, namespace)
        if data.get("publish") and row["namespace"] == namespace:
            # The publish-time save_load: the job's record. A job that came down
            # from a master-of-masters keeps the record that master published.
            return Rows([], [], [], (), [row])
        return Rows([row], [], [])
    if tag == JOB_CACHE_MINIONS_TAG:
        # save_minions (a syndic's minions of a job): one job_minions row per
        # minion, unioned with the job's own list when it is read. No job row:
        # as in local_cache, a jid this master never saved a load for (a job a
        # syndic's own master published) is not one of this master's jobs.
        jid = _checked_key("jid", data.get("jid"), JID_LENGTH)
        job_namespace = namespace_of(None, namespace if namespace is not None else master_id)
        syndic = _label(data.get("syndic_id"), MINION_ID_LENGTH)
        minions = [
            {
                "jid": jid,
                "namespace": job_namespace,
                "minion_id": _checked_key("minion id", minion, MINION_ID_LENGTH),
                "syndic_id": syndic,
                "stored_at": now,
            }
            for minion in data.get("minions") or ()
        ]
        return Rows([], [], [], job_minions=minions)
    if tag == ENGINE_REPORT_TAG:
        return Rows([], [], [], engines=[engine_row(data, master_id, namespace, now)])
    raise RecordError(f"unknown salt-relay record {tag!r}")


def engine_row(report: dict, master_id: Optional[str], namespace: str, now: datetime.datetime) -> dict:
    """The ``relay_engines`` row of an engine's periodic report (:data:`ENGINE_REPORT_TAG`)."""
    return {
        "master_id": _checked_key("master id", master_id, MINION_ID_LENGTH),
        "namespace": _label(namespace, NAMESPACE_LENGTH),
        "mode": _label(report.get("mode") or "unknown", 32),
        "host": _label(report.get("host"), 255),
        "version": _label(report.get("version"), 64),
        "stats": report.get("stats"),
        "reported_at": parse_stamp(report.get("reported_at")) or now,
    }
