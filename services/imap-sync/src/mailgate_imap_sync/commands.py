"""Mailbox commands from the sender: copy a sent message to Sent, flag a referenced message.

Commands arrive on the imap-sync queue, which all replicas share, so any
replica may get one - not necessarily the one watching the account.  Rather
than forwarding, the receiving replica opens its own short-lived connection
for the one command: simple, and it works while the account's watcher is
reconnecting or moving between replicas.  A failure raises, so the bus
retries the command with its delay queues and dead-letters it at the end.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from sqlalchemy import select

from mailgate_common import events
from mailgate_common.bus import RpcReply
from mailgate_common.crypto import Sealer
from mailgate_common.db import Database
from mailgate_common.db.models import Account, IndexedMessage, Mailbox, OutboxMessage
from mailgate_common.settings import Settings
from mailgate_imap_sync.client import Connection, connect
from mailgate_imap_sync.watcher import account_settings

log = logging.getLogger(__name__)

# These servers store a copy of every message sent through their SMTP themselves.
SELF_COPYING_HOSTS = ("imap.gmail.com", "imap.googlemail.com")


LITERAL = re.compile(rb"BODY\[\] \{(\d+)\}$")


def _literal(lines: list[Any]) -> bytes | None:
    """The message source from a ``UID FETCH (BODY.PEEK[])`` response."""
    for i, line in enumerate(lines[:-1]):
        if LITERAL.search(bytes(line).rstrip()):
            return bytes(lines[i + 1])
    return None


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Commands:
    def __init__(self, settings: Settings, db: Database, sealer: Sealer) -> None:
        self.settings = settings
        self.db = db
        self.sealer = sealer

    async def _connect(self, account: str) -> Connection | None:
        imap = await account_settings(self.db, self.sealer, account)
        if imap is None:
            return None
        return await connect(imap, self.settings.imap_timeout)

    async def append_sent(self, event: events.ImapAppendSent) -> None:
        async with self.db.sessions() as session:
            row = await session.get(OutboxMessage, event.queue_id)
            account = await session.get(Account, row.account_id) if row else None
            sent_path = await session.scalar(
                select(Mailbox.path).where(Mailbox.account_id == (row.account_id if row else ""),
                                           Mailbox.special_use == "\\Sent")
            )
        if row is None or account is None or not account.imap:
            return
        copy = row.copy if row.copy is not None else account.copy
        host = str((account.imap or {}).get("host", "")).lower()
        if copy is False or host in SELF_COPYING_HOSTS:
            return
        connection = await self._connect(account.id)
        if connection is None:
            return
        try:
            if sent_path is None:
                sent_path = next((f.path for f in await connection.list_folders()
                                  if f.special_use == "\\Sent"), None)
            if sent_path is None:
                log.warning("%s: no Sent folder, not copying %s", account.id, row.id)
                return
            # Redelivered command: the copy may already be there.
            await connection.select(sent_path)
            found = await connection.client.uid_search(
                "HEADER", "Message-ID", _quote(row.message_id), charset=None
            )
            if found.result == "OK" and any(
                bytes(line).startswith(b"SEARCH ") and bytes(line).split()[1:]
                for line in found.lines
            ):
                return
            response = await connection.client.append(
                bytes(row.raw), mailbox=_quote(sent_path), flags="(\\Seen)"
            )
            await connection.checked(response, f"APPEND to {sent_path}")
            log.info("%s: copied %s to %s", account.id, row.id, sent_path)
        finally:
            await connection.close()

    async def set_flags(self, event: events.ImapSetFlags) -> None:
        async with self.db.sessions() as session:
            row = await session.scalar(
                select(IndexedMessage).where(IndexedMessage.id == event.message,
                                             IndexedMessage.account_id == (event.account or ""))
            )
        if row is None or not (event.add or event.remove):
            return
        connection = await self._connect(row.account_id)
        if connection is None:
            return
        try:
            info: dict[str, Any] = await connection.select(row.path)
            if info.get("uidvalidity") != row.uidvalidity:
                return  # the folder was recreated; the message is gone
            for op, flags in (("+FLAGS.SILENT", event.add), ("-FLAGS.SILENT", event.remove)):
                if flags:
                    response = await connection.client.uid(
                        "store", str(row.uid), op, "(" + " ".join(flags) + ")"
                    )
                    await connection.checked(response, "UID STORE")
        finally:
            await connection.close()

    async def fetch(self, event: events.ImapFetch) -> RpcReply:
        """The raw source of an indexed message (request/reply from the api)."""
        async with self.db.sessions() as session:
            row = await session.scalar(
                select(IndexedMessage).where(IndexedMessage.id == event.message,
                                             IndexedMessage.account_id == (event.account or ""))
            )
        if row is None:
            return RpcReply(b"message is not in the index", 404, "text/plain")
        connection = await self._connect(row.account_id)
        if connection is None:
            return RpcReply(b"account has no IMAP settings", 404, "text/plain")
        try:
            info: dict[str, Any] = await connection.select(row.path)
            if info.get("uidvalidity") != row.uidvalidity:
                return RpcReply(b"the folder was recreated", 404, "text/plain")
            # PEEK: reading over the API must not mark the message \Seen.
            response = await connection.client.uid("fetch", str(row.uid), "(BODY.PEEK[])")
            await connection.checked(response, "UID FETCH")
            raw = _literal(response.lines)
        finally:
            await connection.close()
        if raw is None:
            return RpcReply(b"message was expunged", 404, "text/plain")
        return RpcReply(raw, 200, "message/rfc822")
