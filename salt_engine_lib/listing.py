"""A job's entry in the full job listing (``get_jids``), rendered once, when the job is written.

``salt-run jobs.list_jobs``, salt-api ``/jobs`` and SaltGUI's Jobs page all
call ``get_jids()``: every job, formatted by Salt's
``salt.utils.jid.format_jid_instance`` (Function, Arguments, Target,
Target-type, User, StartTime, Metadata). Decoding each job's whole publish
load and formatting it in Python at every call cost about 22 us a job, two
seconds at 100,000 jobs. So the writer renders the entry with Salt's own
formatter and the ``jobs.listing`` column keeps it as the text of one JSON
object member, ``"<jid>":{...}``: a page of the listing is then one string
aggregation in the database, decoded by one ``json.loads`` straight into
the dict Salt expects (:func:`salt_engine_lib.store.queries.job_listing`).

The entry is what the writer's Salt renders: a job written under one Salt
release keeps that release's formatting after an upgrade. ``EndTime`` is
not part of it (it changes after the job is written); the read adds it.
"""

from __future__ import annotations

import json
from typing import Any

from salt_engine_lib import jsonsafe


def render(jid: str, load: Any) -> str:
    """``"<jid>":{...}``: the job's get_jids entry as a JSON object member."""
    import salt.utils.jid  # here: importing this module does not import Salt

    return jsonsafe.dumps(str(jid)) + ":" + jsonsafe.dumps(salt.utils.jid.format_jid_instance(str(jid), dict(load or {})))


def parse(members: str) -> dict[str, dict]:
    """``{jid: entry}`` of one or more rendered members joined by commas."""
    return json.loads("{" + members + "}")
