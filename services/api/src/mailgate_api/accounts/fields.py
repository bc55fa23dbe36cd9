"""EmailEngine's account fields beyond the connection settings: the ones mailgate
keeps (in Account.extra, under EmailEngine's names) and the ones it refuses by name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from mailgate_api.accounts.schemas import AccountCreate, AccountUpdate
from mailgate_api.errors import invalid
from mailgate_common import events
from mailgate_common.db.models import Account

# EmailEngine account fields mailgate stores in Account.extra under the same names
# (imap-sync and the sender read them from there).
EXTRA_FIELDS = {
    "logs": "logs",
    "notify_from": "notifyFrom",
    "sync_from": "syncFrom",
    "smtp_ehlo_name": "smtpEhloName",
    "subconnections": "subconnections",
    "imap_indexer": "imapIndexer",
    "locale": "locale",
    "tz": "tz",
}
# What the sender records about the account's SMTP server (EmailEngine's smtpStatus).
EXTRA_SMTP_STATUS = "smtpStatus"

_EE_NAMES = {"expected_email": "expectedEmail", "webhooks_custom_headers": "webhooksCustomHeaders",
             "notify_from": "notifyFrom", "sync_from": "syncFrom"}

UNSUPPORTED = {
    "oauth2": "OAuth2 accounts are not supported yet; use imap/smtp with a password",
    "proxy": "outbound proxies are not supported",
    "expected_email": "expectedEmail is not supported",
    "webhooks_custom_headers": "custom webhook headers are set per endpoint with /v1/webhooks",
}


def check_supported(body: AccountCreate | AccountUpdate) -> None:
    """400 naming the first EmailEngine field mailgate cannot honour (never silently dropped)."""
    for attr, why in UNSUPPORTED.items():
        value = getattr(body, attr)
        if value is not msgspec.UNSET and value is not None:
            raise invalid(_EE_NAMES.get(attr, attr), f"not supported by mailgate: {why}")
    for name, server in (("imap", body.imap), ("smtp", body.smtp)):
        if server and server.use_auth_server is not msgspec.UNSET:
            raise invalid(f"{name}.useAuthServer", "not supported by mailgate")
        if server and server.auth and server.auth.access_token:
            raise invalid(f"{name}.auth.accessToken", "not supported by mailgate: OAuth2 (XOAUTH2) "
                          "logins are not supported yet; use auth.pass")
    check_dates(body.notify_from, body.sync_from)


# A notifyFrom this far back is still "now" (clocks and request latency).
NOTIFY_FROM_SLACK = timedelta(minutes=5)


def check_dates(notify_from: str | None, sync_from: str | None) -> None:
    """EmailEngine's ``notifyFrom``/``syncFrom``: ISO dates.  mailgate announces the
    messages that arrive once the account is watched (EmailEngine's default, "now"):
    a ``notifyFrom`` in the past would ask for older ones too, and is refused."""
    for name, value in (("notifyFrom", notify_from), ("syncFrom", sync_from)):
        if not value or value == "now":
            continue
        try:
            when = msgspec.convert(value, datetime)
        except msgspec.ValidationError:
            raise invalid(name, "must be an ISO 8601 date") from None
        if name == "notifyFrom":
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            if when < events.utcnow() - NOTIFY_FROM_SLACK:
                raise invalid(name, "a date in the past is not supported: mailgate announces the "
                              "messages that arrive once the account is watched")


def set_extra(extra: dict[str, Any], body: AccountCreate | AccountUpdate) -> None:
    for attr, key in EXTRA_FIELDS.items():
        value = getattr(body, attr)
        if value is None:
            continue
        if attr == "subconnections":
            value = [value] if isinstance(value, str) else value
        if value == "" or value == []:
            extra.pop(key, None)
        else:
            extra[key] = value


def apply_flush_settings(account: Account, body: Any) -> None:
    """EmailEngine's flush body may reset notifyFrom / imapIndexer / syncFrom."""
    check_dates(body.notify_from, body.sync_from)
    extra = dict(account.extra or {})
    for attr in ("notify_from", "imap_indexer", "sync_from"):
        value = getattr(body, attr)
        if value is not None:
            extra[EXTRA_FIELDS[attr]] = value
    account.extra = extra
