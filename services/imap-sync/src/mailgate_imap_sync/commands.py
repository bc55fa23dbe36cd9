"""Mailbox commands from the sender (copy a sent message to Sent, flag a referenced
message) and the api's message reads.

Commands arrive on the imap-sync queue, which all replicas share, so any
replica may get one - not necessarily the one watching the account.  Rather
than forwarding, the receiving replica uses a command connection of its own
for the account (``CommandConnections``): one per account, reused by the
account's commands in turn and closed after a minute unused, so a burst of
fifty sends makes one login, not fifty (servers cap logins per user: Dovecot
at 10 by default, and providers rate-limit them).

A failure raises, so the bus retries the command: for as long as the server
or the database is away (``ConnectError`` and database connection errors
are transient), a few times for anything else (a rejected login, a refused
command), then it is dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from mailgate_common import events
from mailgate_common.bus import RpcReply
from mailgate_common.crypto import Sealer
from mailgate_common.db import Database
from mailgate_common.db.models import Account, IndexedMessage, Mailbox, OutboxMessage
from mailgate_common.settings import Settings
from mailgate_imap_sync import accounts, parse
from mailgate_imap_sync.accounts import ImapAccount
from mailgate_imap_sync.client import Connection, ImapError, ProtocolError, ResponseTooLarge, quote

log = logging.getLogger(__name__)

# These servers store a copy of every message sent through their SMTP themselves.
SELF_COPYING_HOSTS = ("imap.gmail.com", "imap.googlemail.com")
# A command connection unused this long is logged out.
IDLE_CLOSE = 60.0


def _literal(lines: list[Any]) -> bytes | None:
    """The message source from a ``UID FETCH (BODY.PEEK[])`` response."""
    for i, line in enumerate(lines[:-1]):
        if isinstance(line, bytes) and parse.LITERAL_END.search(line.rstrip()) and b"BODY[]" in line:
            return bytes(lines[i + 1])
    return None


@dataclass
class _Pooled:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    connection: Connection | None = None
    fingerprint: str = ""
    used: float = 0.0


class CommandConnections:
    """One logged-in connection per account, used by one command at a time."""

    def __init__(self, load: Callable[[str], Awaitable[ImapAccount | None]], io_timeout: float,
                 max_bytes: int, idle_close: float = IDLE_CLOSE) -> None:
        self._load = load
        self._timeout = io_timeout
        self._max_bytes = max_bytes
        self._idle_close = idle_close
        self._pool: dict[str, _Pooled] = {}

    @contextlib.asynccontextmanager
    async def use(self, account: str) -> AsyncIterator[Connection | None]:
        """The account's command connection (None: the account has no IMAP any more)."""
        pooled = self._pool.setdefault(account, _Pooled())
        async with pooled.lock:
            imap = await self._load(account)
            if imap is None:
                await self._drop(pooled)
                yield None
                return
            if pooled.connection is not None and (pooled.connection.lost or pooled.fingerprint != imap.fingerprint):
                await self._drop(pooled)  # gone, or the settings changed
            if pooled.connection is None:
                pooled.connection = await imap.connect(self._timeout, self._max_bytes)
                pooled.fingerprint = imap.fingerprint
            imap.settings.clear()  # the password is not kept around
            try:
                yield pooled.connection
            except (asyncio.CancelledError, ProtocolError, ResponseTooLarge):
                # Cut off mid-command, or the server misbehaves: the connection's state is unknown.
                await self._drop(pooled)
                raise
            finally:
                pooled.used = time.monotonic()

    async def _drop(self, pooled: _Pooled) -> None:
        connection, pooled.connection = pooled.connection, None
        if connection is not None:
            await asyncio.shield(connection.close())

    async def close_idle(self) -> None:
        """Log out of connections unused for ``idle_close`` seconds (and forget the account)."""
        now = time.monotonic()
        for account, pooled in list(self._pool.items()):
            if not pooled.lock.locked() and now - pooled.used >= self._idle_close:
                del self._pool[account]
                await self._drop(pooled)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._idle_close / 2)
            await self.close_idle()

    async def close(self) -> None:
        pooled = list(self._pool.values())
        self._pool.clear()
        await asyncio.gather(*(self._drop(p) for p in pooled), return_exceptions=True)


