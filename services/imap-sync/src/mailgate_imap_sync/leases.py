"""Account leases: each IMAP account is watched by exactly one replica.

A lease row says which replica holds an account until when.  The holder
renews all its leases every heartbeat; a replica that dies stops renewing and
its leases expire, so another replica's next scan takes the accounts over.
Taking a lease is one guarded upsert (free, expired, or already ours), so two
replicas can never both believe they hold an account.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from sqlalchemy import text

from mailgate_common.db import Database

ACQUIRE_SQL = text(
    """
    INSERT INTO account_leases (account_id, holder, expires_at)
    SELECT a.id, :me, now() + make_interval(secs => :ttl)
    FROM accounts a
    LEFT JOIN account_leases l ON l.account_id = a.id
    WHERE a.imap IS NOT NULL
      AND COALESCE((a.imap ->> 'disabled')::boolean, false) = false
      AND (l.account_id IS NULL OR l.expires_at < now())
    ORDER BY random()
    LIMIT :limit
    ON CONFLICT (account_id) DO UPDATE
       SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at, acquired_at = now()
       WHERE account_leases.expires_at < now() OR account_leases.holder = EXCLUDED.holder
    RETURNING account_id
    """
)
RENEW_SQL = text(
    """
    UPDATE account_leases l SET expires_at = now() + make_interval(secs => :ttl)
    FROM accounts a
    WHERE l.holder = :me AND a.id = l.account_id AND l.expires_at >= now()
    RETURNING l.account_id, a.imap, a.credentials, a.extra -> 'publicHostsOnly', a.extra -> 'imapCommands'
    """
)
# Accounts that no longer want IMAP (settings removed or disabled) are let go.
DROP_UNWANTED_SQL = text(
    """
    DELETE FROM account_leases l USING accounts a
    WHERE l.holder = :me AND a.id = l.account_id
      AND (a.imap IS NULL OR COALESCE((a.imap ->> 'disabled')::boolean, false))
    """
)
HEARTBEAT_SQL = text(
    """
    INSERT INTO imap_replicas (holder, seen_at) VALUES (:me, now())
    ON CONFLICT (holder) DO UPDATE SET seen_at = now()
    """
)
# Fair share: the IMAP accounts divided by the replicas seen within one lease ttl.
SHARE_SQL = text(
    """
    SELECT
      (SELECT count(*) FROM accounts
        WHERE imap IS NOT NULL AND COALESCE((imap ->> 'disabled')::boolean, false) = false),
      (SELECT count(*) FROM imap_replicas
        WHERE seen_at > now() - make_interval(secs => :ttl) OR holder = :me),
      (SELECT count(*) FROM account_leases WHERE holder = :me AND expires_at >= now())
    """
)
FORGET_REPLICA_SQL = text("DELETE FROM imap_replicas WHERE holder = :me")
RELEASE_SQL = text("DELETE FROM account_leases WHERE holder = :me AND account_id = ANY(:ids)")


@dataclass(frozen=True)
class Held:
    account: str
    # Changes when the IMAP settings, credentials or host policy change: the watcher restarts.
    fingerprint: str
    # reconnect / sync / flush left for the holder by another replica (see control.py).
    commands: dict[str, str] | None = None


def fingerprint(imap: object, credentials: bytes | None, public_only: object = None) -> str:
    digest = hashlib.sha256(json.dumps([imap, public_only], sort_keys=True).encode())
    digest.update(bytes(credentials or b""))
    return digest.hexdigest()


class Leases:
    def __init__(self, db: Database, holder: str, ttl: float, batch: int) -> None:
        self.db = db
        self.holder = holder
        self.ttl = ttl
        self.batch = batch

    async def acquire(self) -> tuple[list[str], int]:
        """Take free accounts up to our fair share; returns them and how many to give back."""
        async with self.db.transaction() as session:
            await session.execute(HEARTBEAT_SQL, {"me": self.holder})
            await session.execute(DROP_UNWANTED_SQL, {"me": self.holder})
            total, replicas, held = (
                await session.execute(SHARE_SQL, {"me": self.holder, "ttl": self.ttl})
            ).one()
            share = -(-total // max(1, replicas))
            limit = min(self.batch, share - held)
            taken: list[str] = []
            if limit > 0:
                rows = await session.execute(
                    ACQUIRE_SQL, {"me": self.holder, "ttl": self.ttl, "limit": limit}
                )
                taken = [r[0] for r in rows]
        # Give back only clearly more than our share, so replicas do not ping-pong.
        excess = held - share if held > share + 1 else 0
        return taken, excess

    async def renew(self) -> list[Held]:
        """Extend every lease still ours; the result is exactly what we may watch."""
        async with self.db.transaction() as session:
            rows = await session.execute(RENEW_SQL, {"me": self.holder, "ttl": self.ttl})
            return [Held(account, fingerprint(imap, creds, public_only), commands or None)
                    for account, imap, creds, public_only, commands in rows]

    async def release(self, accounts: list[str], leaving: bool = False) -> None:
        async with self.db.transaction() as session:
            if accounts:
                await session.execute(RELEASE_SQL, {"me": self.holder, "ids": accounts})
            if leaving:
                await session.execute(FORGET_REPLICA_SQL, {"me": self.holder})
