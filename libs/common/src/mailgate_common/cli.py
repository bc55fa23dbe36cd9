"""The ``mailgate`` operator command."""

from __future__ import annotations

import click

from mailgate_common.dlq import dlq_group
from mailgate_common.rotation import secret_group
from mailgate_common.settings import load_settings_or_exit
from mailgate_common.tokens_cli import token_group


@click.group()
def main() -> None:
    """mailgate administration."""


@main.command()
def migrate() -> None:
    """Create or upgrade the database schema (safe to run concurrently)."""
    from mailgate_common.db.migrate import upgrade

    settings = load_settings_or_exit()
    upgrade(settings.database_url)
    click.echo("database schema is up to date")


def _register_subcommands() -> None:
    from mailgate_common.bounces.cli import bounce

    main.add_command(bounce)


_register_subcommands()

main.add_command(token_group)
main.add_command(secret_group)
main.add_command(dlq_group)
