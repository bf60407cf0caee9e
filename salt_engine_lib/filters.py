"""Which bus events are worth storing. Pure: no I/O, injectable clock.

Order of the rules (first match decides): malformed -> reserved tag ->
excluded tag -> excluded function -> not included -> repeated within the
dedup window. Reserved tags (``salt-relay/*``) mark salt-relay's
own records in the journal; from the bus they would be forgeries.
Every drop is counted by reason in :attr:`EventFilter.dropped`.
"""

from __future__ import annotations

import collections
import fnmatch
import hashlib
import re
import time
from typing import TYPE_CHECKING, Any, Callable

from salt_engine_lib import jsonsafe
from salt_engine_lib.records import RESERVED_TAG_PREFIX, is_minion_return

if TYPE_CHECKING:
    from salt_engine_lib.config import RelayConfig

# Tags that carry a job function in their data.
_JOB_TAG = re.compile(r"^salt/(job|run)/[^/]+/(new|ret)(/|$)")


def _compile_globs(globs):
    if not globs:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(glob)})" for glob in globs))


class EventFilter:
    def __init__(self, config: RelayConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._include = _compile_globs(config.include_tags)
        self._exclude = _compile_globs(config.exclude_tags)
        self._exclude_functions = _compile_globs(config.exclude_functions)
        self._window = config.dedup_window
        self._clock = clock
        self._recent = collections.OrderedDict()  # identity -> first seen
        self.dropped = collections.Counter()
        self.accepted = 0

    def accept(self, tag: Any, data: Any) -> bool:
        reason = self._drop_reason(tag, data)
        if reason is None:
            self.accepted += 1
            return True
        self.dropped[reason] += 1
        return False

    def _drop_reason(self, tag, data):
        if not isinstance(tag, str) or not tag or not isinstance(data, dict):
            return "malformed"
        if tag.startswith(RESERVED_TAG_PREFIX):
            return "reserved_tag"
        if self._exclude is not None and self._exclude.match(tag):
            return "excluded_tag"
        if self._exclude_functions is not None and _JOB_TAG.match(tag):
            fun = data.get("fun")
            funs = fun if isinstance(fun, (list, tuple)) else [fun]
            if any(isinstance(f, str) and self._exclude_functions.match(f) for f in funs):
                return "excluded_function"
        if self._include is not None and not self._include.match(tag):
            return "not_included"
        if self._seen_recently(tag, data):
            return "duplicate"
        return None

    def _seen_recently(self, tag, data):
        now = self._clock()
        while self._recent:
            oldest, seen_at = next(iter(self._recent.items()))
            if now - seen_at < self._window:
                break
            del self._recent[oldest]
        if is_minion_return(tag):
            # Identified by its tag (jid and minion id): a minion retry of
            # the same return is a repeat whatever its timestamp.
            identity = tag
        else:
            # A digest, not the text: the window may hold thousands of big events.
            body = jsonsafe.canonical_dumps({k: v for k, v in data.items() if k != "_stamp"})
            identity = hashlib.blake2b(f"{tag}\0{body}".encode("utf-8", "surrogatepass"), digest_size=16).digest()
        if identity in self._recent:
            return True
        self._recent[identity] = now
        return False
