"""Salt's job-cache API on the salt-relay store.

``_returners/relay.py`` passes its dunders in; nothing here reads them
directly. Shapes follow Salt's ``local_cache`` so every ``jobs.*`` runner and
``ret.*`` function works unchanged (see the reference notes on Salt's interfaces, section 3).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Mapping, Optional, Union

from salt_engine_lib import config as relay_config
from salt_engine_lib import handoff, ingest, jids, outbox, records
from salt_engine_lib.errors import RecordError, StoreError
from salt_engine_lib.store import Store, queries

log = logging.getLogger(__name__)

FIND_JOB = "saltutil.find_job"

_stores = {}
_stores_lock = threading.Lock()


# Resolving the relay block reads ~20 options through config.option; cache it
# per process so the per-return hot path does not pay that each call. Short
# enough that a pillar refresh on a long-lived minion is seen.
CONFIG_CACHE_SECONDS = 30.0
_settings_cache = {}


def resolve_settings(opts: dict, salt_functions: Optional[Mapping[str, Any]] = None, ret: Any = None) -> relay_config.Settings:
    """The :class:`config.Settings` of this call (cached per process for :data:`CONFIG_CACHE_SECONDS`)."""
    ret_options = (ret.get("ret_config"), repr(ret.get("ret_kwargs"))) if isinstance(ret, dict) else None
    # Without __salt__ Salt falls back to flat opts keys only: a different answer.
    key = (id(opts), bool(salt_functions), ret_options)
    cached = _settings_cache.get(key)
    # The entry holds opts itself, so its id cannot be reused by another object.
    if cached is not None and cached[0] is opts and time.monotonic() - cached[1] < CONFIG_CACHE_SECONDS:
        return cached[2]
    # A return that is not a mapping has no ret_config (returner() refuses it, with the reason).
    settings = relay_config.resolve(_relay_config(opts, salt_functions, ret if isinstance(ret, dict) else None), opts)
    _settings_cache[key] = (opts, time.monotonic(), settings)
    return settings


def _relay_config(opts, salt_functions=None, ret=None):
    """The relay config for this call.

    On a minion (``ret.*``, ``--return``) Salt's ``get_returner_options``
    reads the nested ``relay:`` block or flat ``relay.<key>`` options from
    config *or pillar*, honours ``--return_config`` profiles and lets
    ``--return_kwargs`` override. On the master (no pillar there) it reads
    the master config the same way.
    """
    import salt.returners  # here: Salt's loader has imported it already when it calls us

    found = salt.returners.get_returner_options(
        "relay",
        ret,
        {key: key for key in relay_config.ACCEPTED_KEYS},
        __salt__=salt_functions or {},
        __opts__=opts,
    )
    found = {key: value for key, value in found.items() if value not in (None, "")}
    if opts.get("__role") == "master" and not found.get("database_url"):
        # The relay block may live in the master's pillar, which only the engine reads.
        found.update(handoff.read(opts) or {})
    return relay_config.load({key: value for key, value in found.items() if value is not None})


def store_for(settings: relay_config.Settings) -> Store:
    """The process's :class:`Store` for these settings (cached by URL). Creating it opens nothing."""
    config = settings.config
    key = (os.getpid(), settings.database_url, repr(config.database_ssl), config.auto_upgrade, config.legacy_views)
    store = _stores.get(key)
    if store is None:
        with _stores_lock:
            store = _stores.setdefault(key, Store.from_settings(settings))
    return store


# -- writes -----------------------------------------------------------------


def prep_jid(opts: dict, nocache: bool = False, passed_jid: Optional[str] = None) -> str:
    import salt.utils.jid  # here: Salt's loader has imported it already when it calls us

    return passed_jid if passed_jid is not None else salt.utils.jid.gen_jid(opts)


def _on_master(opts):
    return opts.get("__role") == "master"