class Commands:
    def __init__(self, settings: Settings, db: Database, sealer: Sealer) -> None:
        self.settings = settings
        self.db = db
        self.connections = CommandConnections(lambda account: accounts.load(db, sealer, account),
                                              settings.imap_timeout, settings.imap_max_response_bytes)

    async def append_sent(self, event: events.ImapAppendSent) -> None:
        async with self.db.sessions() as session:
            row = await session.get(OutboxMessage, event.queue_id)
            account = await session.get(Account, row.account_id) if row else None
            # EmailEngine's submit field ``sentMailPath`` names the folder, else the Sent special-use one.
            sent_path: str | None = str((row.options or {}).get("sentMailPath") or "") if row else ""
            sent_path = sent_path or await session.scalar(
                select(Mailbox.path).where(Mailbox.account_id == (row.account_id if row else ""),
                                           Mailbox.special_use == "\\Sent")
            )
        if row is None or account is None or not account.imap:
            return  # gone
        copy = row.copy if row.copy is not None else account.copy
        host = str((account.imap or {}).get("host", "")).lower()
        # No body: already pruned by retention.
        wants_copy = copy is not False and host not in SELF_COPYING_HOSTS and row.raw is not None
        draft = (row.options or {}).get("draft")
        if not wants_copy and not isinstance(draft, dict):
            return
        async with self.connections.use(account.id) as connection:
            if connection is None:
                return
            if wants_copy:
                await _copy_sent(connection, account.id, row, sent_path)
            if isinstance(draft, dict):
                await _remove_draft(connection, account.id, draft)

    async def set_flags(self, event: events.ImapSetFlags) -> None:
        row = await self._indexed(event.account, event.message)
        if row is None or not (event.add or event.remove):
            return
        async with self.connections.use(row.account_id) as connection:
            if connection is None:
                return
            info: dict[str, Any] = await connection.select(row.path)
            if info.get("uidvalidity") != row.uidvalidity:
                return  # the folder was recreated; the message is gone
            for op, flags in (("+FLAGS.SILENT", event.add), ("-FLAGS.SILENT", event.remove)):
                if flags:
                    await connection.uid_store(row.uid, op, flags)

    async def fetch(self, event: events.ImapFetch) -> RpcReply:
        """The raw source of an indexed message (request/reply from the api)."""
        row = await self._indexed(event.account, event.message)
        if row is None:
            return RpcReply(b"message is not in the index", 404, "text/plain")
        limit = self.settings.imap_fetch_max_bytes
        if row.size is not None and row.size > limit:
            return _too_large(row.size, limit)
        try:
            async with self.connections.use(row.account_id) as connection:
                if connection is None:
                    return RpcReply(b"account has no IMAP settings", 404, "text/plain")
                info: dict[str, Any] = await connection.select(row.path)
                if info.get("uidvalidity") != row.uidvalidity:
                    return RpcReply(b"the folder was recreated", 404, "text/plain")
                size = row.size
                if size is None:
                    sized = parse.parse_fetch(await connection.uid_fetch(str(row.uid), "(UID RFC822.SIZE)"))
                    size = sized[0].size if sized else None
                    if size is not None and size > limit:
                        return _too_large(size, limit)
                # PEEK: reading over the API must not mark the message \Seen.
                raw = _literal(await connection.uid_fetch(str(row.uid), "(BODY.PEEK[])", size=size or 0))
        except ImapError as exc:
            return RpcReply(f"the mail server failed: {exc}".encode(), 502, "text/plain")
        if raw is None:
            return RpcReply(b"message was expunged", 404, "text/plain")
        return RpcReply(raw, 200, "message/rfc822")

    async def _indexed(self, account: str | None, message: str) -> IndexedMessage | None:
        async with self.db.sessions() as session:
            row: IndexedMessage | None = await session.scalar(
                select(IndexedMessage).where(IndexedMessage.id == message,
                                             IndexedMessage.account_id == (account or ""))
            )
            return row


async def _copy_sent(connection: Connection, account: str, row: OutboxMessage, sent_path: str | None) -> None:
    assert row.raw is not None
    if sent_path is None:
        sent_path = next((f.path for f in await connection.list_folders() if f.special_use == "\\Sent"), None)
    if sent_path is None:
        log.warning("%s: no Sent folder, not copying %s", account, row.id)
        return
    # Redelivered command: the copy may already be there.
    await connection.select(sent_path)
    if await connection.uid_search("HEADER", "Message-ID", quote(row.message_id)):
        return
    await connection.append(bytes(row.raw), sent_path, "(\\Seen)")
    log.info("%s: copied %s to %s", account, row.id, sent_path)


async def _remove_draft(connection: Connection, account: str, draft: dict[str, Any]) -> None:
    """A draft sent with ``POST .../message/{id}/submit`` leaves the Drafts folder once
    delivered, as in EmailEngine (again on a redelivered command: nothing left to do)."""
    info: dict[str, Any] = await connection.select(str(draft.get("path")))
    if info.get("uidvalidity") != draft.get("uidValidity"):
        return  # the folder was recreated; the draft is gone
    await connection.expunge_uids(str(int(draft.get("uid", 0))))
    log.info("%s: removed sent draft %s", account, draft.get("id"))


def _too_large(size: int, limit: int) -> RpcReply:
    return RpcReply(f"the message is {size} bytes, more than the {limit} that can be read through the API"
                    .encode(), 413, "text/plain")
