"""Runtime settings stored in PostgreSQL (EmailEngine's ``/v1/settings``).

The API writes them, other services read them; the names and defaults live
here so both agree.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_common.db.models import Setting

DEFAULTS: dict[str, Any] = {
    "webhooks": None,  # global webhook URL
    "webhooksEnabled": True,
    "webhookEvents": ["*"],  # EmailEngine names, or "*" for all
    "serviceUrl": None,
    "serviceSecret": None,  # generated on first use, see service_secret()
    # messageNew webhooks (EmailEngine's): include the text, cut at this many bytes (0: whole).
    "notifyText": False,
    "notifyTextSize": 0,
    # Headers copied into messageNew's ``headers`` ("*": all of them).
    "notifyHeaders": [],
    # Protocol logs of every account (``all``), kept up to ``maxLogLines`` lines per account.
    "logs": {"all": False, "maxLogLines": 10000},
    # Open and click tracking for every message that does not say (EmailEngine's names).
    "trackOpens": False,
    "trackClicks": False,
    # Keep only the verdicts of opens, clicks and unsubscribes: no IP address, no user agent.
    "trackingPrivacy": False,
}

# EmailEngine's queues; the row "queue:<name>" holds {"paused": bool, "concurrency": int | None}.
QUEUES = ("submit", "notify", "documents")
QUEUE_DEFAULT: dict[str, Any] = {"paused": False, "concurrency": None}


def queue_key(name: str) -> str:
    return f"queue:{name}"


async def queue_state(session: AsyncSession, name: str) -> dict[str, Any]:
    """A queue's stored state ({"paused", "concurrency"}), defaults when never set."""
    value = await session.scalar(select(Setting.value).where(Setting.key == queue_key(name)))
    return {**QUEUE_DEFAULT, **(value if isinstance(value, dict) else {})}


async def read(session: AsyncSession, keys: list[str] | None = None) -> dict[str, Any]:
    wanted = keys or list(DEFAULTS)
    rows = await session.execute(select(Setting.key, Setting.value).where(Setting.key.in_(wanted)))
    # Not dict(rows): a Result has keys() (its column names), so dict() would index it.
    return with_defaults(wanted, {key: value for key, value in rows})


def with_defaults(keys: list[str], stored: dict[str, Any]) -> dict[str, Any]:
    """The ``keys`` asked for: the ``stored`` value where there is one, else the default."""
    values = {k: DEFAULTS.get(k) for k in keys}
    values.update((k, v) for k, v in stored.items() if k in values)
    return values


async def write(session: AsyncSession, values: dict[str, Any]) -> None:
    for key, value in values.items():
        stmt = insert(Setting).values(key=key, value=value)
        await session.execute(
            stmt.on_conflict_do_update(index_elements=[Setting.key], set_={"value": value})
        )


def new_service_secret() -> str:
    # Standard Webhooks' "whsec_" form; EmailEngine clients use the whole string as HMAC key.
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


async def service_secret(session: AsyncSession) -> str:
    """The webhook signing secret, created once (first writer wins across replicas)."""
    await session.execute(
        insert(Setting)
        .values(key="serviceSecret", value=new_service_secret())
        .on_conflict_do_nothing(index_elements=[Setting.key])
    )
    value = await session.scalar(select(Setting.value).where(Setting.key == "serviceSecret"))
    assert isinstance(value, str)
    return value
