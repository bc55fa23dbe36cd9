"""What the unsubscribe routes need besides the shared ``mailgate_common.unsubscribe``."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from litestar import Request

from mailgate_api.tracking import service as tracking
from mailgate_common import unsubscribe
from mailgate_common.settings import Settings
from mailgate_common.tracking.tokens import signer_for

# A one-click body is 26 bytes and the page's form a few hundred: nothing bigger is read.
MAX_BODY = 64 * 1024


signer = signer_for


def requester(request: Request[Any, Any, Any], settings: Settings) -> unsubscribe.Requester:
    """Who asked: the client behind a trusted proxy, as the tracking routes see it."""
    fetch = tracking.client(request, settings)
    return unsubscribe.Requester(fetch.address, fetch.user_agent)


async def form_fields(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The posted fields, multipart/form-data or urlencoded; a body with another (or no)
    content type is read as urlencoded, the form RFC 8058 shows."""
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        form = await request.form()
        return {key: value for key, value in form.items() if isinstance(value, str)}
    body = await request.body()
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
