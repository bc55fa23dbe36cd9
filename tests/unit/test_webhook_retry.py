"""The documented webhook retry schedule and endpoint backoff (docs/webhooks.md)."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta

from standardwebhooks.webhooks import Webhook

from mailgate_common.settings import Settings
from mailgate_common.webhook_signing import signed_headers
from mailgate_webhooks import retry

T0 = datetime(2026, 1, 5, tzinfo=UTC)
S = Settings()


def schedule(now: datetime = T0) -> list[datetime]:
    """Attempt times when every attempt fails at once."""
    times = [now]
    while True:
        due = retry.next_attempt_at(len(times), T0, times[-1], S.webhook_retry_base,
                                    S.webhook_retry_max, S.webhook_retry_window)
        if due is None:
            return times
        times.append(due)


def test_retries_last_at_least_three_days_with_the_default_settings() -> None:
    times = schedule()
    span = times[-1] - T0
    # The last retry falls within one (jittered) hourly gap of the window's end.
    assert timedelta(hours=72) - timedelta(seconds=3600 * 1.2) <= span <= timedelta(hours=72)
    assert 70 <= len(times) <= 90  # attempts follow from the time budget
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert 4 <= gaps[0] <= 6 and 8 <= gaps[1] <= 12  # 5 s, 10 s, ... with ±20 % jitter
    assert max(gaps) <= 3600 * 1.2
    assert all(g >= 3600 * 0.8 for g in gaps[12:])  # hourly once capped


def test_no_retry_after_the_window() -> None:
    late = T0 + timedelta(seconds=S.webhook_retry_window - 1)
    assert retry.next_attempt_at(50, T0, late, 5, 3600, S.webhook_retry_window) is None
    assert retry.next_attempt_at(1, late, late, 5, 3600, S.webhook_retry_window) is not None  # after a replay


def fail(health: retry.EndpointHealth, at: datetime) -> retry.EndpointHealth:
    return retry.after_failure(health, at, threshold=5, failing_after=600, base=5, cap=3600)


def test_an_endpoint_is_backed_off_after_five_failures_over_ten_minutes() -> None:
    health = retry.HEALTHY
    for i in range(5):
        health = fail(health, T0 + timedelta(seconds=i))
    assert health.consecutive_failures == 5 and health.failing_since is None  # a quick burst only

    health = fail(health, T0 + timedelta(minutes=10))
    assert health.failing_since == T0 + timedelta(minutes=10)
    assert health.backoff_until is not None and health.backoff_until > health.failing_since
    first_backoff = health.backoff_until - health.failing_since

    # A failed probe backs off longer (exponentially), and it stays failing.
    probe_at = health.backoff_until
    health = fail(health, probe_at)
    assert health.failing_since == T0 + timedelta(minutes=10)
    assert health.backoff_until is not None
    assert health.backoff_until - probe_at > first_backoff * 1.2


def test_a_single_old_failure_does_not_mark_failing() -> None:
    health = fail(retry.HEALTHY, T0)
    health = fail(health, T0 + timedelta(hours=1))
    assert health.failing_since is None and health.first_failure_at == T0


def test_rotation_overlap_signs_with_both_secrets() -> None:
    old = "whsec_" + "A" * 43 + "="
    new = "whsec_" + "B" * 43 + "="
    body = b'{"event":"messageSent"}'
    headers = signed_headers(new, "evt-1", int(time.time()), body, previous=old)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(body, headers)
    Webhook(old).verify(body, headers)
