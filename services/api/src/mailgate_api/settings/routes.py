from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Controller, Request, get, post

from mailgate_api.deps import Resources
from mailgate_api.errors import ApiError
from mailgate_common import service_settings, urls
from mailgate_common.events import WEBHOOK_EVENT_NAMES
from mailgate_common.passwords import hash_password


class SettingsUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    webhooks: str | None = None
    webhooks_enabled: bool | None = msgspec.field(name="webhooksEnabled", default=None)
    webhook_events: list[str] | None = msgspec.field(name="webhookEvents", default=None)
    service_url: str | None = msgspec.field(name="serviceUrl", default=None)
    # Write-only: the shared SMTP submission password (EmailEngine's smtpServerPassword).
    smtp_server_password: str | None = msgspec.field(name="smtpServerPassword", default=None)


class SettingsUpdated(msgspec.Struct):
    updated: list[str]


class SettingsController(Controller):
    tags = ["Settings"]

    @get("/v1/settings", summary="Read settings (pass ?name=true to pick; all when none picked)")
    async def read(self, request: Request[Any, Any, Any], res: Resources) -> dict[str, Any]:
        picked = [k for k, v in request.query_params.items() if v in ("true", "1") and k in service_settings.DEFAULTS]
        async with res.db.transaction() as session:
            values = await service_settings.read(session, picked or None)
            if "serviceSecret" in values:
                values["serviceSecret"] = await service_settings.service_secret(session)
        return values

    @post("/v1/settings", status_code=200, summary="Update settings")
    async def write(self, data: SettingsUpdate, res: Resources) -> SettingsUpdated:
        values: dict[str, Any] = {}
        if data.webhooks is not None:
            if data.webhooks and not data.webhooks.startswith(("http://", "https://")):
                raise ApiError(422, "must be an http:// or https:// URL", "webhooks")
            if data.webhooks:
                try:
                    await urls.check_url(data.webhooks, res.settings.webhooks_allow_private)
                except urls.UnsafeUrl as exc:
                    raise ApiError(422, f"webhooks: {exc}", "webhooks") from None
            values["webhooks"] = data.webhooks or None
        if data.webhooks_enabled is not None:
            values["webhooksEnabled"] = data.webhooks_enabled
        if data.webhook_events is not None:
            unknown = [e for e in data.webhook_events if e != "*" and e not in WEBHOOK_EVENT_NAMES]
            if unknown:
                raise ApiError(422, f"unknown event names: {', '.join(unknown)}", "webhookEvents")
            values["webhookEvents"] = data.webhook_events
        if data.service_url is not None:
            values["serviceUrl"] = data.service_url or None
        if data.smtp_server_password is not None:
            # Only a salted, slow hash is kept; GET /v1/settings never lists this key.
            values["smtpServerPassword"] = (await asyncio.to_thread(hash_password, data.smtp_server_password)
                                            if data.smtp_server_password else None)
        async with res.db.transaction() as session:
            await service_settings.write(session, values)
        return SettingsUpdated(updated=sorted(values))
