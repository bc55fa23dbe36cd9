"""Open and click tracking: the pixel (/open.gif) and the click redirect (/redirect).

Public (outside /v1): the links are in delivered mail.  The pixel is always
served, whatever its query, so a broken link never shows a broken image; only
a genuine link is counted.  A click link redirects only to the URL its signed
data names: anything tampered, unsigned or signed by an unknown key gets 403
with no Location (never an open redirect).  HEAD is answered and counts nothing
(link checkers and scanners use it).  A failure to record never keeps a person
from the image or from the page the link leads to.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Controller, Request, Response, get, head
from litestar.params import Parameter

from mailgate_api.deps import Resources
from mailgate_api.errors import ApiError
from mailgate_api.tracking import service
from mailgate_common.tracking.tokens import CLICK_PATH, OPEN_PATH

log = logging.getLogger(__name__)

PUBLIC = {"auth": "public"}
# "data" is litestar's name for the request body: the query value gets another name here.
Data = Parameter(query="data", default=None, required=False)
Sig = Parameter(query="sig", default=None, required=False)


def _pixel() -> Response[bytes]:
    return Response(service.PIXEL, media_type="image/gif", headers=service.NO_STORE)


def _redirect(location: str) -> Response[bytes]:
    # The link's own query (data, sig) is not for the destination to see.
    return Response(b"", status_code=302, headers={"Location": location, "Referrer-Policy": "no-referrer",
                                                    **service.NO_STORE})


def _headers_only(status: int, headers: dict[str, str]) -> Response[None]:
    # litestar renders no body for None only under a text/ media type; the header says what it is.
    return Response(None, status_code=status, media_type="text/plain", headers=headers)


def _refused() -> ApiError:
    return ApiError(403, "This link is not valid", code="InvalidLink")


class TrackingController(Controller):
    tags = ["tracking"]

    @get(OPEN_PATH, opt=PUBLIC, summary="The open-tracking pixel (a 1x1 GIF, always served)")
    async def open_pixel(self, request: Request[Any, Any, Any], res: Resources,
                         signed: str | None = Data, sig: str | None = Sig) -> Response[bytes]:
        values = service.verified(res.settings, signed, sig, "open")
        if values is not None:
            try:
                await service.record(res, "open", values, service.client(request, res.settings))
            except Exception as exc:
                log.warning("could not record an open: %r", exc)
        return _pixel()

    @head(OPEN_PATH, opt=PUBLIC, summary="The pixel's headers (counts nothing)")
    async def open_pixel_head(self) -> Response[None]:
        return _headers_only(200, {"Content-Type": "image/gif", **service.NO_STORE})

    @get(CLICK_PATH, opt=PUBLIC, summary="A tracked link: counts the click and redirects to its signed URL")
    async def click(self, request: Request[Any, Any, Any], res: Resources,
                    signed: str | None = Data, sig: str | None = Sig) -> Response[bytes]:
        values = service.verified(res.settings, signed, sig, "click")
        location = service.destination(values) if values is not None else None
        if values is None or location is None:
            raise _refused()
        try:
            await service.record(res, "click", values, service.client(request, res.settings))
        except Exception as exc:
            log.warning("could not record a click: %r", exc)
        return _redirect(location)

    @head(CLICK_PATH, opt=PUBLIC, summary="A tracked link's redirect, without counting it")
    async def click_head(self, res: Resources, signed: str | None = Data, sig: str | None = Sig) -> Response[None]:
        values = service.verified(res.settings, signed, sig, "click")
        location = service.destination(values) if values is not None else None
        if values is None or location is None:
            raise _refused()
        return _headers_only(302, {"Location": location, "Referrer-Policy": "no-referrer", **service.NO_STORE})
