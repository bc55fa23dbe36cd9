"""Which EmailEngine settings mailgate takes, and their checks - one place for
``POST /v1/settings`` and the prepared settings of ``MAILGATE_SETTINGS``.

A key mailgate has no meaning for is refused by name, never stored and ignored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import msgspec

from mailgate_api.errors import ApiError, invalid
from mailgate_common.events import WEBHOOK_EVENT_NAMES


class LogSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    all: bool = False
    max_log_lines: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 10000


def _url(key: str, value: Any) -> str | None:
    text = msgspec.convert(value, str)
    if text and not text.startswith(("http://", "https://")):
        raise invalid(key, "must be an http:// or https:// URL")
    return text or None


def _events(key: str, value: Any) -> list[str]:
    names = msgspec.convert(value, list[str])
    unknown = [e for e in names if e != "*" and e not in WEBHOOK_EVENT_NAMES]
    if unknown:
        raise invalid(key, f"unknown event names: {', '.join(unknown)}")
    return names


def _typed(kind: Any) -> Callable[[str, Any], Any]:
    def convert(_: str, value: Any) -> Any:
        return msgspec.convert(value, kind, strict=False)
    return convert


def _logs(_: str, value: Any) -> dict[str, Any]:
    parsed = msgspec.convert(value, LogSettings, strict=False)
    return {"all": parsed.all, "maxLogLines": parsed.max_log_lines}


def _secret(key: str, value: Any) -> str | None:
    text = msgspec.convert(value, str)
    if text and len(text) > 4096:
        raise invalid(key, "must be at most 4096 characters")
    return text or None


NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Header = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]

CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "webhooks": _url,
    "webhooksEnabled": _typed(bool),
    "webhookEvents": _events,
    "serviceUrl": _url,
    "serviceSecret": _secret,
    "notifyText": _typed(bool),
    "notifyTextSize": _typed(NonNegative),
    "notifyHeaders": _typed(list[Header]),
    "logs": _logs,
    # Open and click tracking of messages whose submit does not say (read by the sender at send time).
    "trackOpens": _typed(bool),
    "trackClicks": _typed(bool),
    # Opens, clicks and unsubscribes keep no IP address and no user agent, only the verdicts.
    "trackingPrivacy": _typed(bool),
    # Write-only: the shared SMTP submission password (hashed before it is stored).
    "smtpServerPassword": _secret,
}

# EmailEngine keys mailgate knows but does not do (yet): each gets its own clear refusal.
UNSUPPORTED: dict[str, str] = {
    "trackSentMessages": "sent-message tracking is not supported",
    "webhooksCustomHeaders": "custom webhook headers are set per endpoint with /v1/webhooks",
    "notifyAttachments": "attachment content in webhooks is not supported",
    "notifyAttachmentSize": "attachment content in webhooks is not supported",
    "notifyWebSafeHtml": "web-safe HTML in webhooks is not supported",
    "notifyCalendarEvents": "calendar events in webhooks are not supported",
    "proxyEnabled": "proxies are not supported",
    "proxyUrl": "proxies are not supported",
    "localAddresses": "set MAILGATE_LOCAL_ADDRESSES in the environment instead",
    "smtpEhloName": "set MAILGATE_LOCAL_ADDRESSES (ip|ehlo-name) in the environment instead",
    "smtpServerEnabled": "the SMTP door is configured with MAILGATE_SMTP_* environment variables",
    "smtpServerPort": "the SMTP door is configured with MAILGATE_SMTP_* environment variables",
    "smtpServerHost": "the SMTP door is configured with MAILGATE_SMTP_* environment variables",
    "smtpServerAuthEnabled": "the SMTP door is configured with MAILGATE_SMTP_* environment variables",
    "deliveryAttempts": "set MAILGATE_DELIVERY_ATTEMPTS in the environment, or deliveryAttempts per submit",
    "templateHeader": "templates are not supported yet",
    "templateHtmlHead": "templates are not supported yet",
}


def check(body: Any) -> dict[str, Any]:
    """The body's settings, converted; ApiError 400 naming the first key that is wrong."""
    if not isinstance(body, dict):
        raise ApiError(400, "The settings must be a JSON object", code="InputValidationError")
    values: dict[str, Any] = {}
    for key, value in body.items():
        if key in UNSUPPORTED:
            raise invalid(key, f"not supported by mailgate: {UNSUPPORTED[key]}")
        convert = CHECKS.get(key)
        if convert is None:
            raise invalid(key, "is not a setting mailgate knows")
        if value is None:
            values[key] = None
            continue
        try:
            values[key] = convert(key, value)
        except msgspec.ValidationError as exc:
            raise invalid(key, str(exc).split(" - at ")[0]) from None
    return values


class PreparedSettingsError(ValueError):
    pass


def parse_prepared(text: str | None) -> dict[str, Any]:
    """``MAILGATE_SETTINGS``: the JSON ``POST /v1/settings`` takes; PreparedSettingsError if not."""
    if not text or not text.strip():
        return {}
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise PreparedSettingsError(f"MAILGATE_SETTINGS is not valid JSON: {exc}") from None
    try:
        return check(body)
    except ApiError as exc:
        raise PreparedSettingsError(f"MAILGATE_SETTINGS: {exc.message}") from None
