"""Message operations: flags and labels, move, delete, search, append (EmailEngine's answers).

The api resolves a message id to (path, uidValidity, uid) from the index and
sends those; bulk operations send the folder ``path`` and a ``search``.  The
index itself is left to the account's watcher, which sees the change on the
server and announces it (messageUpdated, messageDeleted, messageNew) as for
any other client's change.
"""

from __future__ import annotations

import re
from datetime import datetime
from email.parser import BytesHeaderParser
from typing import Any

from mailgate_imap_sync import parse
from mailgate_imap_sync.client import Connection
from mailgate_imap_sync.commands import Commands
from mailgate_imap_sync.operations import HANDLERS, Result
from mailgate_imap_sync.ops_common import (
    FieldError,
    connection,
    expunge,
    move,
    quote_path,
    search_uids,
    select_folder,
    select_message,
    special_folder,
)

GMAIL = "X-GM-EXT-1"
_FLAG_OPS = {"add": "+FLAGS.SILENT", "delete": "-FLAGS.SILENT", "set": "FLAGS.SILENT"}
_LABEL_OPS = {"add": "+X-GM-LABELS.SILENT", "delete": "-X-GM-LABELS.SILENT", "set": "X-GM-LABELS.SILENT"}


# A flag is an atom, optionally after one backslash (RFC 3501's flag-keyword / flag-extension).
_FLAG = re.compile(r'^\\?[^\\\s()"{}%*\]\x00-\x1f\x7f]{1,128}$')


def _listed(field: str, value: Any, labels: bool = False) -> list[str]:
    values = value if isinstance(value, list) else [value]
    for item in values:
        if not isinstance(item, str):
            fits = False
        elif labels and not item.startswith("\\"):
            # Sent quoted: only what a quoted string cannot hold is refused.
            fits = bool(item) and not any(c in item for c in "\r\n\0")
        else:
            fits = bool(_FLAG.match(item))
        if not fits:
            raise FieldError(field, f"{item!r} is not a {'label' if labels else 'flag'}")
    return values


def _label(value: str) -> str:
    # System labels (\\Important) are atoms; user labels may hold spaces.
    return value if value.startswith("\\") else quote_path(value)


async def _update(conn: Connection, uids: list[int], update: dict[str, Any]) -> dict[str, Any]:
    """Apply EmailEngine's ``{flags:{add,delete,set}, labels:{...}}`` to ``uids`` of the selected folder."""
    answer: dict[str, Any] = {}
    labels = update.get("labels") or {}
    if labels and GMAIL not in conn.capabilities:
        raise FieldError("labels", "Labels need a Gmail server (X-GM-EXT-1); use flags on this server")
    for kind, ops, value_of in (("flags", _FLAG_OPS, str), ("labels", _LABEL_OPS, _label)):
        for op, item in (update.get(kind) or {}).items():
            if op not in ops:
                raise FieldError(f"{kind}.{op}", "is not add, delete or set")
            if item is None:
                continue
            values = _listed(f"{kind}.{op}", item, labels=kind == "labels")
            if uids and (values or op == "set"):
                await conn.uid_command("STORE", parse.uid_set(uids), ops[op],
                                       "(" + " ".join(value_of(v) for v in values) + ")")
            answer.setdefault(kind, {})[op] = True
    return answer


async def message_update(commands: Commands, account: str, args: dict[str, Any], _raw: bytes | None) -> Result:
    async with connection(commands, account) as conn:
        _, _, uid = await select_message(conn, args)
        return Result(await _update(conn, [uid], args.get("update") or {}))


async def messages_update(commands: Commands, account: str, args: dict[str, Any], _raw: bytes | None) -> Result:
    async with connection(commands, account) as conn:
        await select_folder(conn, args["path"])
        uids = await search_uids(conn, args.get("search") or {})
        return Result(await _update(conn, uids, args.get("update") or {}))


