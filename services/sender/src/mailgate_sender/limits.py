"""Polite sending: per-account rate limits shared by all sender replicas, and
backing off an account whose server says "slow down".

Limits come from the account (``limits`` on ``POST /v1/account``) or, when it
sets none, from the published submission limits of well-known providers.
Counters live in PostgreSQL (``send_windows``) so several replicas together
respect one limit.  A message held by a limit is not an attempt and not a failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_sender.outcome import Outcome

WINDOWS: dict[str, tuple[str, int]] = {
    "perSecond": ("second", 1),
    "perMinute": ("minute", 60),
    "perHour": ("hour", 3600),
    "perDay": ("day", 86400),
}


@dataclass(frozen=True)
class Limits:
    rates: dict[str, int]  # window name ("minute") -> messages allowed in it
    connections: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Limits:
        data = data or {}
        rates = {WINDOWS[k][0]: int(v) for k, v in data.items() if k in WINDOWS and v}
        connections = data.get("connections")
        return cls(rates, int(connections) if connections else None)


# Published limits of big providers, used when an account sets none:
# Exchange Online: 30 messages/minute, 10,000 recipients/day, 3 concurrent connections;
# Google Workspace: 2,000 messages/day; Outlook.com: 300 messages/day;
# Amazon SES: the default production sending rate of 14 messages/second.
PROVIDER_DEFAULTS: tuple[tuple[re.Pattern[str], Limits], ...] = (
    (re.compile(r"(^|\.)office365\.com$"), Limits({"minute": 30, "day": 10000}, 3)),
    (re.compile(r"^smtp-mail\.outlook\.com$"), Limits({"minute": 30, "day": 300}, 3)),
    (re.compile(r"^smtp(-relay)?\.gmail\.com$"), Limits({"day": 2000}, 10)),
    (re.compile(r"^email-smtp\.[\w-]+\.amazonaws\.com$"), Limits({"second": 14})),
)


def effective_limits(explicit: dict[str, Any] | None, smtp_host: str) -> Limits:
    if explicit:
        return Limits.from_dict(explicit)
    host = smtp_host.lower().rstrip(".")
    for pattern, limits in PROVIDER_DEFAULTS:
        if pattern.search(host):
            return limits
    return Limits({})


_SLOW_DOWN = re.compile(r"rate|limit|too many|slow down|throttl|exceeded", re.I)


def is_slow_down(outcome: Outcome) -> bool:
    """421, or a 4.7.x reply about rates: the server wants fewer messages, not a retry of this one."""
    if outcome.kind != "temporary" or outcome.code is None:
        return False
    if outcome.code == 421:
        return True
    return bool(outcome.status and outcome.status.startswith("4.7.") and _SLOW_DOWN.search(outcome.response)
                and not re.search(r"greylist", outcome.response, re.I))


def throttle_delay(level: int, base: float = 30.0, cap: float = 900.0) -> float:
    """Seconds to leave an account alone after its server's n-th consecutive "slow down"."""
    return float(min(cap, base * 2 ** max(0, level - 1)))


ACQUIRE_SQL = text(
    """
    INSERT INTO send_windows (account_id, "window", starts_at, count)
    VALUES (:account, :window, date_trunc(:window, now()), 1)
    ON CONFLICT (account_id, "window", starts_at)
    DO UPDATE SET count = send_windows.count + 1 WHERE send_windows.count < :limit
    RETURNING date_trunc(:window, now())
    """
)
WINDOW_END_SQL = text("SELECT date_trunc(:window, now()) + make_interval(secs => :seconds)")


async def acquire(session: AsyncSession, account: str, limits: Limits) -> datetime | None:
    """Count one message against every window; None if allowed, else when to try again.

    Run inside a transaction that the caller rolls back when refused, so a
    refused message consumes no window's budget.
    """
    for window, limit in limits.rates.items():
        allowed = await session.scalar(ACQUIRE_SQL, {"account": account, "window": window, "limit": limit})
        if allowed is None:
            seconds = next(s for w, s in WINDOWS.values() if w == window)
            end = await session.scalar(WINDOW_END_SQL, {"window": window, "seconds": seconds})
            assert isinstance(end, datetime)
            return end
    return None

