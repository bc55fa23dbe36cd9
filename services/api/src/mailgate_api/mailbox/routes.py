from __future__ import annotations

from litestar import Controller, get
from litestar.params import Parameter

from mailgate_api.deps import Resources
from mailgate_api.mailbox import service
from mailgate_api.mailbox.schemas import MailboxList, MessageList
from mailgate_api.pagination import Page, PageSize, pages


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
