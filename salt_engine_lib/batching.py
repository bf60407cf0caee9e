"""Size/age batching, pure: the caller feeds items and asks what is due."""

from __future__ import annotations

import time
from typing import Any, Callable, Optional


class Batcher:
    def __init__(self, max_items: int, max_wait: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_items = max_items
        self.max_wait = max_wait
        self._clock = clock
        self._items = []
        self._first_at = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Any) -> None:
        if not self._items:
            self._first_at = self._clock()
        self._items.append(item)

    def is_due(self) -> bool:
        if not self._items:
            return False
        return len(self._items) >= self.max_items or self._clock() - self._first_at >= self.max_wait

    def seconds_until_due(self) -> Optional[float]:
        """How long the caller may wait for more items (None: nothing pending)."""
        if not self._items:
            return None
        return max(0.0, self.max_wait - (self._clock() - self._first_at))

    def take(self) -> list:
        items, self._items, self._first_at = self._items, [], None
        return items
