"""What the mailbox operations share: the account's connection with IMAP failures
turned into EmailEngine-style refusals, a checked SELECT, COPYUID and special folders."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import select

from mailgate_common.db.models import Mailbox
from mailgate_imap_sync import parse
from mailgate_imap_sync.client import AuthError, ConnectError, Connection, ImapError, RefusedHost, quote
from mailgate_imap_sync.commands import Commands
from mailgate_imap_sync.operations import OperationError
from mailgate_imap_sync.search import SearchError, compile_search

_COPYUID = re.compile(rb"\[COPYUID (\d+) ([0-9:,]+) ([0-9:,]+)\]", re.IGNORECASE)


class FieldError(OperationError):
    """A refusal about one input (``field``), answered as 400 naming it."""

    def __init__(self, field: str, message: str, code: str = "InputValidationError", status: int = 400) -> None:
        super().__init__(status, code, message)
        self.field = field


@contextlib.asynccontextmanager
async def connection(commands: Commands, account: str) -> AsyncIterator[Connection]:
    """The account's kept command connection; IMAP failures become OperationError."""
    try:
        async with commands.connections.use(account) as conn:
            if conn is None:
                raise OperationError(404, "AccountNotFound", "Account not found or it has no IMAP settings")
            yield conn
    except OperationError:
        raise
    except AuthError as exc:
        raise OperationError(403, "AuthenticationFailed", f"IMAP login failed: {exc}") from exc
    except RefusedHost as exc:
        raise OperationError(403, "HostNotAllowed", str(exc)) from exc
    except ConnectError as exc:
        raise OperationError(503, "IMAPUnavailable", f"Mail server unavailable: {exc}") from exc
    except ImapError as exc:
        if "[TRYCREATE]" in str(exc).upper():
            # The target folder of a MOVE, COPY or APPEND does not exist.
            raise FieldError("path", f"No such folder: {exc}", "MailboxNotFound", 404) from exc
        raise OperationError(502, "IMAPCommandFailed", str(exc)) from exc


async def select_message(conn: Connection, args: dict[str, Any]) -> tuple[str, int, int]:
    """SELECT the message's folder; (path, uidvalidity, uid), or 404 if the folder was recreated."""
    path, uid, uidvalidity = str(args["path"]), int(args["uid"]), int(args["uidValidity"])
    info = await select_folder(conn, path)
    if info.get("uidvalidity") != uidvalidity:
        raise OperationError(404, "MessageNotFound", "Message not found (its folder was recreated)")
    return path, uidvalidity, uid


async def select_folder(conn: Connection, path: str) -> dict[str, int]:
    quote_path(path)  # refuses what cannot be sent
    try:
        return await conn.select(path)
    except ConnectError:
        raise
    except ImapError as exc:
        raise FieldError("path", f"Cannot open folder {path!r}: {exc}", "MailboxNotFound", 404) from exc


def expand(uid_set: bytes) -> list[int]:
    uids: list[int] = []
    for part in uid_set.split(b","):
        first, _, last = part.partition(b":")
        low, high = int(first), int(last or first)
        step = 1 if high >= low else -1
        uids.extend(range(low, high + step, step))
    return uids


def copy_uids(lines: list[Any]) -> tuple[int, dict[int, int]] | None:
    """COPYUID (UIDPLUS) from a COPY or MOVE answer: target uidvalidity, source uid -> target uid."""
    for line in lines:
        found = _COPYUID.search(bytes(line))
        if found:
            return int(found.group(1)), dict(zip(expand(found.group(2)), expand(found.group(3)), strict=False))
    return None


async def move(conn: Connection, uids: list[int], destination: str) -> tuple[int, dict[int, int]] | None:
    """Move ``uids`` of the selected folder: UID MOVE, else COPY, mark \\Deleted and expunge them."""
    if not uids:
        return None
    uid_set = parse.uid_set(uids)
    target = quote_path(destination, "path")
    if "MOVE" in conn.capabilities:
        return copy_uids(await conn.uid_command("MOVE", uid_set, target))
    mapped = copy_uids(await conn.uid_command("COPY", uid_set, target))
    await expunge(conn, uids)
    return mapped


async def expunge(conn: Connection, uids: list[int]) -> None:
    """Delete ``uids`` of the selected folder for good."""
    if uids:
        await conn.expunge_uids(parse.uid_set(uids))


def quote_path(path: str, field: str = "path") -> str:
    if not path or any(c in path for c in "\r\n\0"):
        raise FieldError(field, "is not a folder path (empty, or with a line break)")
    return quote(path)


async def special_folder(commands: Commands, conn: Connection, account: str, use: str) -> str | None:
    """The account's folder with special use ``use`` (\\Trash, \\Drafts): the index knows, else LIST."""
    async with commands.db.sessions() as session:
        path: str | None = await session.scalar(
            select(Mailbox.path).where(Mailbox.account_id == account, Mailbox.special_use == use))
    if path is not None:
        return path
    return next((f.path for f in await conn.list_folders() if f.special_use == use), None)


async def search_uids(conn: Connection, search: dict[str, Any]) -> list[int]:
    """UID SEARCH of the selected folder for EmailEngine's ``search`` object."""
    try:
        compiled = compile_search(search, conn.capabilities)
    except SearchError as exc:
        raise FieldError(exc.field, exc.message) from exc
    return await conn.search(compiled.criteria, compiled.charset)
