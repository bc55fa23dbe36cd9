"""EmailEngine's /v1/templates: stored templates an account (or, public, every account) sends with.

An account token sees its own templates and the public ones and writes only
its own (a template it creates is its account's, as EmailEngine enforces);
only an admin token writes public templates (``account: null``).
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, delete, get, post, put
from litestar.params import Parameter
from sqlalchemy import delete as sql_delete
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_api.auth.policy import token_account
from mailgate_api.deps import ApiRequest, Resources
from mailgate_api.errors import ApiError, not_found
from mailgate_api.pagination import Page, PageSize, pages
from mailgate_api.templates import service
from mailgate_api.templates.schemas import TemplateCreate, TemplateUpdate, ValidateRequest, ValidateResponse
from mailgate_common import events
from mailgate_common.db.models import Account, Template

ACCOUNT_ROUTE = {"auth": "account"}  # the handler decides, per template, what the token may do


def _caller(request: ApiRequest) -> str | None:
    return token_account(request.scope)


def _summary(row: Template) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "description": row.description, "format": row.format,
            "created": events.iso(row.created_at), "updated": events.iso(row.updated_at)}


def _not_found(template: str) -> ApiError:
    return ApiError(404, f"Requested template was not found [{template}]", "template", code="TemplateNotFound")


async def _for_change(session: AsyncSession, template: str, request: ApiRequest, verb: str) -> Template:
    """The template, locked, if the caller may ``verb`` it: 404 if it cannot see it, 403 if public."""
    row = await session.get(Template, template, with_for_update=True)
    if row is None or not service.visible(row, _caller(request)):
        raise _not_found(template)
    if not service.writable(row, _caller(request)):
        raise ApiError(403, f"Only an admin token can {verb} a public template", "template")
    return row


class TemplateController(Controller):
    tags = ["Templates"]

    @get("/v1/templates", summary="List an account's templates (no account: the public ones)")
    async def list(self, res: Resources, account: Annotated[str | None, Parameter(max_length=256)] = None,
                   page: Page = 0, page_size: PageSize = 20) -> dict[str, Any]:
        owner = account or None
        where = Template.account_id == owner if owner else Template.account_id.is_(None)
        async with res.db.sessions() as session:
            total = await session.scalar(select(func.count()).select_from(Template).where(where)) or 0
            rows = await session.scalars(select(Template).where(where)
                                         .order_by(Template.created_at, Template.id)
                                         .offset(page * page_size).limit(page_size))
            return {"account": owner, "total": total, "page": page, "pages": pages(total, page_size),
                    "templates": [_summary(r) for r in rows]}

    @get("/v1/templates/template/{template:str}", summary="Template with its content", opt=ACCOUNT_ROUTE)
    async def read(self, template: str, request: ApiRequest, res: Resources) -> dict[str, Any]:
        async with res.db.sessions() as session:
            row = await session.get(Template, template)
            if row is None or not service.visible(row, _caller(request)):
                raise _not_found(template)
            return {**_summary(row), "account": row.account_id, "inlineCss": bool(row.inline_css),
                    "content": row.content}

    @post("/v1/templates/template", status_code=200, summary="Create a template", opt=ACCOUNT_ROUTE)
    async def create(self, data: TemplateCreate, request: ApiRequest, res: Resources) -> dict[str, Any]:
        caller = _caller(request)
        # EmailEngine: an account token's template is its account's, whatever the body says.
        owner = caller if caller is not None else (data.account or None)
        content = service.content_dict(data.content)
        service.check(content)
        async with res.db.transaction() as session:
            if owner is not None and await session.get(Account, owner) is None:
                raise not_found("Account", "account")
            row = Template(id=service.new_id(), account_id=owner, name=data.name, description=data.description,
                           format=data.format, content=content, inline_css=data.inline_css)
            session.add(row)
        return {"created": True, "account": owner, "id": row.id}

    @put("/v1/templates/template/{template:str}", summary="Update a template (only what is given)",
         opt=ACCOUNT_ROUTE)
    async def update(self, template: str, data: TemplateUpdate, request: ApiRequest,
                     res: Resources) -> dict[str, Any]:
        content = service.content_dict(data.content) if data.content is not None else None
        if content is not None:
            service.check(content)
        async with res.db.transaction() as session:
            row = await _for_change(session, template, request, "change")
            if data.name is not None:
                row.name = data.name
            if data.description is not None:
                row.description = data.description
            if data.format is not None:
                row.format = data.format
            if content is not None:
                row.content = content
            if data.inline_css is not None:
                row.inline_css = data.inline_css
            row.updated_at = events.utcnow()
            return {"updated": True, "account": row.account_id, "id": row.id}

    @delete("/v1/templates/template/{template:str}", status_code=200, summary="Remove a template",
            opt=ACCOUNT_ROUTE)
    async def remove(self, template: str, request: ApiRequest, res: Resources) -> dict[str, Any]:
        async with res.db.transaction() as session:
            row = await _for_change(session, template, request, "remove")
            owner = row.account_id
            await session.delete(row)
        return {"deleted": True, "account": owner, "id": template}

    @delete("/v1/templates/account/{account:str}", status_code=200, summary="Remove all of an account's templates")
    async def flush(self, account: str, res: Resources,
                    force: Annotated[bool, Parameter(default=False)] = False) -> dict[str, Any]:
        if not force:
            raise ApiError(400, "Set the force=true query parameter to flush account templates", "force",
                           code="ForceRequired")
        async with res.db.transaction() as session:
            if await session.get(Account, account) is None:
                raise not_found("Account", "account")
            await session.execute(sql_delete(Template).where(Template.account_id == account))
        return {"flushed": True, "account": account}

    @post("/v1/templates/template/{template:str}/validate", status_code=200, opt=ACCOUNT_ROUTE,
          summary="Render a template with test params (nothing is sent)")
    async def validate(self, template: str, request: ApiRequest, res: Resources,
                       data: ValidateRequest | None = None) -> ValidateResponse:
        async with res.db.sessions() as session:
            row = await session.get(Template, template)
            if row is None or not service.visible(row, _caller(request)):
                raise _not_found(template)
            account = await session.get(Account, row.account_id) if row.account_id else None
        params = data.params if data is not None else {}
        return service.validate(row, params, account, res.settings.service_url)
