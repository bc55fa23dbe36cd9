"""`bounce` click group: `mailgate bounce parse FILE...` prints one JSON object per file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import msgspec

from .model import BounceReport
from .parser import parse_bounce

_encoder = msgspec.json.Encoder()


def report_to_json(path: str, report: BounceReport) -> dict[str, Any]:
    """The wire shape promised to users (camelCase keys, stable field set)."""
    return {
        "file": path,
        "kind": report.kind,
        "messageId": report.message_id,
        "recipients": [
            {
                "address": r.address,
                "action": r.action,
                "status": r.status,
                "replyCode": r.reply_code,
                "diagnostic": r.diagnostic,
                "reason": r.reason,
                "hard": r.hard,
                "mta": r.mta,
            }
            for r in report.recipients
        ],
    }


@click.group(name="bounce")
def bounce() -> None:
    """Work with bounce, complaint and auto-reply messages."""


@bounce.command(name="parse")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
def parse_cmd(files: tuple[Path, ...]) -> None:
    """Parse each FILE (a raw RFC 5322 message) and print one JSON line per file."""
    for path in files:
        report = parse_bounce(path.read_bytes())
        click.echo(_encoder.encode(report_to_json(str(path), report)).decode())
