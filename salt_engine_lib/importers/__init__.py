"""``salt-relay import``: an existing job cache into the relay store.

:mod:`.common` holds what every source shares (batches, the counting write,
progress, the refused file, the summary); each source has its own module:
:mod:`.local_cache` (Salt's default job cache) and :mod:`.saltext_mysql`
(the ``mysql`` returner's database). Every import is idempotent: running it
again, or after a kill, adds only what is missing.
"""
