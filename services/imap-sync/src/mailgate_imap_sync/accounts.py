"""An account's IMAP settings, as the watcher and the commands connect with them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailgate_common.account_log import AccountLogs
from mailgate_common.crypto import Sealer, with_secret
from mailgate_common.db import Database
from mailgate_common.db.models import EXTRA_PUBLIC_HOSTS_ONLY, Account
from mailgate_common.local_addresses import LocalAddresses
from mailgate_imap_sync.client import Connection, connect
from mailgate_imap_sync.leases import fingerprint

# The replica's outbound addresses (MAILGATE_LOCAL_ADDRESSES), shared by the
# watchers and the command connections: each new connection takes the next.
_local = LocalAddresses(())


def use_local_addresses(addresses: LocalAddresses) -> None:
    global _local
    _local = addresses


# Protocol logs of the accounts whose ``logs`` is on (GET /v1/logs/{account}).
_logs: AccountLogs | None = None


def use_account_logs(logs: AccountLogs) -> None:
    global _logs
    _logs = logs


@dataclass
class ImapAccount:
    id: str
    settings: dict[str, Any]  # the ``imap`` settings, password included
    public_only: bool
    # Of the stored settings, as the lease heartbeat computes it (see leases.py).
    fingerprint: str
    # EmailEngine's ``logs``: record this account's IMAP protocol (read at each connect).
    logs: bool = False

    async def connect(self, io_timeout: float, max_bytes: int) -> Connection:
        local = _local.next()
        tracer = await _logs.tracer(self.id, "imap", self.logs) if _logs is not None else None
        return await connect(self.settings, io_timeout, max_bytes, public_only=self.public_only,
                             local_address=local.ip if local else None, tracer=tracer)


async def load(db: Database, sealer: Sealer, account: str) -> ImapAccount | None:
    """None when the account is gone or has no IMAP; CredentialError if its secret cannot be opened."""
    async with db.sessions() as session:
        row = await session.get(Account, account)
    if row is None or not row.imap:
        return None
    secret = sealer.open(row.credentials).get("imap") if row.credentials else None
    public_only = (row.extra or {}).get(EXTRA_PUBLIC_HOSTS_ONLY)
    return ImapAccount(account, with_secret(row.imap, secret), bool(public_only),
                       fingerprint(row.imap, row.credentials, public_only),
                       bool((row.extra or {}).get("logs")))
