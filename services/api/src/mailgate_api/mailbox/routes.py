from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Controller, Response, get
from litestar.params import Parameter

from mailgate_api.deps import Resources
from mailgate_api.errors import not_found
from mailgate_api.mailbox import content, service
from mailgate_api.mailbox.schemas import MailboxList, MessageList
from mailgate_api.pagination import Page, PageSize, pages
from mailgate_common.content import split_part_id


class MailboxController(Controller):
    tags = ["Mailbox"]

    @get("/v1/account/{account:str}/mailboxes", summary="Folders of the account (from the index)")
    async def mailboxes(self, account: str, res: Resources) -> MailboxList:
        async with res.db.sessions() as session:
            return MailboxList(mailboxes=await service.mailboxes(session, account))

    @get("/v1/account/{account:str}/messages", summary="Messages of a folder, newest first")
    async def messages(
        self,
        account: str,
        res: Resources,
        path: str = Parameter(default="INBOX", description="Folder path"),
        page: Page = 0,
        page_size: PageSize = 20,
    ) -> MessageList:
        async with res.db.sessions() as session:
            rows, total = await service.messages(session, account, path, page, page_size)
        return MessageList(total=total, page=page, pages=pages(total, page_size), messages=rows)

    @get("/v1/account/{account:str}/message/{message:str}",
         summary="One message: decoded addresses, text and html, headers, attachment list")
    async def message(self, account: str, message: str, res: Resources) -> dict[str, Any]:
        async with res.db.sessions() as session:
            await service.require_account(session, account)
            row = await content.indexed(session, account, message)
        if row is None:
            raise not_found("Message", "message")
        raw = await content.fetch_raw(res.bus, account, row.id, res.settings.imap_fetch_timeout,
                                      "message")
        return content.message_json(row, raw)

    @get("/v1/account/{account:str}/attachment/{attachment:str}",
         summary="Download an attachment (decoded bytes)")
    async def attachment(self, account: str, attachment: str, res: Resources) -> Response[bytes]:
        parsed = split_part_id(attachment)
        async with res.db.sessions() as session:
            await service.require_account(session, account)
            row = await content.indexed(session, account, parsed[0]) if parsed else None
        if row is None or parsed is None:
            raise not_found("Attachment", "attachment")
        raw = await content.fetch_raw(res.bus, account, row.id, res.settings.imap_fetch_timeout,
                                      "attachment")
        found = content.attachment(raw, parsed[1])
        filename = found.filename or "attachment"
        return Response(
            found.data,
            media_type=found.content_type,
            headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}"},
        )
