"""Account rows: passwords sealed on the way in, never handed out on the way out.

Where an account's settings point is checked before they are saved: its
webhook URL like every webhook URL (no private addresses unless the operator
allows them), and, when the operator opts in
(``MAILGATE_ACCOUNT_HOSTS_ALLOW_PRIVATE=false``), the SMTP/IMAP hosts an
account-scoped token sets must be public - the sender and imap-sync connect
from inside the operator's network.  Such an account is marked
``publicHostsOnly`` so the check is repeated when connecting (DNS changes).
"""

from __future__ import annotations

import secrets
from typing import Any

import msgspec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_api.accounts.fields import EXTRA_SMTP_STATUS, check_supported, set_extra
from mailgate_api.accounts.schemas import (
    AccountCreate,
    AccountUpdate,
    AccountView,
    ServerSettings,
)
from mailgate_api.errors import ApiError, not_found
from mailgate_common import events, urls
from mailgate_common.crypto import Sealer, split_secret
from mailgate_common.db.models import EXTRA_PUBLIC_HOSTS_ONLY, EXTRA_RETRY_UNKNOWN_OUTCOME, Account
from mailgate_common.mime import InvalidMessage, normalize_address
from mailgate_common.settings import Settings


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def _server_dict(value: ServerSettings) -> dict[str, Any]:
    data: dict[str, Any] = _drop_none(msgspec.to_builtins(value))
    return data


def _check_email(email: str | None) -> None:
    if email:
        try:
            normalize_address("email", email)
        except InvalidMessage as exc:
            raise ApiError(400, exc.message, "email") from exc


async def _check_webhook_url(url: str | None, allow_private: bool) -> None:
    if url:
        try:
            await urls.check_url(url, allow_private)
        except urls.UnsafeUrl as exc:
            raise ApiError(400, str(exc), "webhooks") from exc


async def _check_public_host(host: str, field: str) -> None:
    try:
        await urls.check_public_host(host)
    except urls.UnsafeUrl as exc:
        raise ApiError(400, str(exc), field) from exc


async def check_public_hosts(smtp: ServerSettings | None, imap: ServerSettings | None, settings: Settings,
                             account_token: bool) -> bool:
    """The operator's policy on SMTP/IMAP hosts; True if they must stay public."""
    restricted = account_token and not settings.account_hosts_allow_private
    if restricted:
        for field, server in (("smtp.host", smtp), ("imap.host", imap)):
            if server:
                await _check_public_host(server.host, field)
    return restricted


async def check_destinations(body: AccountCreate | AccountUpdate, settings: Settings, account_token: bool) -> bool:
    """Refuse settings pointing where they may not; True if the account must stay on public hosts."""
    await _check_webhook_url(body.webhooks, settings.webhooks_allow_private)
    return await check_public_hosts(body.smtp or None, body.imap or None, settings, account_token)


def _watch_paths(value: str | list[str] | None) -> list[str] | None:
    """EmailEngine's ``path``: one path or a list, "" and null meaning "unset"."""
    items = [value] if isinstance(value, str) else value or []
    paths = list(dict.fromkeys(p.strip() for p in items if p.strip()))
    return paths or None


def _set_watch_paths(account: Account, body: AccountCreate | AccountUpdate, before: Any) -> None:
    """Keep ``path`` inside the imap settings, so changing it reconnects the watcher.

    Replacing the imap settings keeps the folders chosen before unless the
    body names new ones.
    """
    paths = before if body.path is msgspec.UNSET else _watch_paths(body.path)
    if account.imap is None:
        if paths and body.path is not msgspec.UNSET:
            raise ApiError(400, "watching folders needs imap settings", "path")
        return
    imap = {k: v for k, v in account.imap.items() if k != "path"}
    if paths:
        imap["path"] = paths
    account.imap = imap


def apply(account: Account, body: AccountCreate | AccountUpdate, sealer: Sealer,
          public_hosts_only: bool = False) -> None:
    """Copy the given fields onto the row, sealing any password (after ``check_destinations``)."""
    check_supported(body)
    fields = body.__struct_fields__
    paths_before = (account.imap or {}).get("path")
    _check_email(body.email)
    extra = dict(account.extra or {})
    if body.retry_unknown_outcome is not None:
        extra[EXTRA_RETRY_UNKNOWN_OUTCOME] = body.retry_unknown_outcome
    if body.smtp not in (None, False) or body.imap not in (None, False):
        # Whoever sets the hosts decides: an admin lifts the restriction.
        extra[EXTRA_PUBLIC_HOSTS_ONLY] = public_hosts_only
    set_extra(extra, body)
    account.extra = extra
    secrets_: dict[str, Any] = sealer.open(account.credentials) if account.credentials else {}
    for name in ("name", "email", "copy", "webhooks"):
        if name in fields and getattr(body, name) is not None:
            setattr(account, name, getattr(body, name))
    if body.limits is not None:
        account.limits = msgspec.to_builtins(body.limits) or None
    if body.smtp is False:
        account.smtp = None
        secrets_.pop("smtp", None)
    elif body.smtp is not None:
        account.smtp, secrets_["smtp"] = split_secret(_server_dict(body.smtp))
    if body.imap is False:
        account.imap = None
        secrets_.pop("imap", None)
    elif body.imap is not None:
        account.imap, secrets_["imap"] = split_secret(_server_dict(body.imap))
    _set_watch_paths(account, body, paths_before)
    account.credentials = sealer.seal(secrets_) if secrets_ else None


def view(account: Account) -> AccountView:
    extra = account.extra or {}
    return AccountView(
        account=account.id,
        name=account.name,
        email=account.email,
        state=account.state,
        copy=account.copy,
        webhooks=account.webhooks,
        imap={k: v for k, v in account.imap.items() if k != "path"} if account.imap is not None else False,
        path=(account.imap or {}).get("path"),
        smtp=account.smtp,
        last_error=account.last_error,
        limits=account.limits,
        throttled_until=events.iso(account.throttled_until),
        retry_unknown_outcome=extra.get(EXTRA_RETRY_UNKNOWN_OUTCOME),
        created=events.iso(account.created_at),
        type="imap" if account.imap is not None else "sending",
        smtp_status=extra.get(EXTRA_SMTP_STATUS),
        logs=bool(extra.get("logs", False)),
        notify_from=extra.get("notifyFrom"),
        sync_from=extra.get("syncFrom"),
        smtp_ehlo_name=extra.get("smtpEhloName"),
        subconnections=extra.get("subconnections"),
        imap_indexer=extra.get("imapIndexer"),
        locale=extra.get("locale"),
        tz=extra.get("tz"),
    )


def new_account_id() -> str:
    return secrets.token_hex(8)


async def get_account(session: AsyncSession, account_id: str) -> Account:
    account = await session.get(Account, account_id)
    if account is None:
        raise not_found("Account", "account")
    return account


async def list_accounts(
    session: AsyncSession, page: int, page_size: int, state: str | None
) -> tuple[list[Account], int]:
    query = select(Account)
    count = select(func.count()).select_from(Account)
    if state:
        query = query.where(Account.state == state)
        count = count.where(Account.state == state)
    total = await session.scalar(count) or 0
    rows = await session.scalars(query.order_by(Account.id).offset(page * page_size).limit(page_size))
    return list(rows), total
