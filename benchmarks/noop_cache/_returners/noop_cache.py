"""A job cache that stores nothing: the ceiling of a master's return path.

Used by ``benchmarks/headline.py`` as ``master_job_cache: noop_cache`` (the
master finds it through ``returner_dirs``). Every job-cache function Salt
calls exists, so nothing raises, and does no I/O: what the master spends per
return with it is Salt's own cost (request decryption, token check, event
fire, loader lookups), the floor every real job cache adds to. The one
exception, ``get_load``, is off the return path: see there. The signatures
are Salt's job-cache interface: the arguments are taken and ignored.
"""

__virtualname__ = "noop_cache"


def __virtual__():
    return __virtualname__


def prep_jid(nocache=False, passed_jid=None):
    if passed_jid is not None:
        return passed_jid
    import salt.utils.jid

    return salt.utils.jid.gen_jid(__opts__)


def save_load(jid, load, minions=None):
    return None


def save_minions(jid, minions, syndic_id=None):
    return None


def returner(ret):
    return None


def event_return(events):
    return None


def update_endtime(jid, time):
    return None


def clean_old_jobs():
    return None


def get_load(jid):
    # Not on the return path (store_job never reads it for this cache). A non-empty
    # answer lets LocalClient wait for returns, so the benchmark's test.ping works.
    return {"jid": jid}


def get_jid(jid):
    return {}


def get_fun(fun):
    return {}


def get_jids():
    return {}


def get_jids_filter(count, filter_find_job=True):
    return []


def get_minions():
    return []


def get_endtime(jid):
    return False
