from __future__ import annotations

from litestar import Controller, delete, get
from litestar.params import Parameter

from mailgate_api.auth.policy import is_admin
from mailgate_api.deps import ApiRequest, Resources
from mailgate_api.outbox import service
from mailgate_api.outbox.schemas import OutboxDeleted, OutboxEntry, OutboxList, TimelineView
from mailgate_api.outbox.timeline import timeline
from mailgate_api.pagination import Page, PageSize, pages


class OutboxController(Controller):
    tags = ["Outbox"]

    @get("/v1/outbox", summary="Messages waiting to be sent (state=all includes finished ones)")
    async def list(
        self,
        res: Resources,
        page: Page = 0,
        page_size: PageSize = 20,
        account: str | None = Parameter(default=None),
        state_filter: str | None = Parameter(query="state", default=None),
    ) -> OutboxList:
        async with res.db.sessions() as session:
            rows, total = await service.list_entries(session, page, page_size, account, state_filter)
        return OutboxList(
            messages=[service.entry(r) for r in rows],
            total=total,
            page=page,
            pages=pages(total, page_size),
        )

    @get("/v1/outbox/{queue_id:str}", summary="One outbox entry with every delivery attempt")
    async def read(self, queue_id: str, res: Resources, request: ApiRequest) -> OutboxEntry:
        async with res.db.sessions() as session:
            return await service.get_entry(session, queue_id, is_admin(request.scope))

    @get("/v1/outbox/{queue_id:str}/timeline", summary="Every step of one message, oldest first")
    async def timeline(self, queue_id: str, res: Resources, request: ApiRequest) -> TimelineView:
        async with res.db.sessions() as session:
            row = await service.get_row(session, queue_id)
            steps = await timeline(session, row, is_admin(request.scope))
            return TimelineView(queue_id=row.id, state=row.state, timeline=steps)

    @delete("/v1/outbox/{queue_id:str}", status_code=200,
            summary="Cancel a queued or scheduled message (deleted: false when there is none waiting)")
    async def cancel(self, queue_id: str, res: Resources) -> OutboxDeleted:
        async with res.db.transaction() as session:
            return OutboxDeleted(deleted=await service.cancel(session, queue_id))
