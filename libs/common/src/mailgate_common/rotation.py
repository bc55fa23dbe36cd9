"""Secret rotation: re-seal every sealed column under the current MAILGATE_SECRET.

Sealed columns: ``accounts.credentials`` and ``webhook_endpoints.secret`` /
``previous_secret``.  Procedure: run every service with the new
MAILGATE_SECRET and the old one in MAILGATE_SECRET_PREVIOUS (they read both,
write with the new one), run ``mailgate secret rotate``, then drop
MAILGATE_SECRET_PREVIOUS.  A value that opens with none of the secrets is
reported by id and left as it is; it only ever affects its own account or
endpoint (the webhooks service records that endpoint's deliveries as failed
until its secret is rotated through the API).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import click
from sqlalchemy import select

from mailgate_common import events
from mailgate_common.crypto import CredentialError, Sealer
from mailgate_common.db import Database
from mailgate_common.db.models import Account, WebhookEndpoint
from mailgate_common.settings import load_settings_or_exit

BATCH = 200


@dataclass
class Resealed:
    resealed: int = 0
    current: int = 0
    # Ids only: the values never leave the database in clear.
    unreadable: list[str] = field(default_factory=list)


@dataclass
class RotationReport:
    accounts: Resealed = field(default_factory=Resealed)
    endpoints: Resealed = field(default_factory=Resealed)


def _resealed(sealer: Sealer, sealed: bytes) -> bytes | None:
    """``sealed`` under the current secret; None when it already is."""
    if not sealer.needs_reseal(sealed):
        return None
    return sealer.seal(sealer.open(sealed))


async def rotate(db: Database, sealer: Sealer) -> RotationReport:
    """Re-seal in short batches so rows stay writable by the API meanwhile."""
    report = RotationReport()
    await _rotate_accounts(db, sealer, report.accounts)
    await _rotate_endpoints(db, sealer, report.endpoints)
    return report


async def _rotate_accounts(db: Database, sealer: Sealer, report: Resealed) -> None:
    after = ""
    while True:
        async with db.transaction() as session:
            rows = list(await session.scalars(
                select(Account)
                .where(Account.id > after, Account.credentials.is_not(None))
                .order_by(Account.id)
                .limit(BATCH)
                .with_for_update()
            ))
            for row in rows:
                assert row.credentials is not None
                try:
                    resealed = _resealed(sealer, row.credentials)
                except CredentialError:
                    report.unreadable.append(row.id)
                    continue
                if resealed is None:
                    report.current += 1
                else:
                    row.credentials = resealed
                    report.resealed += 1
        if len(rows) < BATCH:
            return
        after = rows[-1].id


async def _rotate_endpoints(db: Database, sealer: Sealer, report: Resealed) -> None:
    after = ""
    while True:
        async with db.transaction() as session:
            rows = list(await session.scalars(
                select(WebhookEndpoint)
                .where(WebhookEndpoint.id > after)
                .order_by(WebhookEndpoint.id)
                .limit(BATCH)
                .with_for_update()
            ))
            now = events.utcnow()
            for row in rows:
                expires = row.previous_secret_expires_at
                if row.previous_secret is not None and (expires is None or expires <= now):
                    # Its overlap is over: never used again, so not kept under the old key.
                    row.previous_secret = row.previous_secret_expires_at = None
                try:
                    secret = _resealed(sealer, row.secret)
                    previous = _resealed(sealer, row.previous_secret) if row.previous_secret else None
                except CredentialError:
                    report.unreadable.append(row.id)
                    continue
                if secret is None and previous is None:
                    report.current += 1
                    continue
                row.secret = secret or row.secret
                row.previous_secret = previous or row.previous_secret
                report.resealed += 1
        if len(rows) < BATCH:
            return
        after = rows[-1].id


@click.group("secret")
def secret_group() -> None:
    """The MAILGATE_SECRET that seals account credentials and webhook endpoint secrets."""


@secret_group.command("rotate")
@click.option("--previous", "previous", multiple=True,
              help="A secret the values may still be sealed with (repeatable; "
                   "default: MAILGATE_SECRET_PREVIOUS).")
def rotate_command(previous: tuple[str, ...]) -> None:
    """Re-encrypt every account's credentials and every webhook endpoint's secrets
    under the current MAILGATE_SECRET."""
    settings = load_settings_or_exit()
    olds = previous or tuple(filter(None, [settings.secret_previous]))
    if not olds:
        raise click.ClickException("give the old secret with --previous or MAILGATE_SECRET_PREVIOUS")
    sealer = Sealer(settings.secret, olds)

    async def run() -> RotationReport:
        db = Database(settings.database_url, pool_size=1)
        try:
            return await rotate(db, sealer)
        finally:
            await db.dispose()

    report = asyncio.run(run())
    accounts, endpoints = report.accounts, report.endpoints
    click.echo(f"re-encrypted {accounts.resealed} account(s); {accounts.current} already current")
    click.echo(f"re-encrypted {endpoints.resealed} webhook endpoint secret(s); {endpoints.current} already current")
    problems = []
    if accounts.unreadable:
        problems.append("credentials of these accounts open with none of the given secrets: "
                        + ", ".join(accounts.unreadable))
    if endpoints.unreadable:
        problems.append("secrets of these webhook endpoints open with none of the given secrets "
                        "(rotate them with POST /v1/webhooks/{id}/rotate-secret): " + ", ".join(endpoints.unreadable))
    if problems:
        raise click.ClickException("; ".join(problems))
