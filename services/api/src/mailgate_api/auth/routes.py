"""EmailEngine's admin-only token routes: create (shown once), list and read (never the token),
revoke; the current ``/v1/tokens`` API and the deprecated ``/v1/token`` aliases."""

from __future__ import annotations

import json
import re
from typing import Any

from litestar import Controller, delete, get, post

from mailgate_api.auth.schemas import (
    TokenAccess,
    TokenCreate,
    TokenCreated,
    TokenDeleted,
    TokenList,
    TokenView,
    check_create,
)
from mailgate_api.deps import Resources
from mailgate_api.errors import ApiError, not_found
from mailgate_api.pagination import Page, PageSize, pages
from mailgate_common import events, tokens
from mailgate_common.db.models import Account, ApiToken

ADMIN = {"auth": "admin"}
TOKEN_ID = re.compile(r"[0-9a-fA-F]{64}")


def _metadata(value: Any) -> str | None:
    # Stored as jsonb; EmailEngine hands it back as the JSON string it was given.
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def token_view(row: ApiToken) -> TokenView:
    last_used = events.iso(row.last_used_at)
    return TokenView(
        id=row.id, account=row.account_id, description=row.description, scopes=list(row.scopes),
        metadata=_metadata(row.metadata_), restrictions=row.restrictions, ip=row.ip,
        created=events.iso(row.created_at), access=TokenAccess(time=last_used), last_used=last_used,
    )


async def _create(data: TokenCreate, res: Resources, strict: bool) -> TokenCreated:
    scopes = data.scope_list()
    unknown = [s for s in scopes if s not in tokens.SCOPES]
    if unknown or not scopes:
        raise ApiError(400, f"scopes: must be a non-empty list of {', '.join(tokens.SCOPES)}", "scopes")
    restrictions = check_create(data, strict)
    metadata = data.metadata or None
    async with res.db.transaction() as session:
        if data.account is not None and await session.get(Account, data.account) is None:
            raise not_found("Account", "account")
        token = await tokens.create(
            session, data.account, scopes, (data.description or "").strip() or None,
            metadata=metadata, restrictions=restrictions,
            ip=(data.ip or "").strip() or None,
        )
    return TokenCreated(token=token, id=tokens.hash_token(token))


async def _revoke(token: str, res: Resources) -> TokenDeleted:
    async with res.db.transaction() as session:
        if not await tokens.revoke(session, token):
            raise not_found("Token", "token")
    return TokenDeleted(deleted=True)


class TokenController(Controller):
    tags = ["Access Tokens"]

    @post("/v1/tokens", status_code=200, opt=ADMIN,
          summary="Create an access token (returned once, stored only as a hash)")
    async def create(self, data: TokenCreate, res: Resources) -> TokenCreated:
        return await _create(data, res, strict=True)

    @post("/v1/token", status_code=200, opt=ADMIN, deprecated=True,
          summary="Create an access token (deprecated path of POST /v1/tokens)")
    async def create_deprecated(self, data: TokenCreate, res: Resources) -> TokenCreated:
        return await _create(data, res, strict=False)

    @get("/v1/tokens", opt=ADMIN, summary="List access tokens (never the tokens themselves)")
    async def list(self, res: Resources, page: Page = 0, page_size: PageSize = 20) -> TokenList:
        async with res.db.sessions() as session:
            rows = await tokens.list_tokens(session)
        chunk = rows[page * page_size:(page + 1) * page_size]
        return TokenList(tokens=[token_view(r) for r in chunk], total=len(rows), page=page,
                         pages=pages(len(rows), page_size))

    @get("/v1/tokens/{token:str}", opt=ADMIN, summary="One access token's record (by its id)")
    async def read(self, token: str, res: Resources) -> TokenView:
        if not TOKEN_ID.fullmatch(token):
            raise ApiError(400, "token: must be a token id (64 hex characters)", "token")
        async with res.db.sessions() as session:
            row = await tokens.get(session, token.lower())
        if row is None:
            raise not_found("Token", "token")
        return token_view(row)

    @get("/v1/tokens/account/{account:str}", opt=ADMIN, deprecated=True,
         summary="An account's access tokens (deprecated)")
    async def list_for_account(self, account: str, res: Resources) -> TokenList:
        async with res.db.sessions() as session:
            rows = await tokens.list_tokens(session)
        return TokenList(tokens=[token_view(r) for r in rows if r.account_id == account])

    @delete("/v1/tokens/{token:str}", status_code=200, opt=ADMIN,
            summary="Revoke an access token (by the token or its id)")
    async def revoke(self, token: str, res: Resources) -> TokenDeleted:
        return await _revoke(token, res)

    @delete("/v1/token/{token:str}", status_code=200, opt=ADMIN, deprecated=True,
            summary="Revoke an access token (deprecated path of DELETE /v1/tokens/{token})")
    async def revoke_deprecated(self, token: str, res: Resources) -> TokenDeleted:
        return await _revoke(token, res)
