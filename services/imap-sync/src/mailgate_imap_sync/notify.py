"""RFC 5465 NOTIFY: news of every folder on the one connection an account has.

With ``NOTIFY SET`` the server pushes, even during IDLE, a ``STATUS`` for a
folder that got or lost mail and a ``LIST`` for a folder created, renamed or
deleted (``parse.change_of`` reads both as ``Change.FOLDERS``), so the watcher
runs its folder round at once instead of at the next ``imap_folder_poll``.
Flag changes in folders other than the selected one are not pushed: the
periodic round still finds those (STATUS HIGHESTMODSEQ).
"""

from __future__ import annotations

from aioimaplib import aioimaplib  # type: ignore[import-untyped]  # ships no type hints

from mailgate_imap_sync.client import Connection

# aioimaplib refuses a command it does not know; NOTIFY is a plain tagged command.
aioimaplib.Commands.setdefault(
    "NOTIFY", aioimaplib.Cmd("NOTIFY", (aioimaplib.AUTH, aioimaplib.SELECTED), aioimaplib.Exec.is_sync))

EVENTS = ("(selected (MessageNew MessageExpunge FlagChange))",
          "(personal (MessageNew MessageExpunge MailboxName))")


async def enable(connection: Connection) -> bool:
    """Ask for the pushes; False if the server refused (then only the periodic round runs)."""
    response = await connection.command("NOTIFY", "SET", *EVENTS)
    return str(response.result) == "OK"
