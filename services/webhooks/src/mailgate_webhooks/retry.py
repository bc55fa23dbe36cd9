"""When to try a webhook again, and when to back off an endpoint as a whole.

Retry schedule (defaults; ``MAILGATE_WEBHOOK_RETRY_BASE``, ``_RETRY_MAX``,
``_RETRY_WINDOW``):

* after failed attempt *n* wait ``min(3600, 5 * 2**(n-1))`` seconds, ±20 %
  jitter: 5 s, 10 s, 20 s, 40 s, 80 s, 160 s, 320 s, 640 s, 1280 s, 2560 s,
  then every hour;
* a delivery is retried until 72 hours (259 200 s) have passed since its
  first attempt (or since its last replay) — about 80 attempts — and is then
  marked ``failed``.  The number of attempts follows from the time budget,
  not from a fixed count, so a subscriber down for up to three days loses
  nothing.

Endpoint backoff (``MAILGATE_WEBHOOK_FAILING_THRESHOLD``, ``_FAILING_AFTER``):
an endpoint whose last 5 attempts all failed, the first of them at least 10
minutes ago, is marked *failing*.  Its deliveries then wait behind
``backoff_until`` (same exponential schedule, counted in failures beyond the
threshold); when it expires a single probe delivery is sent.  A successful
probe clears the failing mark and releases the waiting deliveries at the
per-endpoint concurrency limit, so a returning endpoint is not stampeded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from mailgate_common.backoff import backoff_delay


def next_attempt_at(
    attempt: int, retry_from: datetime, now: datetime, base: float, cap: float, window: float
) -> datetime | None:
    """When to retry after failed attempt ``attempt`` (1-based); None once the window is spent."""
    due = now + timedelta(seconds=backoff_delay(attempt, base, cap))
    if due - retry_from > timedelta(seconds=window):
        return None
    return due


@dataclass(frozen=True)
class EndpointHealth:
    consecutive_failures: int
    first_failure_at: datetime | None
    failing_since: datetime | None
    backoff_until: datetime | None


def after_failure(
    health: EndpointHealth,
    now: datetime,
    threshold: int,
    failing_after: float,
    base: float,
    cap: float,
) -> EndpointHealth:
    """The endpoint's health after one more failed attempt."""
    failures = health.consecutive_failures + 1
    first = health.first_failure_at or now
    failing = health.failing_since is not None or (
        failures >= threshold and (now - first).total_seconds() >= failing_after
    )
    if not failing:
        return EndpointHealth(failures, first, None, None)
    beyond = max(1, failures - threshold + 1)
    until = now + timedelta(seconds=backoff_delay(beyond, base, cap))
    return EndpointHealth(failures, first, health.failing_since or now, until)


HEALTHY = EndpointHealth(0, None, None, None)
