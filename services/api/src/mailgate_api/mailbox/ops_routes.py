"""EmailEngine's message and folder operations: flags, move, delete, search, upload,
folders.  Each is one ``rpc.imap.command`` to imap-sync (the api never opens IMAP)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, delete, post, put
from litestar.params import Parameter

from mailgate_api.deps import Resources
from mailgate_api.errors import invalid
from mailgate_api.mailbox import ops_service, rpc, service
from mailgate_api.mailbox.ops_schemas import (
    BulkDelete,
    BulkMove,
    BulkUpdate,
    MailboxCreate,
    MailboxRename,
    MessageUpdate,
    MessageUpload,
    MoveRequest,
    SearchRequest,
    search_args,
)
from mailgate_api.mailbox.schemas import MessageList
from mailgate_api.pagination import Page, PageSize, pages

FolderPath = Parameter(query="path", min_length=1, description="Folder path")
Force = Parameter(default=False, description="Delete for good instead of moving to Trash")


class MessageOpsController(Controller):
    tags = ["Mailbox"]

    @put("/v1/account/{account:str}/message/{message:str}", summary="Update flags and labels of a message")
    async def update(self, account: str, message: str, data: MessageUpdate, res: Resources) -> dict[str, Any]:
        row = await ops_service.locate(res, account, message)
        return await rpc.command(res, account, "message.update",
                                 {**rpc.located(row), "update": _update_args(data)})

    @put("/v1/account/{account:str}/messages", summary="Update flags and labels of the messages a search finds")
    async def update_many(self, account: str, data: BulkUpdate, res: Resources,
                          path: str = FolderPath) -> dict[str, Any]:
        await ops_service.require_account(res, account)
        return await rpc.command(res, account, "messages.update",
                                 {"path": path, "search": search_args(data.search),
                                  "update": _update_args(data.update)})

    @put("/v1/account/{account:str}/message/{message:str}/move", summary="Move a message to another folder")
    async def move(self, account: str, message: str, data: MoveRequest, res: Resources) -> dict[str, Any]:
        if data.source is not None:
            raise invalid("source", "is only for Gmail API accounts; an IMAP message knows its folder")
        row = await ops_service.locate(res, account, message)
        return await rpc.command(res, account, "message.move", {**rpc.located(row), "destination": data.path})

    @put("/v1/account/{account:str}/messages/move", summary="Move the messages a search finds")
    async def move_many(self, account: str, data: BulkMove, res: Resources,
                        path: str = FolderPath) -> dict[str, Any]:
        await ops_service.require_account(res, account)
        return await rpc.command(res, account, "messages.move",
                                 {"path": path, "search": search_args(data.search), "destination": data.path})

    @delete("/v1/account/{account:str}/message/{message:str}", status_code=200,
            summary="Delete a message: to Trash, or for good with force (or when already in Trash)")
    async def delete(self, account: str, message: str, res: Resources, force: bool = Force) -> dict[str, Any]:
        row = await ops_service.locate(res, account, message)
        return await rpc.command(res, account, "message.delete", {**rpc.located(row), "force": force})

    @put("/v1/account/{account:str}/messages/delete", summary="Delete the messages a search finds")
    async def delete_many(self, account: str, data: BulkDelete, res: Resources, path: str = FolderPath,
                          force: bool = Force) -> dict[str, Any]:
        await ops_service.require_account(res, account)
        return await rpc.command(res, account, "messages.delete",
                                 {"path": path, "search": search_args(data.search), "force": force})

    @post("/v1/account/{account:str}/search", status_code=200,
          summary="Search a folder (EmailEngine's search keys), paged like the listing")
    async def search(self, account: str, data: SearchRequest, res: Resources, path: str = FolderPath,
                     page: Page = 0, page_size: PageSize = 20) -> MessageList:
        if data.document_query is not None:
            raise invalid("documentQuery", "is not supported: mailgate has no document store")
        await ops_service.require_account(res, account)
        found = await rpc.command(res, account, "search", {"path": path, "search": search_args(data.search)})
        async with res.db.sessions() as session:
            rows, total = await service.found(session, account, path, found.get("uidValidity"),
                                              found.get("uids") or [], page, page_size)
        return MessageList(total=total, page=page, pages=pages(total, page_size), messages=rows)

    @post("/v1/account/{account:str}/message", status_code=200, summary="Upload a message to a folder")
    async def upload(self, account: str, data: MessageUpload, res: Resources) -> dict[str, Any]:
        raw = await ops_service.upload_raw(res, account, data)
        args: dict[str, Any] = {"path": data.path, "flags": data.flags}
        if data.internal_date is not None:
            args["internalDate"] = data.internal_date.isoformat()
        return await rpc.command(res, account, "message.append", args, raw)


class FolderController(Controller):
    tags = ["Mailbox"]

    @post("/v1/account/{account:str}/mailbox", status_code=200, summary="Create a folder")
    async def create(self, account: str, data: MailboxCreate, res: Resources) -> dict[str, Any]:
        await ops_service.require_account(res, account)
        return await rpc.command(res, account, "mailbox.create", {"path": data.path})

    @put("/v1/account/{account:str}/mailbox", summary="Rename a folder")
    async def rename(self, account: str, data: MailboxRename, res: Resources) -> dict[str, Any]:
        if data.subscribed is not None:
            raise invalid("subscribed", "is not supported: mailgate lists every folder, subscribed or not")
        if data.new_path is None:
            raise invalid("newPath", "is required")
        await ops_service.require_account(res, account)
        return await rpc.command(res, account, "mailbox.rename", {"path": data.path, "newPath": data.new_path})

    @delete("/v1/account/{account:str}/mailbox", status_code=200, summary="Delete a folder")
    async def remove(self, account: str, res: Resources, path: str = FolderPath) -> dict[str, Any]:
        await ops_service.require_account(res, account)
        return await rpc.command(res, account, "mailbox.delete", {"path": path})


def _update_args(update: MessageUpdate) -> dict[str, Any]:
    args: dict[str, Any] = msgspec.to_builtins(update)
    if not args:
        raise invalid("flags", "nothing to update: give flags (or labels) to add, delete or set")
    return args
