"""/v1/inbound: the routes the MX door follows, and the messages it received.

Routes are the operator's (admin token) or an account's: an account token sees
and writes only routes with its ``account``, whose webhook actions may only name
its account's endpoints.  Received messages are the operator's (admin only):
one message may go to several accounts' routes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any
from urllib.parse import quote

import msgspec
from litestar import Controller, Response, delete, get, post, put
from litestar.params import Parameter
from sqlalchemy import func, select

from mailgate_api.auth.policy import token_account
from mailgate_api.deps import ApiRequest, Resources
from mailgate_api.errors import ApiError, invalid
from mailgate_api.inbound import service
from mailgate_api.inbound.schemas import (
    MessageDeleted,
    MessageList,
    Released,
    RouteCreate,
    RouteDeleted,
    RouteList,
    RouteTest,
    RouteTestResult,
    RouteUpdate,
    RouteView,
)
from mailgate_api.pagination import Page, PageSize, pages
from mailgate_common import events
from mailgate_common.db.models import InboundMessage, InboundRoute
from mailgate_common.event_relay import stage
from mailgate_common.inbound import routes as engine

ACCOUNT_ROUTE = {"auth": "account"}  # the handler checks, per route, what the token may do
ADMIN = {"auth": "admin"}


def _caller(request: ApiRequest) -> str | None:
    return token_account(request.scope)


class InboundRouteController(Controller):
    tags = ["Inbound routes"]

    @post("/v1/inbound/routes", status_code=201, opt=ACCOUNT_ROUTE,
          summary="Add an inbound route (what the MX door accepts and where the mail goes)")
    async def create(self, data: RouteCreate, request: ApiRequest, res: Resources) -> RouteView:
        caller = _caller(request)
        if caller is not None and data.account not in (None, caller):
            raise ApiError(403, f"This token is restricted to account {caller}", "account")
        owner = caller if caller is not None else data.account
        criteria, actions = service.parse(data.match, data.actions)
        async with res.db.transaction() as session:
            if owner is not None:
                await service.check_account(session, owner)
            await service.check_endpoints(session, actions, owner, caller)
            row = InboundRoute(
                id=service.new_route_id(),
                account_id=owner,
                name=data.name,
                description=data.description,
                enabled=data.enabled,
                priority=data.priority,
                match=criteria.as_json(),
                domain=criteria.domain,
                actions=[action.as_json() for action in actions],
                max_size=data.max_size,
            )
            session.add(row)
            await session.flush()
            await session.refresh(row)
            return service.route_view(row)

    @get("/v1/inbound/routes", summary="List inbound routes in the order they run (priority, then age)")
    async def list_routes(
        self,
        res: Resources,
        page: Page = 0,
        page_size: PageSize = 20,
        account: Annotated[str | None, Parameter(max_length=256)] = None,
    ) -> RouteList:
        # An account token's ``account`` is pinned to its own by the auth middleware.
        async with res.db.sessions() as session:
            rows, total = await service.list_routes(session, account or None, page, page_size)
        return RouteList(routes=[service.route_view(r) for r in rows], total=total, page=page,
                         pages=pages(total, page_size))

    @get("/v1/inbound/routes/{route_id:str}", opt=ACCOUNT_ROUTE, summary="One inbound route")
    async def read(self, route_id: str, request: ApiRequest, res: Resources) -> RouteView:
        async with res.db.sessions() as session:
            return service.route_view(await service.get_route(session, route_id, _caller(request)))

    @put("/v1/inbound/routes/{route_id:str}", opt=ACCOUNT_ROUTE,
         summary="Change an inbound route (fields left out stay; match and actions replace as a whole)")
    async def change(self, route_id: str, data: RouteUpdate, request: ApiRequest, res: Resources) -> RouteView:
        caller = _caller(request)
        async with res.db.transaction() as session:
            row = await service.get_route(session, route_id, caller, lock=True)
            criteria, actions = service.parse(
                data.match if data.match is not None else row.match,
                data.actions if data.actions is not None else row.actions,
            )
            if data.actions is not None:
                await service.check_endpoints(session, actions, row.account_id, caller)
            row.match = criteria.as_json()
            row.domain = criteria.domain
            row.actions = [action.as_json() for action in actions]
            if data.name is not None:
                row.name = data.name
            if data.description is not msgspec.UNSET:
                row.description = data.description or None
            if data.enabled is not None:
                row.enabled = data.enabled
            if data.priority is not None:
                row.priority = data.priority
            if data.max_size is not msgspec.UNSET:
                row.max_size = data.max_size
            row.updated_at = events.utcnow()
            await session.flush()
            await session.refresh(row)
            return service.route_view(row)

    @delete("/v1/inbound/routes/{route_id:str}", status_code=200, opt=ACCOUNT_ROUTE,
            summary="Delete an inbound route (its recipients are refused from then on unless another matches)")
    async def remove(self, route_id: str, request: ApiRequest, res: Resources) -> RouteDeleted:
        async with res.db.transaction() as session:
            await session.delete(await service.get_route(session, route_id, _caller(request), lock=True))
        return RouteDeleted(deleted=True, id=route_id)

    @post("/v1/inbound/routes/{route_id:str}/test", status_code=200, opt=ACCOUNT_ROUTE,
          summary="Dry run: which routes would take mail for this recipient (nothing is received or sent)")
    async def test(self, route_id: str, data: RouteTest, request: ApiRequest, res: Resources) -> RouteTestResult:
        caller = _caller(request)
        async with res.db.sessions() as session:
            row = await service.get_route(session, route_id, caller)
        try:
            this = engine.route_from_row(row)
        except engine.RouteError as exc:
            raise invalid(exc.field, exc.message) from None
        table = await engine.load(res.db)
        # The route under test takes part even while disabled: try it before turning it on.
        others = [r for r in table.routes if r.id != this.id]
        run = service.dry_run(engine.RouteTable([*others, replace(this, enabled=True)]), data.recipient,
                              data.headers, service.auth_results(data.auth))
        owners = {r.id: r.account for r in [*others, this]}
        shown = [t for t in run.tested if caller is None or owners.get(t.id) == caller]
        for tested in shown:
            if tested.id == this.id:
                tested.enabled = row.enabled
        notes = list(run.notes)
        if not row.enabled:
            notes.append("this route is disabled: it was tested as if enabled")
        return RouteTestResult(
            recipient=data.recipient,
            rcpt=run.rcpt,
            rcpt_reply=run.rcpt_reply,
            route=next((t for t in shown if t.id == this.id), None),
            routes=shown,
            hidden_routes=len(run.tested) - len(shown),
            notes=notes,
        )


HeldFilter = Parameter(query="held", default=None, description="true: held messages only; false: the others")
RouteFilter = Parameter(query="route", default=None, description="messages a route took (its id)")


class InboundMessageController(Controller):
    tags = ["Inbound messages"]

    @get("/v1/inbound/messages", opt=ADMIN, summary="Received messages, newest first")
    async def list_messages(
        self,
        res: Resources,
        page: Page = 0,
        page_size: PageSize = 20,
        held: bool | None = HeldFilter,
        route: str | None = RouteFilter,
    ) -> MessageList:
        conditions: list[Any] = []
        if held is not None:
            conditions.append(InboundMessage.held.is_(held))
        if route:
            conditions.append(InboundMessage.deliveries.contains([{"route": route}]))
        # Only the summary columns: a page of messages must not read their raw bodies.
        columns = [c for c in InboundMessage.__table__.c if c.name != "raw"]
        async with res.db.sessions() as session:
            total = await session.scalar(select(func.count()).select_from(InboundMessage).where(*conditions)) or 0
            rows = (await session.execute(
                select(*columns).where(*conditions)
                .order_by(InboundMessage.received_at.desc(), InboundMessage.id.desc())
                .offset(page * page_size).limit(page_size)
            )).all()
        return MessageList(messages=[service.message_summary(r) for r in rows],
                           total=total, page=page, pages=pages(total, page_size))

    @get("/v1/inbound/messages/{message_id:str}", opt=ADMIN,
         summary="One received message: envelope, verdicts, routes and a parsed summary")
    async def read(self, message_id: str, request: ApiRequest, res: Resources) -> dict[str, Any]:
        async with res.db.sessions() as session:
            row = await session.get(InboundMessage, message_id)
        if row is None:
            raise service.message_not_found(message_id)
        base = (res.settings.service_url or str(request.base_url)).rstrip("/")
        return {
            **msgspec.to_builtins(service.message_summary(row)),
            "remoteIp": row.remote_ip,
            "helo": row.helo,
            "tls": row.tls,
            "authResults": row.auth,
            "spam": row.spam,
            "message": service.parsed_summary(row, base),
        }

    @get("/v1/inbound/messages/{message_id:str}/raw", opt=ADMIN, media_type="message/rfc822",
         summary="The received message as RFC 822 (as stored, with its Authentication-Results)")
    async def raw(self, message_id: str, res: Resources) -> Response[bytes]:
        async with res.db.sessions() as session:
            raw = await session.scalar(select(InboundMessage.raw).where(InboundMessage.id == message_id))
        if raw is None:
            raise service.message_not_found(message_id)
        return Response(raw, media_type="message/rfc822",
                        headers={"Content-Disposition": f"attachment; filename={quote(message_id)}.eml"})

    @get("/v1/inbound/messages/{message_id:str}/attachments/{n:int}", opt=ADMIN,
         summary="The n-th attachment's bytes (0-based, MIME tree order: the webhook body's url)")
    async def attachment(self, message_id: str, n: int, res: Resources) -> Response[bytes]:
        async with res.db.sessions() as session:
            row = await session.get(InboundMessage, message_id)
        if row is None:
            raise service.message_not_found(message_id)
        found = service.attachment(row, n)
        filename = found.filename or f"attachment-{n}"
        return Response(found.data, media_type=found.content_type, headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}"})

    @delete("/v1/inbound/messages/{message_id:str}", status_code=200, opt=ADMIN,
            summary="Delete a received message (held or not)")
    async def remove(self, message_id: str, res: Resources) -> MessageDeleted:
        async with res.db.transaction() as session:
            row = await session.get(InboundMessage, message_id, with_for_update=True)
            if row is None:
                raise service.message_not_found(message_id)
            await session.delete(row)
        return MessageDeleted(deleted=True, id=message_id)

    @post("/v1/inbound/messages/{message_id:str}/release", status_code=200, opt=ADMIN,
          summary="Release a held message: its routes' webhooks are called as the MX door would have")
    async def release(self, message_id: str, res: Resources) -> Released:
        async with res.db.transaction() as session:
            row = await session.get(InboundMessage, message_id, with_for_update=True)
            if row is None:
                raise service.message_not_found(message_id)
            if not row.held:
                raise ApiError(409, f"Inbound message {message_id} is not held", "id", code="NotHeld")
            row.held = False
            staged = await service.release_events(session, row)
            stage(session, *staged)
        await res.relay.publish_committed(staged)
        return Released(released=True, id=message_id, events=[
            {"id": e.id, "route": e.route, "endpoints": e.endpoints, "payload": e.payload} for e in staged])
