"""Folder operations: create, rename, delete (EmailEngine's answers).

A path given as a list of names is joined with the server's hierarchy
delimiter, as EmailEngine does.  The folder list in the index follows on the
watcher's next folder scan.
"""

from __future__ import annotations

import re
from typing import Any

from mailgate_imap_sync.client import Connection
from mailgate_imap_sync.commands import Commands
from mailgate_imap_sync.operations import HANDLERS, OperationError, Result
from mailgate_imap_sync.ops_common import FieldError, connection, quote_path

_CODE = re.compile(rb"^\[([A-Z-]+)")
_MAILBOXID = re.compile(rb"\[MAILBOXID \(([^)]+)\)\]", re.IGNORECASE)
_LIST_DELIMITER = re.compile(rb'\) (?:"((?:[^"\\]|\\.)*)"|NIL) ')


async def _delimiter(conn: Connection) -> str:
    response = await conn.command("LIST", '""', '""')
    for line in response.lines[:-1]:
        found = _LIST_DELIMITER.search(bytes(line))
        if found and found.group(1):
            return found.group(1).decode().replace("\\\\", "\\")
    return "/"


async def _path(conn: Connection, field: str, value: Any) -> str:
    if isinstance(value, list):
        if not value or not all(isinstance(v, str) and v for v in value):
            raise FieldError(field, "must be a folder path or a list of folder names")
        return (await _delimiter(conn)).join(value) if len(value) > 1 else value[0]
    if not isinstance(value, str) or not value:
        raise FieldError(field, "must be a folder path or a list of folder names")
    return value


def _refusal(what: str, path: str, result: str, text: bytes) -> OperationError:
    found = _CODE.match(text)
    code = found.group(1).decode() if found else ""
    message = f"{what} {path!r} refused by the mail server: {result} {text.decode(errors='replace')}"
    if code == "NONEXISTENT":
        return FieldError("path", message, "NotFound", 404)
    if code == "ALREADYEXISTS":
        return FieldError("newPath", message, "AlreadyExists", 400)
    return FieldError("path", message, "IMAPCommandFailed", 400)


async def create(commands: Commands, account: str, args: dict[str, Any], _raw: bytes | None) -> Result:
    async with connection(commands, account) as conn:
        path = await _path(conn, "path", args.get("path"))
        result, text = await conn.mailbox_command("CREATE", quote_path(path))
    if result != "OK":
        if text.startswith(b"[ALREADYEXISTS]"):
            return Result({"path": path, "created": False})
        raise _refusal("Creating", path, result, text)
    answer: dict[str, Any] = {"path": path, "created": True}
    found = _MAILBOXID.search(text)
    if found:
        answer["mailboxId"] = found.group(1).decode()
    return Result(answer)


async def rename(commands: Commands, account: str, args: dict[str, Any], _raw: bytes | None) -> Result:
    path = args.get("path")
    if not isinstance(path, str) or not path:
        raise FieldError("path", "is required")
    async with connection(commands, account) as conn:
        new_path = await _path(conn, "newPath", args.get("newPath"))
        result, text = await conn.mailbox_command("RENAME", quote_path(path), quote_path(new_path, "newPath"))
    if result != "OK":
        raise _refusal("Renaming", path, result, text)
    return Result({"path": path, "newPath": new_path, "renamed": True})


async def delete(commands: Commands, account: str, args: dict[str, Any], _raw: bytes | None) -> Result:
    path = args.get("path")
    if not isinstance(path, str) or not path:
        raise FieldError("path", "is required")
    if path.upper() == "INBOX":
        raise FieldError("path", "INBOX cannot be deleted")
    async with connection(commands, account) as conn:
        # Some servers refuse to delete the selected folder: leave it for INBOX, read-only
        # (CLOSE would expunge what is marked \Deleted there).
        await conn.command("EXAMINE", '"INBOX"')
        result, text = await conn.mailbox_command("DELETE", quote_path(path))
    if result != "OK":
        raise _refusal("Deleting", path, result, text)
    return Result({"path": path, "deleted": True})


HANDLERS.update({"mailbox.create": create, "mailbox.rename": rename, "mailbox.delete": delete})
