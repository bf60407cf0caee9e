"""``salt-relay import local-cache``: Salt's default job cache (``<cachedir>/jobs``) into the store.

Jobs are found by walking the jobs dir (``<2 hex>/<rest>/jid``, streamed with
``os.scandir``) and each is read as Salt's own ``local_cache`` returner
answers it, loaded through Salt's loader: ``get_load`` (the load and its
``Minions``), ``get_jid`` (each minion's return, retcode, success, out) and
``get_endtime``. The rows are the ones the relay returner would have
written for the same job, in the namespace of the master whose config is
read (``-c``), so relay then answers Salt's job-cache API for those jobs as
local_cache did.

What local_cache does not keep per return, the rows take from the job's
load: ``fun`` and ``fun_args``. A return has no time of its own there
(``returned_at`` stays empty).

Before local_cache reads a job, its pickled files are read once here, since
local_cache handles a corrupt one badly: ``get_load`` retries for a second
and raises, and ``get_jid`` loops forever on an unreadable ``return.p`` or
``out.p``. A job whose load is unreadable is refused whole; an unreadable
return is refused alone, and the job's other returns are read the way
``get_jid`` reads them.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Iterator, Optional

from salt_engine_lib import jids, records
from salt_engine_lib.errors import ImportSourceError, RecordError
from salt_engine_lib.importers.common import Item, Options, Refusal, Tally, Unit, importing_master, run_source, short_reason
from salt_engine_lib.store.writes import Rows

if TYPE_CHECKING:
    from salt_engine_lib import config as relay_config

# local_cache's file names (salt/returners/local_cache.py).
JID_FILE = "jid"
LOAD_FILE = ".load.p"
RETURN_FILE = "return.p"
OUT_FILE = "out.p"
# Its endtime file holds jids.SALT_TIME_FORMAT text.


def jobs_dir_of(opts: dict) -> str:
    """Where local_cache keeps jobs for these master opts."""
    return os.path.join(opts["cachedir"], "jobs")


def job_dirs(jobs_dir: str) -> Iterator[str]:
    """Every job dir (``<jobs>/<2 hex>/<rest>``), streamed: nothing is listed whole into memory."""
    with os.scandir(jobs_dir) as tops:
        for top in tops:
            if not top.is_dir(follow_symlinks=False):
                continue
            with os.scandir(top.path) as jobs:
                for job in jobs:
                    if job.is_dir(follow_symlinks=False):
                        yield job.path


def count_job_dirs(jobs_dir: str) -> int:
    return sum(1 for _path in job_dirs(jobs_dir))


@contextlib.contextmanager
def local_cache_functions(opts: dict, jobs_dir: str) -> Iterator[dict]:
    """Salt's ``local_cache`` returner through Salt's loader, reading ``jobs_dir``.

    local_cache reads ``<cachedir>/jobs``: for a jobs dir named otherwise, the
    cachedir is a temporary one holding a ``jobs`` link to it.
    """
    import salt.loader

    jobs_dir = os.path.abspath(jobs_dir)
    if not os.path.isdir(jobs_dir):
        raise ImportSourceError(f"no local_cache jobs dir at {jobs_dir}")
    scratch = None
    try:
        if os.path.basename(jobs_dir) == "jobs":
            cachedir = os.path.dirname(jobs_dir)
        else:
            scratch = cachedir = tempfile.mkdtemp(prefix="salt-relay-import-")
            os.symlink(jobs_dir, os.path.join(scratch, "jobs"))
        returners = salt.loader.returners(dict(opts, cachedir=cachedir), {})
        if "local_cache.get_load" not in returners:
            raise ImportSourceError("Salt's loader has no local_cache returner")
        yield {name: returners[f"local_cache.{name}"] for name in ("get_load", "get_jid", "get_endtime")}
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _unreadable(path: str) -> Optional[str]:
    """Why Salt cannot unpickle ``path`` (its payload format), or None when it can."""
    import salt.payload

    try:
        with open(path, "rb") as handle:
            salt.payload.load(handle)
    except Exception as err:  # whatever the unpacker raises on a truncated or foreign file
        return f"{type(err).__name__}: {err}"
    return None


def _read_jid(job_dir):
    try:
        with open(os.path.join(job_dir, JID_FILE), encoding="utf-8") as handle:
            return handle.read().strip(), None
    except (OSError, UnicodeDecodeError) as err:
        return None, f"{type(err).__name__}: {err}"


def _return_dirs(job_dir):
    with os.scandir(job_dir) as entries:
        for entry in entries:
            if not entry.name.startswith(".") and os.path.isfile(os.path.join(entry.path, RETURN_FILE)):
                yield entry.name, entry.path


def _returns_as_get_jid_reads_them(minion_dirs):
    """What local_cache's get_jid answers for these (readable) return dirs, read as it reads them."""
    import salt.payload

    answer = {}
    for minion, path in minion_dirs:
        with open(os.path.join(path, RETURN_FILE), "rb") as handle:
            data = salt.payload.load(handle)
        if not isinstance(data, dict) or "return" not in data:
            data = {"return": data}  # local_cache's old format: the return value alone
        out = os.path.join(path, OUT_FILE)
        if os.path.isfile(out):
            with open(out, "rb") as handle:
                data["out"] = salt.payload.load(handle)
        answer[minion] = data
    return answer


