"""Secret rotation: re-seal every account's credentials under the current MAILGATE_SECRET.

Procedure: run every service with the new MAILGATE_SECRET and the old one in
MAILGATE_SECRET_PREVIOUS (they read both, write with the new one), run
``mailgate secret rotate``, then drop MAILGATE_SECRET_PREVIOUS.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import click
from sqlalchemy import select

from mailgate_common.crypto import CredentialError, Sealer
from mailgate_common.db import Database
from mailgate_common.db.models import Account
from mailgate_common.settings import load_settings_or_exit

BATCH = 200


@dataclass
class RotationReport:
    resealed: int = 0
    current: int = 0
    # Account ids only: the values never leave the database in clear.
    unreadable: list[str] = field(default_factory=list)


async def rotate(db: Database, sealer: Sealer) -> RotationReport:
    """Re-seal in short batches so accounts stay writable by the API meanwhile."""
    report = RotationReport()
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
                if not sealer.needs_reseal(row.credentials):
                    report.current += 1
                    continue
                try:
                    row.credentials = sealer.seal(sealer.open(row.credentials))
                except CredentialError:
                    report.unreadable.append(row.id)
                    continue
                report.resealed += 1
        if len(rows) < BATCH:
            return report
        after = rows[-1].id


@click.group("secret")
def secret_group() -> None:
    """The MAILGATE_SECRET that seals account credentials."""


@secret_group.command("rotate")
@click.option("--previous", "previous", multiple=True,
              help="A secret the credentials may still be sealed with (repeatable; "
                   "default: MAILGATE_SECRET_PREVIOUS).")
def rotate_command(previous: tuple[str, ...]) -> None:
    """Re-encrypt every account's credentials under the current MAILGATE_SECRET."""
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
    click.echo(f"re-encrypted {report.resealed} account(s); {report.current} already current")
    if report.unreadable:
        raise click.ClickException(
            "credentials of these accounts open with none of the given secrets: "
            + ", ".join(report.unreadable)
        )

