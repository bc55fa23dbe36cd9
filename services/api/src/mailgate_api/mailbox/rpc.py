"""Asking imap-sync to run a mailbox operation (``rpc.imap.command``) and turning its
answer into the route's: EmailEngine's body, or its error with ``code``."""

from __future__ import annotations

import json
from typing import Any

from mailgate_api.deps import Resources
from mailgate_api.errors import ApiError
from mailgate_common import events
from mailgate_common.db.models import IndexedMessage


def located(row: IndexedMessage) -> dict[str, Any]:
    """Where an indexed message is, as the message operations take it."""
    return {"path": row.path, "uid": row.uid, "uidValidity": row.uidvalidity}


async def command(res: Resources, account: str, op: str, args: dict[str, Any],
                  raw: bytes | None = None) -> dict[str, Any]:
    try:
        reply = await res.bus.request(events.ImapCommand(account=account, op=op, args=args, raw=raw),
                                      res.settings.imap_fetch_timeout)
    except TimeoutError as exc:
        raise ApiError(504, "The mail server did not answer in time", code="Timeout") from exc
    try:
        body = json.loads(reply.body)
    except ValueError as exc:
        raise ApiError(502, "imap-sync answered something that is not JSON", code="ServerBug") from exc
    if reply.status != 200:
        detail = body if isinstance(body, dict) else {}
        raise ApiError(reply.status, str(detail.get("error") or "The operation failed"),
                       detail.get("field"), code=str(detail.get("code") or "OperationFailed"))
    if not isinstance(body, dict):
        raise ApiError(502, "imap-sync answered something that is not an object", code="ServerBug")
    return body
