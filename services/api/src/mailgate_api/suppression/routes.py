"""GET/POST/DELETE the suppression list of one account (/v1/account/{account}/...) or the
global one (/v1/suppressions, admin only) that applies to every account."""

from __future__ import annotations

from litestar import Controller, delete, get, post

from mailgate_api.deps import Resources
from mailgate_api.pagination import Page, PageSize, pages
from mailgate_api.suppression import service
from mailgate_api.suppression.schemas import SuppressionDeleted, SuppressionIn, SuppressionList, SuppressionView
from mailgate_common import suppression


async def _list(res: Resources, account: str | None, page: int, page_size: int) -> SuppressionList:
    async with res.db.sessions() as session:
        await service.check_account(session, account)
        entries, total = await suppression.list_entries(session, account, page * page_size, page_size)
    return SuppressionList(
        suppressions=[service.view(e) for e in entries], total=total, page=page, pages=pages(total, page_size)
    )


class SuppressionController(Controller):
    tags = ["Suppression list"]

    @get("/v1/account/{account:str}/suppressions", summary="Addresses this account never mails")
    async def list_account(
        self, account: str, res: Resources, page: Page = 0, page_size: PageSize = 20
    ) -> SuppressionList:
        return await _list(res, account, page, page_size)

    @post("/v1/account/{account:str}/suppressions", status_code=200, summary="Suppress an address for this account")
    async def add_account(self, account: str, data: SuppressionIn, res: Resources) -> SuppressionView:
        async with res.db.transaction() as session:
            return await service.add(session, account, data)

    @delete(
        "/v1/account/{account:str}/suppressions/{address:str}",
        status_code=200,
        summary="Mail this address again from this account",
    )
    async def remove_account(self, account: str, address: str, res: Resources) -> SuppressionDeleted:
        async with res.db.transaction() as session:
            await service.remove(session, account, address)
        return SuppressionDeleted(deleted=True)

    @get("/v1/suppressions", summary="Addresses no account mails (global list)")
    async def list_global(self, res: Resources, page: Page = 0, page_size: PageSize = 20) -> SuppressionList:
        return await _list(res, None, page, page_size)

    @post("/v1/suppressions", status_code=200, summary="Suppress an address for every account")
    async def add_global(self, data: SuppressionIn, res: Resources) -> SuppressionView:
        async with res.db.transaction() as session:
            return await service.add(session, None, data)

    @delete("/v1/suppressions/{address:str}", status_code=200, summary="Remove an address from the global list")
    async def remove_global(self, address: str, res: Resources) -> SuppressionDeleted:
        async with res.db.transaction() as session:
            await service.remove(session, None, address)
        return SuppressionDeleted(deleted=True)
