"""EmailEngine's SMTP gateways: extra SMTP servers a submit names with ``gateway``.

The password is sealed like account credentials (``{"pass": ...}``) and read
back only as EmailEngine's mask; the sender keeps ``deliveries``, ``lastUse``
and ``lastError`` up to date.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, delete, get, post, put
from sqlalchemy import func, select

from mailgate_api.deps import Resources
from mailgate_api.errors import invalid, not_found
from mailgate_api.pagination import Page, PageSize, pages
from mailgate_common import events
from mailgate_common.db.models import Gateway

MASKED = "******"
GatewayId = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[\w.@+-]+$")]
Host = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.:\[\]_-]+$")]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Text = Annotated[str, msgspec.Meta(max_length=256)]
Secret = Annotated[str, msgspec.Meta(max_length=1024)]


class GatewayCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    gateway: GatewayId
    name: Text
    host: Host
    port: Port
    user: Text | None = None
    pass_: Secret | None = msgspec.field(name="pass", default=None)
    secure: bool = False


class GatewayUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Text | None = None
    host: Host | None = None
    port: Port | None = None
    user: Text | None = None
    pass_: Secret | msgspec.UnsetType | None = msgspec.field(name="pass", default=msgspec.UNSET)
    secure: bool | None = None


def _summary(row: Gateway) -> dict[str, Any]:
    return {"gateway": row.id, "name": row.name, "deliveries": row.deliveries,
            "lastUse": events.iso(row.last_use), "lastError": row.last_error}


def _details(row: Gateway) -> dict[str, Any]:
    found = _summary(row)
    found.update(host=row.host, port=row.port, secure=row.secure)
    if row.username:
        found["user"] = row.username
    if row.credentials:
        found["pass"] = MASKED
    if found["lastError"] is None:
        del found["lastError"]
    return found


class GatewayController(Controller):
    tags = ["SMTP Gateway"]

    @get("/v1/gateways", summary="List gateways")
    async def list(self, res: Resources, page: Page = 0, page_size: PageSize = 20) -> dict[str, Any]:
        async with res.db.sessions() as session:
            total = await session.scalar(select(func.count()).select_from(Gateway)) or 0
            rows = await session.scalars(select(Gateway).order_by(Gateway.id)
                                         .offset(page * page_size).limit(page_size))
            return {"total": total, "page": page, "pages": pages(total, page_size),
                    "gateways": [_summary(r) for r in rows]}

    @get("/v1/gateway/{gateway:str}", summary="Gateway info (the password masked)")
    async def read(self, gateway: str, res: Resources) -> dict[str, Any]:
        async with res.db.sessions() as session:
            row = await session.get(Gateway, gateway)
            if row is None:
                raise not_found("Gateway", "gateway")
            return _details(row)

    @post("/v1/gateway", status_code=200, summary="Register a gateway (updates an existing one)")
    async def create(self, data: GatewayCreate, res: Resources) -> dict[str, Any]:
        if data.pass_ == MASKED:
            raise invalid("pass", f"send the password itself, not the mask {MASKED!r}")
        async with res.db.transaction() as session:
            row = await session.get(Gateway, data.gateway, with_for_update=True)
            existed = row is not None
            if row is None:
                row = Gateway(id=data.gateway, host=data.host, port=data.port)
                session.add(row)
            row.name, row.host, row.port, row.secure = data.name, data.host, data.port, data.secure
            row.username = data.user or None
            row.credentials = res.sealer.seal({"pass": data.pass_}) if data.pass_ else None
        return {"gateway": data.gateway, "state": "existing" if existed else "new"}

    @put("/v1/gateway/edit/{gateway:str}", summary="Update a gateway")
    async def update(self, gateway: str, data: GatewayUpdate, res: Resources) -> dict[str, Any]:
        async with res.db.transaction() as session:
            row = await session.get(Gateway, gateway, with_for_update=True)
            if row is None:
                raise not_found("Gateway", "gateway")
            for attr, column in (("name", "name"), ("host", "host"), ("port", "port"),
                                 ("secure", "secure"), ("user", "username")):
                value = getattr(data, attr)
                if value is not None:
                    setattr(row, column, value)
            # The mask GET hands out means "unchanged"; null or "" removes the password.
            if data.pass_ is not msgspec.UNSET and data.pass_ != MASKED:
                row.credentials = res.sealer.seal({"pass": data.pass_}) if data.pass_ else None
        return {"gateway": gateway}

    @delete("/v1/gateway/{gateway:str}", status_code=200, summary="Remove a gateway")
    async def remove(self, gateway: str, res: Resources) -> dict[str, Any]:
        async with res.db.transaction() as session:
            row = await session.get(Gateway, gateway)
            if row is None:
                raise not_found("Gateway", "gateway")
            await session.delete(row)
        return {"gateway": gateway, "deleted": True}