def _event(settings, tag, data, jobs_from_bus=True):
    """An :class:`ingest.Event` this daemon stores itself."""
    return ingest.Event(tag, data, settings.master_id, jobs_from_bus, namespace=settings.namespace)


def _store_now(store, events):
    """Store ``events`` at once (no engine to carry them); what cannot be stored raises to Salt."""
    ingest.store_events(store, events, ingest.raise_refusal)


def save_load(
    store: Store,
    settings: relay_config.Settings,
    jid: str,
    load: dict,
    minions: Optional[list] = None,
    opts: Optional[dict] = None,
) -> None:
    """The publish load is the job's record; later per-return loads never replace it.

    Synchronous: the ``salt`` CLI reads it back right after publishing. If the
    database is down on a master, the load is kept locally (``get_load``
    reads it) and stored when the database is back, so ``salt`` still works.
    """
    master = settings.master_id
    if opts is not None and _on_master(opts) and minions is None and "return" in load:
        # Salt repeats save_load with the return load for every minion return,
        # on the hot path; it only matters if the publish load is missing, so
        # once per job and process is enough (the row is insert-if-absent).
        box = outbox.for_opts(opts)
        if box.knows_job(jid):
            return
        if box.engine_alive():
            box.put_load(jid, load, master)
            return
    # The publish-time load (no "return" in it) is the job's record: it replaces
    # a row the engine may have written from the bus event first.
    publish = "return" not in load
    if publish and opts is not None and _on_master(opts) and opts.get("master_id") and not records.published_by(load):
        # What this master published carried its Salt master_id (the master
        # adds it to the payload, not to the load it saves; a job that came down
        # from a master-of-masters names that one instead). Kept in the load,
        # it reaches a master-of-masters with the load a syndic forwards, so
        # the top files this master's job under this master's namespace, where
        # the syndic's forwarded returns (which carry it) already go.
        load = dict(load, master_id=opts["master_id"])
    record = {"jid": jid, "load": load, "minions": minions, "publish": publish}
    try:
        _store_now(store, [_event(settings, records.JOB_CACHE_LOAD_TAG, record)])
    except StoreError as err:
        if opts is None or not _on_master(opts):
            raise
        log.warning("relay: job %s load kept locally until the database is back: %s", jid, err)
        outbox.for_opts(opts).keep_load(jid, load, minions, master)
        return
    if opts is not None and _on_master(opts):
        outbox.for_opts(opts).note_job(jid)


def save_minions(store: Store, settings: relay_config.Settings, jid: str, minions: Optional[list], syndic_id: Optional[str] = None) -> None:
    """The minions a syndic reports for a job, added to its minion list (several syndics: the union).

    A master-of-masters calls it for every syndic, after save_load; the job
    row is created if the load has not arrived yet.
    """
    record = {"jid": jid, "minions": list(minions or ()), "syndic_id": syndic_id}
    _store_now(store, [_event(settings, records.JOB_CACHE_MINIONS_TAG, record)])


def returner(store: Store, settings: relay_config.Settings, ret: Any, opts: dict) -> None:
    if not isinstance(ret, dict):
        raise RecordError(f"a return must be a mapping, got {type(ret).__name__}")
    if ret.get("jid") == "req":
        # salt-call without a master job: allocate one, as local_cache does.
        ret = dict(ret, jid=prep_jid(opts, nocache=ret.get("nocache", False)))
    if _on_master(opts):
        box = outbox.for_opts(opts)
        if box.engine_alive():
            # The master's hot path: one append, the engine stores it in a batch.
            box.put_return(ret, settings.master_id)
            return
    _store_now(store, [_event(settings, records.JOB_CACHE_RETURN_TAG, ret)])


