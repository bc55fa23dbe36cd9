from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

from litestar import Controller, Response, Router, get
from litestar.params import Parameter

from mailgate_api.deps import Resources
from mailgate_api.errors import not_found
from mailgate_api.mailbox import content, ops_service, rpc, service
from mailgate_api.mailbox.draft import submit_draft
from mailgate_api.mailbox.ops_routes import FolderController, MessageOpsController
from mailgate_api.mailbox.schemas import MailboxList, MessageList
from mailgate_api.pagination import Page, PageSize, pages
from mailgate_common.content import parse as parse_message
from mailgate_common.content import split_part_id, text_bodies

TextType = Literal["plain", "html", "*"]
_TEXT_TYPE_DOC = "Which text to return: plain, html or * for both"
_MAX_BYTES_DOC = "Cut each text at this many bytes (hasMore says so)"
_MAX_BYTES_LIMIT = 1024 * 1024 * 1024
TEXT_TYPE_OPTIONAL = Parameter(query="textType", default=None, description=_TEXT_TYPE_DOC)
MAX_BYTES_OPTIONAL = Parameter(query="maxBytes", default=None, ge=0, le=_MAX_BYTES_LIMIT, description=_MAX_BYTES_DOC)
TEXT_TYPE = Parameter(query="textType", default="*", description=_TEXT_TYPE_DOC)
MAX_BYTES = Parameter(query="maxBytes", default=content.DEFAULT_MAX_BYTES, ge=0, le=_MAX_BYTES_LIMIT,
                      description=_MAX_BYTES_DOC)


class MailboxReadController(Controller):
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
    async def message(
        self,
        account: str,
        message: str,
        res: Resources,
        text_type: TextType | None = TEXT_TYPE_OPTIONAL,
        max_bytes: int | None = MAX_BYTES_OPTIONAL,
        mark_as_seen: bool = Parameter(query="markAsSeen", default=False,
                                       description="Mark the message \\Seen once read"),
    ) -> dict[str, Any]:
        row = await ops_service.locate(res, account, message)
        raw = await content.fetch_raw(res.bus, account, row.id, res.settings.imap_fetch_timeout,
                                      "message")
        body = content.with_texts(content.message_json(row, raw), text_type, max_bytes)
        if mark_as_seen and "\\Seen" not in row.flags:
            await rpc.command(res, account, "message.update",
                              {**rpc.located(row), "update": {"flags": {"add": ["\\Seen"]}}})
            flags = sorted({*body["flags"], "\\Seen"})
            body.update(flags=flags, unseen=False)
        return body

    @get("/v1/account/{account:str}/message/{message:str}/source", summary="The message as RFC 822",
         media_type="message/rfc822")
    async def source(self, account: str, message: str, res: Resources) -> Response[bytes]:
        row = await ops_service.locate(res, account, message)
        raw = await content.fetch_raw(res.bus, account, row.id, res.settings.imap_fetch_timeout,
                                      "message")
        return Response(raw, media_type="message/rfc822",
                        headers={"Content-Disposition": f"attachment; filename={row.id}.eml"})

    @get("/v1/account/{account:str}/text/{text:str}", summary="The text of a message (plain and/or html)")
    async def text(self, account: str, text: str, res: Resources,
                   text_type: TextType = TEXT_TYPE, max_bytes: int = MAX_BYTES) -> dict[str, Any]:
        message = content.text_message(text)
        if message is None:
            raise not_found("Message", "text")
        row = await ops_service.locate(res, account, message)
        raw = await content.fetch_raw(res.bus, account, row.id, res.settings.imap_fetch_timeout, "text")
        plain, html = text_bodies(parse_message(raw))
        return content.texts(plain, html, text_type, max_bytes)

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


# app.py registers this one name: the reads, the operations, the folders and draft sending.
MailboxController = Router(path="/", route_handlers=[MailboxReadController, MessageOpsController,
                                                     FolderController, submit_draft])
