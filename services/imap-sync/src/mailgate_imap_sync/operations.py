"""Mailbox operations the api asks for (``rpc.imap.command``), run on the account's
command connection (``commands.CommandConnections``: one kept login per account).

Each operation is a plain function ``(ctx, account, args, raw) -> Result`` in
``HANDLERS``, named by the ``op`` of the request; its answer is EmailEngine's
response body for the route that asked.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mailgate_common import events
from mailgate_common.bus import RpcReply
from mailgate_imap_sync.commands import Commands


@dataclass(frozen=True, slots=True)
class Result:
    """An operation's answer: a JSON body and the HTTP status the api should give it."""

    body: Any
    status: int = 200


class OperationError(Exception):
    """A refusal the api passes on as EmailEngine's error body (``code`` like "MessageNotFound")."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


Handler = Callable[[Commands, str, dict[str, Any], bytes | None], Awaitable[Result]]

HANDLERS: dict[str, Handler] = {}


def reply(result: Result) -> RpcReply:
    return RpcReply(json.dumps(result.body).encode(), result.status, "application/json")


async def run(commands: Commands, event: events.ImapCommand) -> RpcReply:
    handler = HANDLERS.get(event.op)
    if handler is None or event.account is None:
        return reply(Result({"error": f"unknown operation {event.op!r}", "code": "UnknownOperation"}, 400))
    try:
        return reply(await handler(commands, event.account, event.args, event.raw))
    except OperationError as exc:
        body = {"error": str(exc), "code": exc.code}
        field = getattr(exc, "field", None)
        if field:
            body["field"] = field
        return reply(Result(body, exc.status))


# The operations register themselves in HANDLERS on import.
from mailgate_imap_sync import ops_mailboxes, ops_messages, verify  # noqa: E402, F401