def event_return(store: Store, settings: relay_config.Settings, events: list[dict], opts: Optional[dict] = None) -> None:
    """Never loses a batch: Salt's EventReturn drops it if this raises."""
    if not events:
        return  # Salt calls this with [] for every filtered event
    master = settings.master_id
    if opts is not None and _on_master(opts):
        box = outbox.for_opts(opts)
        if box.engine_alive():
            box.put_events(events, master)
            return
        try:
            _store_events(store, settings, events)
        except Exception as err:  # whatever failed, the batch is kept
            log.error(
                "relay: %d events kept in the outbox until the relay engine stores them: %s: %s", len(events), type(err).__name__, err
            )
            box.put_events(events, master)
        return
    _store_events(store, settings, events)


def _store_events(store, settings, events):
    """event_return's events, as the engine would store them; a malformed one is logged and skipped."""

    def skipped(event, reason, error):
        if isinstance(error, StoreError):
            raise error  # the database refused it: the caller keeps the batch
        log.error("relay event_return: skipping malformed event %r: %s", str(event.tag)[:200], reason)

    relay_events = []
    for event in events:
        try:
            relay_events.append(_event(settings, event["tag"], event.get("data"), not settings.returns_from_job_cache))
        except (KeyError, TypeError, AttributeError) as err:
            log.error("relay event_return: skipping malformed event: %s: %s", type(err).__name__, err)
    ingest.store_events(store, relay_events, skipped)


def update_endtime(store: Store, settings: relay_config.Settings, jid: str, time: Any) -> None:
    import salt.utils.jid  # here: Salt's loader has imported it already when it calls us

    ended = jids.parse_salt_time(time) or jids.jid_time(salt.utils.jid.gen_jid({}))
    store.write(queries.set_endtime, jid, ended, settings.namespace)


def clean_old_jobs(store: Store, settings: relay_config.Settings) -> dict[str, int]:
    """Retention on the rows this master owns (its namespace), or on every row with ``read_scope: all``."""
    removed = store.purge(
        settings.keep_jobs_seconds, settings.keep_events_seconds, settings.config.cleanup_chunk_size, queries.Scope.owned_by(settings)
    )
    if any(removed.values()):
        log.info("relay: removed old rows %s", removed)
    return removed


# -- reads --------------------------------------------------------------------
# Each read sees the rows of relay:read_scope (queries.Scope).


def get_load(store: Store, settings: relay_config.Settings, jid: str, opts: Optional[dict] = None) -> dict:
    try:
        load = store.read(queries.get_load, jid, queries.Scope.of(settings))
    except StoreError:
        kept = outbox.pending_load(opts, jid) if opts is not None else None
        if kept is None:
            raise
        return kept
    if not load and opts is not None:
        return outbox.pending_load(opts, jid) or {}
    return load


def get_jid(store: Store, settings: relay_config.Settings, jid: str) -> dict:
    return store.read(queries.get_jid, jid, queries.Scope.of(settings))


def get_fun(store: Store, settings: relay_config.Settings, fun: str) -> dict:
    return store.read(queries.latest_return_of_fun, fun, queries.Scope.of(settings))


def get_minions(store: Store, settings: relay_config.Settings) -> list[str]:
    return store.read(queries.minion_ids, queries.Scope.of(settings))


def get_jids(store: Store, settings: relay_config.Settings) -> dict[str, dict]:
    return store.read(queries.job_listing, queries.Scope.of(settings))


def get_jids_filter(store: Store, settings: relay_config.Settings, count: int, filter_find_job: bool = True) -> list[dict]:
    """The ``count`` newest jobs, oldest first, as ``format_jid_instance_ext`` (the listing entry and ``JID``)."""
    exclude = (FIND_JOB,) if filter_find_job else ()
    newest = store.read(queries.newest_listing, count, exclude, queries.Scope.of(settings))
    return [{**entry, "JID": jid} for jid, entry in reversed(newest)]


def get_endtime(store: Store, settings: relay_config.Settings, jid: str) -> Union[str, bool]:
    ended = store.read(queries.get_endtime, jid, queries.Scope.of(settings))
    return jids.format_salt_time(ended) if ended else False
