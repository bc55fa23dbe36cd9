"""Per-minute message limits at the MX door: token buckets held in this process.

Each replica counts on its own (no shared store): behind N replicas a client gets
up to N times the limit, which is what a per-replica limit is for here - slowing a
flood down, not billing.  Buckets for keys not seen for a while are dropped, so a
spray of source addresses costs bounded memory.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

MAX_KEYS = 100_000


class RateLimit:
    """``per_minute`` messages per key, in bursts of up to ``per_minute``; 0 means unlimited."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_KEYS) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.max_keys = max_keys
        # key -> (tokens, when they were counted); most recently used last.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> bool:
        """Count one message for ``key``; False when the key is over its limit (nothing counted)."""
        if self.per_minute <= 0:
            return True
        now = self.clock()
        tokens, then = self._buckets.pop(key, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - then) * self.per_minute / 60.0)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may send one more message."""
        if self.per_minute <= 0 or key not in self._buckets:
            return 0.0
        tokens, then = self._buckets[key]
        tokens += (self.clock() - then) * self.per_minute / 60.0
        return max(0.0, (1.0 - tokens) * 60.0 / self.per_minute)
