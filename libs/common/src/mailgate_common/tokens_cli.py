"""``mailgate token create|list|revoke``: manage API/SMTP access tokens from a shell."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_common import events, tokens
from mailgate_common.db import Database
from mailgate_common.db.models import Account
from mailgate_common.settings import load_settings_or_exit

T = TypeVar("T")


def _in_transaction(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async def run() -> T:
        db = Database(load_settings_or_exit().database_url, pool_size=1)
        try:
            async with db.transaction() as session:
                return await work(session)
        finally:
            await db.dispose()

    return asyncio.run(run())


@click.group("token")
def token_group() -> None:
    """API and SMTP access tokens (shown once, stored only as a hash)."""


@token_group.command("create")
@click.option("--account", default=None, help="Restrict the token to this account (default: admin).")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(tokens.SCOPES),
              default=("api",), show_default=True, help="Repeat for several scopes.")
@click.option("--description", default=None, help="Who or what uses this token.")
def create(account: str | None, scopes: tuple[str, ...], description: str | None) -> None:
    """Create a token and print it - the only time it is ever shown."""

    async def work(session: AsyncSession) -> str:
        if account is not None and await session.get(Account, account) is None:
            raise click.ClickException(f"account {account!r} does not exist")
        return await tokens.create(session, account, list(dict.fromkeys(scopes)), description)

    token = _in_transaction(work)
    # stdout carries only the token so scripts can capture it.
    click.echo(token)
    click.echo("Store this token now: it cannot be shown again.", err=True)


@token_group.command("list")
def list_() -> None:
    """List tokens: id (a hash, not the token), account, scopes, dates, description."""

    async def work(session: AsyncSession) -> list[tuple[str, ...]]:
        return [
            (r.id, r.account_id or "*", ",".join(r.scopes), events.iso(r.created_at) or "-",
             events.iso(r.last_used_at) or "never", r.description or "")
            for r in await tokens.list_tokens(session)
        ]

    for row in _in_transaction(work):
        click.echo("\t".join(row))


@token_group.command("revoke")
@click.argument("token_or_id")
def revoke(token_or_id: str) -> None:
    """Revoke a token, given the token itself or its id from `mailgate token list`."""
    if not _in_transaction(lambda session: tokens.revoke(session, token_or_id)):
        raise click.ClickException("no such token")
    click.echo("token revoked")
