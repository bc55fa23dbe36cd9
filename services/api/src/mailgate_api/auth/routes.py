"""EmailEngine's admin-only token routes: create (shown once), list (never the token), revoke."""

from __future__ import annotations

from litestar import Controller, delete, get, post

from mailgate_api.auth.schemas import TokenCreate, TokenCreated, TokenDeleted, TokenList, TokenView
from mailgate_api.deps import Resources
from mailgate_api.errors import ApiError, not_found
from mailgate_common import events, tokens
from mailgate_common.db.models import Account

ADMIN = {"auth": "admin"}


class TokenController(Controller):
    tags = ["Access Tokens"]

    @post("/v1/token", status_code=200, opt=ADMIN,
          summary="Create an access token (returned once, stored only as a hash)")
    async def create(self, data: TokenCreate, res: Resources) -> TokenCreated:
        unknown = [s for s in data.scopes if s not in tokens.SCOPES]
        if unknown or not data.scopes:
            raise ApiError(422, f"scopes must be a non-empty list of {', '.join(tokens.SCOPES)}",
                           "scopes")
        async with res.db.transaction() as session:
            if data.account is not None and await session.get(Account, data.account) is None:
                raise not_found("Account", "account")
            token = await tokens.create(session, data.account, list(dict.fromkeys(data.scopes)),
                                        data.description)
        return TokenCreated(token=token)

    @get("/v1/tokens", opt=ADMIN, summary="List access tokens (never the tokens themselves)")
    async def list(self, res: Resources) -> TokenList:
        async with res.db.sessions() as session:
            rows = await tokens.list_tokens(session)
        return TokenList(tokens=[
            TokenView(id=r.id, account=r.account_id, description=r.description, scopes=list(r.scopes),
                      created=events.iso(r.created_at), last_used=events.iso(r.last_used_at))
            for r in rows
        ])

    @delete("/v1/token/{token:str}", status_code=200, opt=ADMIN,
            summary="Revoke an access token (by the token or its id)")
    async def revoke(self, token: str, res: Resources) -> TokenDeleted:
        async with res.db.transaction() as session:
            if not await tokens.revoke(session, token):
                raise not_found("Token", "token")
        return TokenDeleted(deleted=True)
