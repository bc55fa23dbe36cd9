"""Protocol logs of accounts whose ``logs`` is on (EmailEngine's ``GET /v1/logs/{account}``).

A connection feeds its lines through a ``Masker`` (passwords and tokens never
reach the table) into an ``AccountLogs`` buffer; the buffer writes in batches
(one INSERT per flush, not one per line) and keeps only each account's newest
``maxLogLines`` lines, pruned every so often rather than on every write.
An account logs when its own ``logs`` is true or the ``logs.all`` setting is.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select, text

from mailgate_common import service_settings
from mailgate_common.db import Database
from mailgate_common.db.models import Account, AccountLog

log = logging.getLogger(__name__)

MASK = "********"
MAX_LINE = 2000  # characters kept of one line
PRUNE_EVERY = 200  # lines written for an account between two prunes
SETTING_TTL = 5.0  # seconds the ``logs`` setting is cached

# IMAP: "tag LOGIN user pass", "tag AUTHENTICATE PLAIN <initial response>".
_IMAP_LOGIN = re.compile(r"^(\S+\s+LOGIN\s+(?:\"(?:[^\"\\]|\\.)*\"|\S+)\s+).*$", re.IGNORECASE)
_IMAP_AUTHENTICATE = re.compile(r"^(\S+\s+AUTHENTICATE\s+\S+)(\s+.*)?$", re.IGNORECASE)
# SMTP: "AUTH PLAIN <b64>", "AUTH LOGIN <b64 user>", "AUTH XOAUTH2 <b64>".
_SMTP_AUTH = re.compile(r"^(AUTH\s+\S+)(\s+.*)?$", re.IGNORECASE)


class Masker:
    """Masks credentials in one connection's client lines (it remembers an AUTH
    exchange in progress: the lines that answer its challenges are secrets)."""

    def __init__(self) -> None:
        self._in_auth = False

    def client(self, line: str) -> str:
        if self._in_auth:
            # A SASL continuation (credentials) or "*" to cancel: never kept.
            return MASK
        for pattern in (_IMAP_AUTHENTICATE, _SMTP_AUTH):
            found = pattern.match(line)
            if found:
                self._in_auth = True
                return found.group(1) + (" " + MASK if found.group(2) else "")
        found = _IMAP_LOGIN.match(line)
        if found:
            return found.group(1) + MASK
        return line

    def server(self, line: str) -> str:
        # A continuation ("+ ..." in IMAP, "334 ..." in SMTP) keeps the exchange going;
        # anything else ends it.  Challenges may carry a username: decode-free mask.
        if self._in_auth and (line.startswith("+") or line.startswith("334")):
            marker, _, challenge = line.partition(" ")
            return f"{marker} {MASK}" if challenge.strip() else line
        self._in_auth = False
        return line


_LITERAL = re.compile(rb"\{(\d+)\+?\}$")
MAX_PARTIAL = 64 * 1024  # bytes of an unfinished server line kept before it is cut


class Tracer:
    """One connection's protocol log: the bytes it sends and receives become
    masked lines in ``AccountLogs``.  Literal contents (message bodies) are
    skipped and noted by size: the log is about the protocol, not the mail."""

    __slots__ = ("_account", "_logs", "_masker", "_partial", "_skip", "_source")

    def __init__(self, logs: AccountLogs, account: str, source: str) -> None:
        self._logs = logs
        self._account = account
        self._source = source
        self._masker = Masker()
        self._partial = bytearray()
        self._skip = 0

    def _add(self, line: str) -> None:
        self._logs.add(self._account, self._source, line)

    def sent(self, data: bytes) -> None:
        for line in data.decode(errors="replace").splitlines():
            self._add("C: " + self._masker.client(line))

    def received(self, data: bytes) -> None:
        if self._skip:
            taken = min(self._skip, len(data))
            self._skip -= taken
            data = data[taken:]
        self._partial += data
        while True:
            end = self._partial.find(b"\r\n")
            if end < 0:
                if len(self._partial) > MAX_PARTIAL:
                    self._add("S: " + self._partial[:MAX_LINE].decode(errors="replace") + " ...")
                    self._partial.clear()
                return
            line = bytes(self._partial[:end])
            del self._partial[:end + 2]
            literal = _LITERAL.search(line)
            self._add("S: " + self._masker.server(line.decode(errors="replace")))
            if literal:
                size = int(literal.group(1))
                taken = min(size, len(self._partial))
                del self._partial[:taken]
                self._skip = size - taken
                if self._skip:
                    return


@dataclass
class _Pending:
    rows: list[dict[str, Any]] = field(default_factory=list)


class AccountLogs:
    """Buffered writer of account protocol lines; ``run()`` flushes about once a second."""

    def __init__(self, db: Database, flush_interval: float = 1.0, max_buffer: int = 10_000) -> None:
        self.db = db
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self._pending = _Pending()
        self._written: Counter[str] = Counter()
        self._settings: tuple[float, dict[str, Any]] = (0.0, {})

    async def _logs_setting(self) -> dict[str, Any]:
        at, value = self._settings
        if time.monotonic() - at < SETTING_TTL:
            return value
        async with self.db.sessions() as session:
            value = (await service_settings.read(session, ["logs"]))["logs"] or {}
        self._settings = (time.monotonic(), value)
        return value

    async def enabled(self, account: str, own: bool | None = None) -> bool:
        """Whether ``account`` logs: its own ``logs`` (read unless given), or the ``logs.all`` setting."""
        if own or (await self._logs_setting()).get("all"):
            return True
        if own is None:
            async with self.db.sessions() as session:
                extra = await session.scalar(select(Account.extra).where(Account.id == account))
            return bool((extra or {}).get("logs"))
        return False

    async def tracer(self, account: str, source: str, own: bool | None = None) -> Tracer | None:
        """A tracer for a new connection of ``account``, or None when its logs are off.

        ``own``: the account's ``logs`` when the caller has its row at hand."""
        try:
            return Tracer(self, account, source) if await self.enabled(account, own) else None
        except Exception as exc:  # logs never stand in the way of a connection
            log.warning("could not tell whether %s logs: %r", account, exc)
            return None

    def add(self, account: str, source: str, line: str) -> None:
        """Queue one (already masked) line; dropped when the buffer is full (logs never block work)."""
        if len(self._pending.rows) >= self.max_buffer:
            return
        self._pending.rows.append({"account_id": account, "source": source, "line": line[:MAX_LINE]})

    async def flush(self) -> None:
        rows, self._pending = self._pending.rows, _Pending()
        if not rows:
            return
        async with self.db.transaction() as session:
            await session.execute(insert(AccountLog), rows)
        for row in rows:
            self._written[row["account_id"]] += 1
        due = [a for a, n in self._written.items() if n >= PRUNE_EVERY]
        if due:
            keep = int((await self._logs_setting()).get("maxLogLines") or 10000)
            for account in due:
                del self._written[account]
                await prune(self.db, account, keep)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
            except Exception as exc:  # a lost batch of log lines must not stop the service
                log.warning("could not write account logs: %r", exc)


_PRUNE = text("""
DELETE FROM account_logs WHERE account_id = :account AND id <= (
  SELECT id FROM account_logs WHERE account_id = :account ORDER BY id DESC OFFSET :keep LIMIT 1)
""")


async def prune(db: Database, account: str, keep: int) -> None:
    """Keep only the account's newest ``keep`` lines."""
    async with db.transaction() as session:
        await session.execute(_PRUNE, {"account": account, "keep": keep})


_READ = text("""
SELECT created_at, source, line FROM (
  SELECT id, created_at, source, line FROM account_logs WHERE account_id = :account
  ORDER BY id DESC LIMIT :limit) newest ORDER BY id
""")


async def read(db: Database, account: str, limit: int) -> list[tuple[Any, str, str]]:
    """The account's newest ``limit`` lines, oldest first."""
    async with db.sessions() as session:
        rows = await session.execute(_READ, {"account": account, "limit": limit})
        return [(at, source, line) for at, source, line in rows]
