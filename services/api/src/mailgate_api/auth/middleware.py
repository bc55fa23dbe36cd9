"""The door check run before every /v1 handler (after routing, before parsing)."""

from __future__ import annotations

from typing import Any

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send
from sqlalchemy import select

from mailgate_api.auth import policy
from mailgate_api.auth.errors import Unauthorized
from mailgate_api.deps import Resources
from mailgate_api.errors import ApiError, not_found
from mailgate_common import tokens
from mailgate_common.db import Database
from mailgate_common.db.models import OutboxMessage

REST_SCOPE = "api"


async def _check_owner(db: Database, name: str, value: str, account: str) -> None:
    if name == "account":
        if value != account:
            raise ApiError(403, f"This token is restricted to account {account}", "account")
    elif name == "queue_id":
        async with db.sessions() as session:
            owner = await session.scalar(select(OutboxMessage.account_id).where(OutboxMessage.id == value))
        # Another account's message looks exactly like a missing one: no probing.
        if owner is not None and owner != account:
            raise not_found("Queued message", "queueId")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class TokenAuthMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        # OPTIONS only lists allowed methods; a CORS preflight never carries a token.
        if not policy.is_protected(scope["path"]) or scope.get("method") == "OPTIONS":
            await next_app(scope, receive, send)
            return
        handler: Any = scope["route_handler"]
        path_params: dict[str, Any] = scope.get("path_params") or {}
        rule = policy.access(handler, path_params)
        if rule == "public":
            await next_app(scope, receive, send)
            return
        token = policy.token_from(list(scope["headers"]), scope.get("query_string", b""))
        if token is None:
            raise Unauthorized("Missing access token: send Authorization: Bearer <token>")
        settings = self.resources.settings
        info = await tokens.verify(self.resources.db, token, settings.admin_token)
        if info is None:
            raise Unauthorized("Invalid or revoked access token")
        if not info.allows(REST_SCOPE):
            raise ApiError(403, "This token is not allowed to use the REST API (scope api)")
        client = scope.get("client")
        if not info.allows_address(client[0] if client else None):
            raise ApiError(403, "This token may not be used from this address")
        if not info.allows_referrer(_header(scope, b"referer")):
            raise ApiError(403, "This token may not be used from this referrer")
        if info.account is not None:
            if rule == "admin":
                raise ApiError(403, "This route needs an admin token, not an account token")
            for name in policy.OWNED_PATH_PARAMS:
                if name in path_params:
                    await _check_owner(self.resources.db, name, str(path_params[name]), info.account)
            if policy.needs_account_filter(handler, path_params):
                pinned = policy.pin_account(scope.get("query_string", b""), info.account)
                if pinned is None:
                    raise ApiError(403, f"This token is restricted to account {info.account}",
                                   "account")
                scope["query_string"] = pinned
        scope["auth"] = info
        await next_app(scope, receive, send)
