from __future__ import annotations

from datetime import UTC

from litestar import Controller, delete, get, post, put
from litestar.params import Parameter

from mailgate_api.deps import Resources
from mailgate_api.pagination import Page, PageSize, pages
from mailgate_api.webhooks import service
from mailgate_api.webhooks.schemas import (
    DeliveryList,
    DeliveryView,
    EndpointCreate,
    EndpointCreated,
    EndpointDeleted,
    EndpointList,
    EndpointUpdate,
    EndpointView,
    Replayed,
    ReplayRequest,
    RotateSecret,
    SecretRotated,
)
from mailgate_common.db.models import WebhookEndpoint

EventFilter = Parameter(query="event", default=None, description="EmailEngine event name")
# Endpoints and the log are the operator's: admin only, even the routes that take
# an ``account`` filter (a global endpoint's log is not an account's business).
ADMIN = {"auth": "admin"}
StatusFilter = Parameter(query="status", default=None, description="pending, retrying, delivered or failed")


class WebhookController(Controller):
    tags = ["Webhooks"]

    @post("/v1/webhooks", status_code=201, summary="Add a webhook endpoint (its secret is shown only here)")
    async def create(self, data: EndpointCreate, res: Resources) -> EndpointCreated:
        url = await service.check_url(data.url, res.settings.webhooks_allow_private)
        events = service.check_events(data.events)
        headers = service.check_headers(data.headers)
        secret = service.new_secret()
        async with res.db.transaction() as session:
            if data.account:
                await service.check_account(session, data.account, "account")
            row = WebhookEndpoint(
                id=service.new_endpoint_id(),
                url=url,
                account_id=data.account,
                description=data.description,
                events=events,
                accounts=data.accounts,
                headers=headers,
                enabled=data.enabled,
                exclude_machine=data.exclude_machine,
                secret=service.seal(res.sealer, secret),
            )
            session.add(row)
            await service.refresh(session, row)
            return EndpointCreated(**service.view(row), secret=secret)

    @get("/v1/webhooks", opt=ADMIN, summary="List webhook endpoints (never their secrets)")
    async def list_all(
        self,
        res: Resources,
        page: Page = 0,
        page_size: PageSize = 20,
        account: str | None = Parameter(default=None),
    ) -> EndpointList:
        async with res.db.sessions() as session:
            rows, total = await service.list_endpoints(session, page, page_size, account)
        return EndpointList(
            webhooks=[service.endpoint_view(r) for r in rows],
            total=total,
            page=page,
            pages=pages(total, page_size),
        )

    @get("/v1/webhooks/{endpoint_id:str}", summary="One webhook endpoint")
    async def read(self, endpoint_id: str, res: Resources) -> EndpointView:
        async with res.db.sessions() as session:
            return service.endpoint_view(await service.get_endpoint(session, endpoint_id))

    @put("/v1/webhooks/{endpoint_id:str}", summary="Change a webhook endpoint (fields left out stay)")
    async def change(self, endpoint_id: str, data: EndpointUpdate, res: Resources) -> EndpointView:
        url = None
        if data.url is not None:
            url = await service.check_url(data.url, res.settings.webhooks_allow_private)
        async with res.db.transaction() as session:
            row = await service.get_endpoint(session, endpoint_id, lock=True)
            if url is not None:
                row.url = url
            if data.description is not None:
                row.description = data.description or None
            if data.events is not None:
                row.events = service.check_events(data.events)
            if data.accounts is not None:
                row.accounts = data.accounts or None
            if data.headers is not None:
                row.headers = service.check_headers(data.headers)
            if data.enabled is not None:
                row.enabled = data.enabled
            if data.exclude_machine is not None:
                row.exclude_machine = data.exclude_machine
            await service.refresh(session, row)
            return service.endpoint_view(row)

    @delete("/v1/webhooks/{endpoint_id:str}", status_code=200,
            summary="Delete a webhook endpoint with its delivery log")
    async def remove(self, endpoint_id: str, res: Resources) -> EndpointDeleted:
        async with res.db.transaction() as session:
            await session.delete(await service.get_endpoint(session, endpoint_id))
        return EndpointDeleted(deleted=True)

    @post("/v1/webhooks/{endpoint_id:str}/rotate-secret", status_code=200,
          summary="New signing secret; during the overlap both old and new signatures are sent")
    async def rotate_secret(
        self, endpoint_id: str, res: Resources, data: RotateSecret | None = None
    ) -> SecretRotated:
        overlap = (data or RotateSecret()).overlap_seconds
        async with res.db.transaction() as session:
            row = await service.get_endpoint(session, endpoint_id, lock=True)
            secret = service.rotate(row, res.sealer, overlap)
            await service.refresh(session, row)
            return SecretRotated(
                id=row.id, secret=secret, previous_secret_expires=service.view(row)["previous_secret_expires"]
            )

    @get("/v1/webhooks/{endpoint_id:str}/deliveries", summary="Delivery log of one endpoint")
    async def endpoint_deliveries(
        self,
        endpoint_id: str,
        res: Resources,
        page: Page = 0,
        page_size: PageSize = 20,
        event: str | None = EventFilter,
        status_filter: str | None = StatusFilter,
    ) -> DeliveryList:
        async with res.db.sessions() as session:
            await service.get_endpoint(session, endpoint_id)
            query = service.deliveries_query(endpoint_id, event, status_filter, None)
            rows, total = await service.list_deliveries(session, query, page, page_size)
        return DeliveryList(deliveries=rows, total=total, page=page, pages=pages(total, page_size))

    @post("/v1/webhooks/{endpoint_id:str}/replay", status_code=200,
          summary="Deliver again every delivery of this endpoint in a status since a time")
    async def replay_endpoint(self, endpoint_id: str, data: ReplayRequest, res: Resources) -> Replayed:
        since = data.since
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        async with res.db.transaction() as session:
            await service.get_endpoint(session, endpoint_id)
            count = await service.replay_many(session, endpoint_id, since, data.status)
        return Replayed(replayed=count)

    @get("/v1/webhook-deliveries", opt=ADMIN, summary="Delivery log of every webhook, newest first")
    async def all_deliveries(
        self,
        res: Resources,
        page: Page = 0,
        page_size: PageSize = 20,
        event: str | None = EventFilter,
        status_filter: str | None = StatusFilter,
        webhook: str | None = Parameter(default=None, description="endpoint id"),
        account: str | None = Parameter(default=None),
    ) -> DeliveryList:
        async with res.db.sessions() as session:
            query = service.deliveries_query(webhook, event, status_filter, account)
            rows, total = await service.list_deliveries(session, query, page, page_size)
        return DeliveryList(deliveries=rows, total=total, page=page, pages=pages(total, page_size))

    @post("/v1/webhook-deliveries/{delivery_id:int}/replay", status_code=200,
          summary="Deliver again, with the same event id (webhook-id header)")
    async def replay_delivery(self, delivery_id: int, res: Resources) -> DeliveryView:
        async with res.db.transaction() as session:
            row = await service.replay_one(session, delivery_id)
            excerpts = await service.last_excerpts(session, [row.id])
            return service.delivery_view(row, excerpts.get(row.id))