class JobReader:
    """The rows of one local_cache job dir, read through local_cache's functions."""

    def __init__(self, functions: dict, settings: relay_config.Settings, now: Optional[datetime.datetime] = None) -> None:
        self.functions = functions
        self.master_id = settings.master_id
        self.namespace = settings.namespace
        self.now = now

    def items(self, job_dir: str) -> Iterator[Item]:
        jid, error = _read_jid(job_dir)
        where = {"path": job_dir}
        if not jid:
            yield Refusal("entry", where, "no readable jid file", error or "empty jid file", steps=1)
            return
        key = {"jid": jid, **where}
        job, refusal = self._job(jid, job_dir, key)
        if refusal is not None:
            yield refusal
            # Its returns stay on disk, each named in the refused file: nothing goes unaccounted.
            for minion, _path in _return_dirs(job_dir):
                yield Refusal("return", {**key, "minion": minion}, "its job was refused", refusal.reason)
            return
        now = job["stored_at"]
        returns = []
        for item in self._returns(jid, job_dir, job["load"], key, now):
            if isinstance(item, Refusal):
                yield item
            else:
                returns.append(item)
        endtimes = []
        try:
            ended = self.functions["get_endtime"](jid)
        except Exception as err:  # an unreadable endtime file: the job is imported without its end time
            ended = None
            yield Refusal("endtime", key, "local_cache could not read the end time", f"{type(err).__name__}: {err}")
        if ended:
            ended_at = jids.parse_salt_time(ended)
            if ended_at is None:
                yield Refusal("endtime", key, "end time not in Salt's format", repr(ended), ended)
            else:
                endtimes.append((job["jid"], job["namespace"], ended_at))
        yield Unit("job", f"job {jid}", Rows([job], returns, []), endtimes, steps=1, data={**key, "load": job["load"]})

    def _job(self, jid, job_dir, key):
        """(the job's row, None) or (None, the Refusal of the whole job)."""
        load_path = os.path.join(job_dir, LOAD_FILE)
        if not os.path.isfile(load_path):
            # local_cache lists no such job (get_jids walks the loads), though get_jid would answer for it.
            return None, Refusal("job", key, "no .load.p", f"{load_path} is missing", steps=1)
        error = _unreadable(load_path)
        if error:
            return None, Refusal("job", key, "unreadable .load.p", error, steps=1)
        try:
            load = self.functions["get_load"](jid)
        except Exception as err:  # e.g. an unreadable .minions.p, which get_load does not catch
            return None, Refusal("job", key, "local_cache could not read the load", f"{type(err).__name__}: {err}", steps=1)
        if not load:
            # The jid file names a job whose directory (by hash_type) is not this one.
            return None, Refusal("job", key, "local_cache has no load for the jid of this dir", "check hash_type", steps=1)
        minions = load.pop("Minions", None) or None
        try:
            return records.job_row(jid, load, minions, self.master_id, self.now or jids.utcnow(), self.namespace), None
        except RecordError as err:
            return None, Refusal("job", key, short_reason(err), str(err), {"load": load, "minions": minions}, steps=1)

    def _returns(self, jid, job_dir, load, key, now):
        minion_dirs, broken = [], False
        for minion, path in _return_dirs(job_dir):
            error = _unreadable(os.path.join(path, RETURN_FILE))
            out = os.path.join(path, OUT_FILE)
            if error is None and os.path.isfile(out):
                error = _unreadable(out)
            if error:
                broken = True
                yield Refusal("return", {**key, "minion": minion}, "unreadable return.p or out.p", error)
            else:
                minion_dirs.append((minion, path))
        try:
            answer = _returns_as_get_jid_reads_them(minion_dirs) if broken else self.functions["get_jid"](jid)
        except Exception as err:  # e.g. permission denied, which get_jid raises
            yield Refusal("return", key, "local_cache could not read the returns", f"{type(err).__name__}: {err}")
            return
        published_by = records.published_by(load)
        for minion, entry in sorted(answer.items()):
            # The return document a minion sends, less what local_cache drops (fun, fun_args come from the load).
            document = {"id": minion, "jid": jid, "fun": load.get("fun"), "fun_args": load.get("arg"), **entry}
            if published_by:
                document["master_id"] = published_by  # files it with its job (records.namespace_of)
            try:
                yield records.return_row(document, self.master_id, now, self.namespace)
            except RecordError as err:
                yield Refusal("return", {**key, "minion": minion}, short_reason(err), str(err), document)


def items(functions: dict, jobs_dir: str, settings: relay_config.Settings) -> Iterator[Item]:
    """Every job of ``jobs_dir`` as :class:`Unit` and :class:`Refusal` items."""
    reader = JobReader(functions, settings)
    for job_dir in job_dirs(jobs_dir):
        yield from reader.items(job_dir)


def import_into(store, settings: relay_config.Settings, opts: dict, jobs_dir: Optional[str], options: Options) -> Tally:
    """Import every job of ``jobs_dir`` (default: ``<cachedir>/jobs`` of ``opts``) into ``store``."""
    importing_master(settings)
    jobs_dir = jobs_dir or jobs_dir_of(opts)
    with local_cache_functions(opts, jobs_dir) as functions:
        # A first walk counts the jobs for the ETA: directory entries only, no file is read.
        total = count_job_dirs(jobs_dir)
        return run_source(store, items(functions, jobs_dir, settings), "local-cache", total, "jobs", options)
