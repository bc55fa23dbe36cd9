"""EmailEngine's per-list blocklists (/v1/blocklists, /v1/blocklist/{listId}); admin only.

A list exists through its entries, as in EmailEngine: listing or deleting from
a list that has none is a 404.  Changes made here are the caller's own and are
not announced (EmailEngine sends listUnsubscribe / listSubscribe only for the
recipient's own requests).
"""

from __future__ import annotations

from litestar import Controller, delete, get, post

from mailgate_api.blocklists import service
from mailgate_api.blocklists.schemas import (
    BlocklistAdd,
    BlocklistAdded,
    BlocklistDeleted,
    BlocklistPage,
    BlocklistsPage,
    BlocklistSummary,
)
from mailgate_api.deps import Resources
from mailgate_api.pagination import Page, PageSize, pages
from mailgate_common import blocklist


class BlocklistController(Controller):
    tags = ["Blocklists"]

    @get("/v1/blocklists", summary="List blocklists with the number of blocked addresses on each")
    async def list_lists(self, res: Resources, page: Page = 0, page_size: PageSize = 20) -> BlocklistsPage:
        async with res.db.sessions() as session:
            found, total = await blocklist.lists(session, page * page_size, page_size)
        return BlocklistsPage(total=total, page=page, pages=pages(total, page_size),
                              blocklists=[BlocklistSummary(list_id=name, count=count) for name, count in found])

    @get("/v1/blocklist/{list_id:str}", summary="List the addresses blocked on a list (newest first)")
    async def list_entries(self, list_id: str, res: Resources, page: Page = 0,
                           page_size: PageSize = 20) -> BlocklistPage:
        service.valid_list_id(list_id)
        async with res.db.sessions() as session:
            found, total = await blocklist.entries(session, list_id, page * page_size, page_size)
        if total == 0:
            raise service.not_found()
        return BlocklistPage(list_id=list_id, total=total, page=page, pages=pages(total, page_size),
                             addresses=[service.view(e) for e in found])

    @post("/v1/blocklist/{list_id:str}", status_code=200,
          summary="Block an address on a list: mail merges with this listId skip it")
    async def add(self, list_id: str, data: BlocklistAdd, res: Resources) -> BlocklistAdded:
        service.valid_list_id(list_id)
        async with res.db.transaction() as session:
            added = await service.add(session, list_id, data)
        return BlocklistAdded(success=True, added=added)

    @delete("/v1/blocklist/{list_id:str}", status_code=200, summary="Unblock an address on a list")
    async def remove(self, list_id: str, res: Resources, recipient: str | None = None) -> BlocklistDeleted:
        service.valid_list_id(list_id)
        address = service.valid_recipient(recipient)
        async with res.db.transaction() as session:
            if not await blocklist.exists(session, list_id):
                raise service.not_found()
            deleted = await blocklist.remove(session, list_id, address)
        return BlocklistDeleted(deleted=deleted)
