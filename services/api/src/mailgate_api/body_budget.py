"""Request bodies held in memory at once, bounded (``MAILGATE_API_BODY_BUDGET``).

A submit with a 25 MB attachment costs several copies of it (the JSON body,
the decoded base64, the MIME built from it), so a burst of them could exhaust
the pod's memory.  Before a request's body is read, its size (the declared
Content-Length, or the largest body accepted when none is declared) is
reserved from the budget; a request that cannot get its share within
``WAIT`` seconds is answered 503 with Retry-After, and nothing is stored.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

from mailgate_api.errors import error_body
from mailgate_common.budget import Budget

# The body, its decoded form and the message built from it.
COPIES = 3
WAIT = 10.0
RETRY_AFTER = b"5"
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def body_budget(budget: Budget, max_body: int) -> Callable[[ASGIApp], ASGIApp]:
    """An ASGI middleware factory for litestar's ``middleware=[...]``."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def handle(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP or scope.get("method") not in _WITH_BODY:
                await app(scope, receive, send)
                return
            length = _declared_length(scope)
            size = COPIES * min(max_body, length if length is not None else max_body)
            try:
                async with budget.reserve(size, wait=WAIT):
                    await app(scope, receive, send)
                    return
            except TimeoutError:
                pass
            body = msgspec.json.encode(error_body(
                503, "Too many large requests are being handled; nothing was stored, retry shortly"))
            start: HTTPResponseStartEvent = {"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"retry-after", RETRY_AFTER),
                (b"content-length", str(len(body)).encode())]}
            await send(start)
            end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
            await send(end)

        return handle

    return middleware
