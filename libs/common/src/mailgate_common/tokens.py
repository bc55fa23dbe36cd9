"""API tokens: shown once, stored as SHA-256, scoped, optionally bound to one account.

Scopes are EmailEngine's: ``api`` (REST), ``smtp`` (SMTP submission), ``*`` (both).
A token with no account is an admin token for every account.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import ipaddress
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_common import events
from mailgate_common.db import Database
from mailgate_common.db.models import ApiToken

SCOPES = ("api", "smtp", "*")
# Our tokens are 64 hex chars; anything far longer is not worth hashing.
MAX_TOKEN_LENGTH = 512
LAST_USED_PRECISION = timedelta(seconds=60)


@dataclass(frozen=True)
class TokenInfo:
    id: str
    account: str | None  # None: every account (admin)
    scopes: tuple[str, ...]
    description: str | None = None
    # EmailEngine's ``restrictions.addresses``: IPs/CIDR ranges the token may be used from.
    addresses: tuple[str, ...] | None = None
    # ``restrictions.referrers``: Referer patterns (``*`` wildcards) a browser caller must match.
    referrers: tuple[str, ...] | None = None

    def allows_referrer(self, referrer: str | None) -> bool:
        if not self.referrers:
            return True
        return referrer is not None and any(fnmatch.fnmatchcase(referrer, p) for p in self.referrers)

    def allows_address(self, remote: str | None) -> bool:
        """Whether a request from ``remote`` may use this token (no allow-list: any)."""
        if not self.addresses:
            return True
        if remote is None:
            return False
        try:
            ip = ipaddress.ip_address(remote)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(net, strict=False) for net in self.addresses)

    def allows(self, scope: str, account: str | None = None) -> bool:
        if scope not in self.scopes and "*" not in self.scopes:
            return False
        return self.account is None or account is None or self.account == account

    @property
    def is_admin(self) -> bool:
        return self.account is None and ("*" in self.scopes or "api" in self.scopes)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_hex(32)


async def create(
    session: AsyncSession, account: str | None, scopes: list[str], description: str | None,
    *, metadata: Any = None, restrictions: dict[str, Any] | None = None, ip: str | None = None,
) -> str:
    """Store a new token and return it in clear - the only time it is ever visible."""
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"scopes must be a non-empty subset of {SCOPES}")
    token = new_token()
    session.add(ApiToken(id=hash_token(token), account_id=account, description=description,
                         scopes=list(scopes), metadata_=metadata, restrictions=restrictions, ip=ip))
    return token


def _restriction(restrictions: Any, key: str) -> tuple[str, ...] | None:
    if not isinstance(restrictions, dict) or not restrictions.get(key):
        return None
    return tuple(str(a) for a in restrictions[key])


_LOOKUP = """
SELECT id, account_id, scopes, description, last_used_at, restrictions FROM api_tokens WHERE id = $1
"""
_TOUCH = """
UPDATE api_tokens SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)
"""


async def verify(db: Database, token: str, admin_token: str | None = None) -> TokenInfo | None:
    """Who this token is; one prepared statement, as every request asks it."""
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return TokenInfo(id="admin", account=None, scopes=("*",), description="MAILGATE_ADMIN_TOKEN")
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    async with db.statement_connection() as conn:
        row = await conn.fetchrow(_LOOKUP, hash_token(token))
        if row is None:
            return None
        # Touch lastUsed at most once a minute: a busy client must not turn every
        # request into a write that contends on one row.
        now = events.utcnow()
        if row["last_used_at"] is None or now - row["last_used_at"] > LAST_USED_PRECISION:
            await conn.execute(_TOUCH, row["id"], now, now - LAST_USED_PRECISION)
    restrictions = row["restrictions"]
    if isinstance(restrictions, str):  # asyncpg hands jsonb over as text
        restrictions = json.loads(restrictions)
    return TokenInfo(id=row["id"], account=row["account_id"], scopes=tuple(row["scopes"]),
                     description=row["description"], addresses=_restriction(restrictions, "addresses"),
                     referrers=_restriction(restrictions, "referrers"))


async def list_tokens(session: AsyncSession) -> list[ApiToken]:
    return list(await session.scalars(select(ApiToken).order_by(ApiToken.created_at)))


async def get(session: AsyncSession, token_id: str) -> ApiToken | None:
    """A token by its id (the SHA-256 the listings show)."""
    return await session.get(ApiToken, token_id)


async def revoke(session: AsyncSession, token_or_id: str) -> bool:
    for key in (hash_token(token_or_id), token_or_id):
        row = await session.get(ApiToken, key)
        if row is not None:
            await session.delete(row)
            return True
    return False
