"""Retry delays: exponential, capped, with jitter so retries do not arrive in herds."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base: float, cap: float, jitter: float = 0.2) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    delay: float = min(cap, base * (2.0 ** max(0, attempt - 1)))
    factor: float = random.uniform(1 - jitter, 1 + jitter)
    return delay * factor
