from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post, put

from mailgate_api.deps import Resources
from mailgate_api.errors import invalid
from mailgate_api.settings import queues, values
from mailgate_common import service_settings, urls
from mailgate_common.passwords import hash_password
from mailgate_common.settings import Settings


class SettingsUpdated(msgspec.Struct):
    updated: list[str]


class QueueUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    paused: bool | None = None
    # Jobs of this queue worked on at once, per replica (null: the service's own setting).
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=10000)] | msgspec.UnsetType | None = msgspec.UNSET


async def prepare(checked: dict[str, Any], settings: Settings, check_urls: bool = True) -> dict[str, Any]:
    """Checked settings as stored: the webhook URL vetted, the SMTP password hashed."""
    prepared = dict(checked)
    if check_urls and prepared.get("webhooks"):
        try:
            await urls.check_url(prepared["webhooks"], settings.webhooks_allow_private)
        except urls.UnsafeUrl as exc:
            raise invalid("webhooks", str(exc)) from None
    if prepared.get("smtpServerPassword"):
        # Only a salted, slow hash is kept; GET /v1/settings never lists this key.
        prepared["smtpServerPassword"] = await asyncio.to_thread(hash_password, prepared["smtpServerPassword"])
    return prepared


def _queue(name: str) -> str:
    if name not in service_settings.QUEUES:
        raise invalid("queue", f"must be one of {', '.join(service_settings.QUEUES)}")
    return name


class SettingsController(Controller):
    tags = ["Settings"]

    @get("/v1/settings", summary="Read settings (pass ?name=true to pick; all when none picked)")
    async def read(self, request: Request[Any, Any, Any], res: Resources) -> dict[str, Any]:
        picked = [k for k, v in request.query_params.items() if v in ("true", "1") and k in service_settings.DEFAULTS]
        async with res.db.transaction() as session:
            found = await service_settings.read(session, picked or None)
            if "serviceSecret" in found:
                found["serviceSecret"] = await service_settings.service_secret(session)
        return found

    @post("/v1/settings", status_code=200, summary="Update settings (EmailEngine's keys; 400 names any other)")
    async def write(self, data: dict[str, Any], res: Resources) -> SettingsUpdated:
        prepared = await prepare(values.check(data), res.settings)
        async with res.db.transaction() as session:
            await service_settings.write(session, prepared)
        return SettingsUpdated(updated=sorted(prepared))

    @get("/v1/settings/queue/{queue:str}", summary="A queue's job counts and paused state")
    async def queue(self, queue: str, res: Resources) -> dict[str, Any]:
        name = _queue(queue)
        async with res.db.sessions() as session:
            jobs = await queues.job_counts(session, name)
            state = await service_settings.queue_state(session, name)
        return {"queue": name, "jobs": jobs, "paused": bool(state["paused"]), "concurrency": state["concurrency"]}

    @put("/v1/settings/queue/{queue:str}", summary="Pause or resume a queue, set its concurrency")
    async def set_queue(self, queue: str, data: QueueUpdate, res: Resources) -> dict[str, Any]:
        name = _queue(queue)
        async with res.db.transaction() as session:
            state = await service_settings.queue_state(session, name)
            if data.paused is not None:
                state["paused"] = data.paused
            if data.concurrency is not msgspec.UNSET:
                state["concurrency"] = data.concurrency
            await service_settings.write(session, {service_settings.queue_key(name): state})
        return {"queue": name, "paused": bool(state["paused"]), "concurrency": state["concurrency"]}
