from __future__ import annotations

from typing import Literal

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.params import Parameter

from mailgate_api.accounts import fields, service
from mailgate_api.accounts.schemas import (
    AccountCommand,
    AccountCreate,
    AccountCreated,
    AccountDeleted,
    AccountList,
    AccountRef,
    AccountUpdate,
    AccountView,
)
from mailgate_api.auth.policy import is_admin
from mailgate_api.deps import ApiRequest, Resources
from mailgate_api.errors import ApiError, invalid
from mailgate_api.pagination import Page, PageSize, pages
from mailgate_common import events
from mailgate_common.db.models import Account
from mailgate_common.event_relay import stage


class AccountController(Controller):
    tags = ["Account"]

    @post("/v1/account", status_code=200, summary="Register an account (updates an existing one)")
    async def create(self, data: AccountCreate, res: Resources,
                     request: ApiRequest) -> AccountCreated:
        account_id = data.account or service.new_account_id()
        public_only = await service.check_destinations(data, res.settings, not is_admin(request.scope))
        async with res.db.transaction() as session:
            account = await session.get(Account, account_id, with_for_update=True)
            existed = account is not None
            if account is None:
                if data.smtp in (None, False) and data.imap in (None, False):
                    raise ApiError(400, "an account needs smtp or imap settings", "smtp")
                account = Account(id=account_id, state="new" if data.imap else "connected")
                session.add(account)
            service.apply(account, data, res.sealer, public_only)
            change = events.AccountChanged(account=account_id, change="updated" if existed else "added")
            stage(session, change)
        await res.relay.publish_committed([change])
        return AccountCreated(account=account_id, state="existing" if existed else "new")

    @get("/v1/accounts", summary="List accounts")
    async def list(
        self,
        res: Resources,
        page: Page = 0,
        page_size: PageSize = 20,
        state_filter: str | None = Parameter(query="state", default=None),
    ) -> AccountList:
        async with res.db.sessions() as session:
            rows, total = await service.list_accounts(session, page, page_size, state_filter)
        return AccountList(
            accounts=[service.view(a) for a in rows],
            total=total,
            page=page,
            pages=pages(total, page_size),
        )

    @get("/v1/account/{account:str}", summary="Account details (never passwords)")
    async def get(self, account: str, res: Resources) -> AccountView:
        async with res.db.sessions() as session:
            return service.view(await service.get_account(session, account))

    @put("/v1/account/{account:str}", summary="Update account settings")
    async def update(self, account: str, data: AccountUpdate, res: Resources,
                     request: ApiRequest) -> AccountRef:
        public_only = await service.check_destinations(data, res.settings, not is_admin(request.scope))
        async with res.db.transaction() as session:
            row = await service.get_account(session, account)
            service.apply(row, data, res.sealer, public_only)
            change = events.AccountChanged(account=account, change="updated")
            stage(session, change)
        await res.relay.publish_committed([change])
        return AccountRef(account=account)

    @delete("/v1/account/{account:str}", status_code=200, summary="Delete an account and its queue")
    async def remove(self, account: str, res: Resources) -> AccountDeleted:
        async with res.db.transaction() as session:
            row = await service.get_account(session, account)
            await session.delete(row)
            change = events.AccountChanged(account=account, change="deleted")
            stage(session, change)
        await res.relay.publish_committed([change])
        return AccountDeleted(account=account, deleted=True)

    @put("/v1/account/{account:str}/reconnect", summary="Ask imap-sync to reconnect the account")
    async def reconnect(self, account: str, data: AccountCommand, res: Resources) -> dict[str, bool]:
        _only(data, "reconnect")
        return {"reconnect": await _command(res, account, "reconnect", data.reconnect)}

    @put("/v1/account/{account:str}/sync", summary="Ask imap-sync to sync the account now")
    async def sync(self, account: str, data: AccountCommand, res: Resources) -> dict[str, bool]:
        _only(data, "sync")
        return {"sync": await _command(res, account, "sync", data.sync)}

    @put("/v1/account/{account:str}/flush",
         summary="Drop the account's mailbox index and resync it from scratch")
    async def flush(self, account: str, data: AccountCommand, res: Resources) -> dict[str, bool]:
        return {"flush": await _command(res, account, "flush", data.flush, data)}


def _only(data: AccountCommand, command: str) -> None:
    """Each command takes its own flag (and flush its index settings), nothing else."""
    for name, value in msgspec.structs.asdict(data).items():
        if value is not None and name != command:
            field = {"notify_from": "notifyFrom", "imap_indexer": "imapIndexer", "sync_from": "syncFrom"}
            raise invalid(field.get(name, name), f"is not a field of {command}")


async def _command(res: Resources, account: str, command: Literal["reconnect", "sync", "flush"],
                   wanted: bool | None, body: AccountCommand | None = None) -> bool:
    """Publish the command (through the relay, so an outage loses nothing) when the body asks for it.

    Like EmailEngine, ``{"reconnect": false}`` (or no flag) does nothing and answers false.
    """
    async with res.db.transaction() as session:
        row = await service.get_account(session, account)
        if not wanted:
            return False
        if row.imap is None:
            raise ApiError(400, "This account has no IMAP settings", "imap", code="NoImapSettings")
        if body is not None:
            fields.apply_flush_settings(row, body)
        event = events.AccountCommand(account=account, command=command)
        stage(session, event)
    await res.relay.publish_committed([event])
    return True
