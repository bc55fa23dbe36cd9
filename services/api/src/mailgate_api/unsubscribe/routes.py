"""One-click unsubscribe (RFC 8058) and the unsubscribe page (/unsubscribe).

Public routes (outside /v1: no token), reached from the List-Unsubscribe
header and the links in list mail.  The signed ``data`` and ``sig`` are the
only authority: the recipient, list and account are read from the signed
data, never from anything else the request says.

* ``POST /unsubscribe?data&sig`` with ``List-Unsubscribe=One-Click``: the
  mailbox provider's one-click request.  Any 2xx tells it "done, never retry",
  so a permanent problem (forged link, unknown account) is answered 200 with a
  short text, and a transient one (database down) 5xx so that it retries.
* ``GET /unsubscribe?data&sig``: the page; a GET never changes anything (link
  scanners and prefetchers open every link in a message).
* ``POST /unsubscribe/address`` (``action`` = unsubscribe | subscribe, ``data``,
  ``sig``): the page's buttons, EmailEngine's path and field names.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.enums import MediaType

from mailgate_api.deps import Resources
from mailgate_api.errors import invalid
from mailgate_api.unsubscribe import service
from mailgate_api.unsubscribe.page import State, View, respond
from mailgate_common import blocklist, unsubscribe
from mailgate_common.failures import is_transient

ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"
# The result page is served at .../unsubscribe/address: its forms post to the same place.
FORM_ACTION_FROM_RESULT = "address"


def _text(body: str) -> Response[str]:
    return Response(body, status_code=200, media_type=MediaType.TEXT, headers={"Cache-Control": "no-store"})


class UnsubscribeController(Controller):
    tags = ["unsubscribe"]

    @post("/unsubscribe", status_code=200, request_max_body_size=service.MAX_BODY,
          summary="One-click unsubscribe (RFC 8058)",
          description="The mailbox provider's POST with the body List-Unsubscribe=One-Click. "
                      "200 for anything permanent (also a forged link: retrying cannot help), 5xx "
                      "for a transient failure so the provider retries.")
    async def one_click(self, request: Request[Any, Any, Any], res: Resources) -> Response[str]:
        fields = await service.form_fields(request)
        if fields.get(ONE_CLICK_FIELD) != ONE_CLICK_VALUE:
            # Not an RFC 8058 request (every provider sends this body): nothing is changed.
            raise invalid(ONE_CLICK_FIELD, "must be One-Click (the body is List-Unsubscribe=One-Click)")
        query = request.query_params
        payload, sig = query.get("data"), query.get("sig")
        data = service.signer(res.settings).verify(payload, sig) if payload and sig else None
        if data is None:
            return _text("data validation failed")
        wanted = unsubscribe.from_data(data)
        if wanted is None:
            return _text("not ok")
        outcome = await unsubscribe.apply(res.db, res.relay, wanted, unsubscribe.ONE_CLICK,
                                          service.requester(request, res.settings))
        return _text("unknown account" if outcome is None else "ok")

    @get("/unsubscribe", summary="The unsubscribe page (changes nothing)", media_type=MediaType.HTML)
    async def page(self, request: Request[Any, Any, Any], res: Resources) -> Response[str]:
        query = request.query_params
        payload, sig = query.get("data") or "", query.get("sig") or ""
        wanted = unsubscribe.read(service.signer(res.settings), payload, sig)
        if wanted is None:
            return respond(View(State.INVALID))
        try:
            async with res.db.sessions() as session:
                if not await unsubscribe.account_exists(session, wanted.account):
                    return respond(View(State.GONE))
                blocked = await blocklist.has(session, wanted.list_id, wanted.recipient)
        except Exception as exc:
            if is_transient(exc):
                return respond(View(State.UNAVAILABLE))
            raise
        state = State.UNSUBSCRIBED if blocked else State.SUBSCRIBED
        return respond(View(state, wanted.recipient, wanted.list_id, payload, sig))

    @post("/unsubscribe/address", status_code=200, request_max_body_size=service.MAX_BODY,
          media_type=MediaType.HTML, summary="The unsubscribe page's buttons (unsubscribe or re-subscribe)")
    async def form(self, request: Request[Any, Any, Any], res: Resources) -> Response[str]:
        fields = await service.form_fields(request)
        action, payload, sig = fields.get("action"), fields.get("data") or "", fields.get("sig") or ""
        wanted = unsubscribe.read(service.signer(res.settings), payload, sig)
        if wanted is None or action not in ("unsubscribe", "subscribe"):
            return respond(View(State.INVALID, action=FORM_ACTION_FROM_RESULT))
        who = service.requester(request, res.settings)
        try:
            async with res.db.transaction() as session:
                if not await unsubscribe.account_exists(session, wanted.account):
                    return respond(View(State.GONE, action=FORM_ACTION_FROM_RESULT))
                if action == "unsubscribe":
                    event = await unsubscribe.unsubscribe(session, wanted, unsubscribe.FORM, who)
                    state = State.UNSUBSCRIBED
                else:
                    event = await unsubscribe.resubscribe(session, wanted, who)
                    state = State.RESUBSCRIBED
        except Exception as exc:
            if is_transient(exc):
                return respond(View(State.UNAVAILABLE, action=FORM_ACTION_FROM_RESULT))
            raise
        if event is not None:
            await res.relay.publish_committed([event])
        return respond(View(state, wanted.recipient, wanted.list_id, payload, sig, FORM_ACTION_FROM_RESULT))