async def message_move(commands: Commands, account: str, args: dict[str, Any], _raw: bytes | None) -> Result:
    destination = str(args["destination"])
    async with connection(commands, account) as conn:
        path, _, uid = await select_message(conn, args)
        if path == destination:
            raise FieldError("path", "The message is already in that folder")
        mapped = await move(conn, [uid], destination)
    answer: dict[str, Any] = {"path": destination}
    if mapped is not None and uid in mapped[1]:
        new_uid = mapped[1][uid]
        answer.update(id=parse.message_id(account, destination, mapped[0], new_uid), uid=new_uid)
    return Result(answer)


async def messages_move(commands: Commands, account: str, args: dict[str, Any], _raw: bytes | None) -> Result:
    destination = str(args["destination"])
    async with connection(commands, account) as conn:
        info = await select_folder(conn, args["path"])
        uids = await search_uids(conn, args.get("search") or {})
        id_map = await _id_map(conn, account, args["path"], info.get("uidvalidity", 0), uids, destination)
    return Result({"path": destination, "idMap": id_map})


async def _id_map(conn: Connection, account: str, path: str, validity: int, uids: list[int],
                  destination: str) -> list[list[str]]:
    mapped = await move(conn, uids, destination)
    if mapped is None:
        return []
    target_validity, pairs = mapped
    return [[parse.message_id(account, path, validity, old),
             parse.message_id(account, destination, target_validity, new)] for old, new in sorted(pairs.items())]


async def message_delete(commands: Commands, account: str, args: dict[str, Any], _raw: bytes | None) -> Result:
    async with connection(commands, account) as conn:
        trash = None if args.get("force") else await special_folder(commands, conn, account, "\\Trash")
        path, _, uid = await select_message(conn, args)
        if trash is None or trash == path:
            await expunge(conn, [uid])
            return Result({"deleted": True})
        mapped = await move(conn, [uid], trash)
    moved: dict[str, Any] = {"destination": trash}
    if mapped is not None and uid in mapped[1]:
        moved["message"] = parse.message_id(account, trash, mapped[0], mapped[1][uid])
    return Result({"deleted": False, "moved": moved})


async def messages_delete(commands: Commands, account: str, args: dict[str, Any], _raw: bytes | None) -> Result:
    path = str(args["path"])
    async with connection(commands, account) as conn:
        trash = None if args.get("force") else await special_folder(commands, conn, account, "\\Trash")
        info = await select_folder(conn, path)
        uids = await search_uids(conn, args.get("search") or {})
        if trash is None or trash == path:
            await expunge(conn, uids)
            return Result({"deleted": True})
        id_map = await _id_map(conn, account, path, info.get("uidvalidity", 0), uids, trash)
    return Result({"deleted": False, "moved": {"destination": trash, "idMap": id_map}})


async def search(commands: Commands, account: str, args: dict[str, Any], _raw: bytes | None) -> Result:
    async with connection(commands, account) as conn:
        info = await select_folder(conn, args["path"])
        uids = await search_uids(conn, args.get("search") or {})
    return Result({"uidValidity": info.get("uidvalidity"), "uids": uids})


async def message_append(commands: Commands, account: str, args: dict[str, Any], raw: bytes | None) -> Result:
    if not raw:
        raise FieldError("raw", "The message is empty")
    path = str(args["path"])
    quote_path(path)  # refuses what cannot be sent
    flags = _listed("flags", args.get("flags") or [])
    when = args.get("internalDate")
    try:
        date = datetime.fromisoformat(when.replace("Z", "+00:00")) if when else None
    except ValueError:
        raise FieldError("internalDate", "must be an ISO 8601 date") from None
    async with connection(commands, account) as conn:
        appended = await conn.append(raw, path, "(" + " ".join(flags) + ")", date)
    answer: dict[str, Any] = {"path": path}
    if appended is not None:
        validity, uid = appended
        answer.update(id=parse.message_id(account, path, validity, uid), uid=uid, uidValidity=str(validity))
    message_id = BytesHeaderParser().parsebytes(raw).get("message-id")
    if message_id:
        answer["messageId"] = str(message_id).strip()
    return Result(answer)


HANDLERS.update({
    "message.update": message_update,
    "messages.update": messages_update,
    "message.move": message_move,
    "messages.move": messages_move,
    "message.delete": message_delete,
    "messages.delete": messages_delete,
    "search": search,
    "message.append": message_append,
})
