"""A job's entry in the full job listing (``get_jids``), rendered once, when the job is written.

``salt-run jobs.list_jobs``, salt-api ``/jobs`` and SaltGUI's Jobs page all
call ``get_jids()``: every job, formatted by Salt's
``salt.utils.jid.format_jid_instance`` (Function, Arguments, Target,
Target-type, User, StartTime, Metadata). Decoding each job's whole publish
load and formatting it in Python at every call cost about 22 us a job, two
seconds at 100,000 jobs. So the writer renders the entry with Salt's own
formatter and keeps it as the text of one JSON object member,
``"<jid>":{...}``, in a narrow table of its own (``job_listings``: a page
reads only the listing, not the loads beside it): a page of the listing is
then one string aggregation in the database, decoded by one ``json.loads``
straight into the dict Salt expects
(:func:`salt_engine_lib.store.queries.job_listing`).

The member is stored in two parts, concatenated by the read: its
:func:`head` (everything but the closing brace), written with the job, and
its :func:`tail`, ``}`` or ``,"EndTime":"..."}`` once the job's end time is
set (``job_listings.tail``, NULL for ``}``). Splicing the end time into a
closed member cut it first, which cost the database more than the whole
aggregation.

The entry is what the writer's Salt renders: a job written under one Salt
release keeps that release's formatting after an upgrade.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Optional

from salt_engine_lib import jids, jsonsafe

if TYPE_CHECKING:
    import datetime

#: The tail of a member whose job has no end time.
OPEN_TAIL = "}"


def head(jid: str, load: Any) -> str:
    """``"<jid>":{...`` without its closing brace: the job's get_jids entry as the start of a JSON object member."""
    import salt.utils.jid  # here: importing this module does not import Salt

    entry = jsonsafe.dumps(salt.utils.jid.format_jid_instance(str(jid), dict(load or {})))
    return jsonsafe.dumps(str(jid)) + ":" + entry[:-1]


def tail(ended_at: Optional[datetime.datetime]) -> Optional[str]:
    """What closes the member: None (read as :data:`OPEN_TAIL`) or the job's ``EndTime`` and the brace."""
    if ended_at is None:
        return None
    return ',"EndTime":' + json.dumps(jids.format_salt_time(ended_at)) + OPEN_TAIL


def member(head_text: str, tail_text: Optional[str]) -> str:
    return head_text + (tail_text or OPEN_TAIL)


def parse(members: str) -> dict[str, dict]:
    """``{jid: entry}`` of one or more members joined by commas."""
    return json.loads("{" + members + "}")
