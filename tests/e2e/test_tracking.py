"""Open and click tracking end to end: submit with trackOpens/trackClicks, the
delivered html, the pixel and redirect routes, trackOpen/trackClick webhooks
with their machine verdicts, excludeMachine endpoints and trackingPrivacy."""

from __future__ import annotations

import asyncio
import html
import re
import signal
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from mailgate_common.tracking.tokens import Signer
from tests.support.smtp_sink import SmtpSink
from tests.support.stack import Stack, free_port, wait_for
from tests.support.webhook_receiver import WebhookReceiver

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
NO_STORE = "no-store, no-cache, must-revalidate, max-age=0"
PAGE = ('<html><body><p>Your receipt</p>'
        '<a href="https://shop.example/orders?id=7&amp;lang=en">order</a>'
        '<a href="mailto:help@shop.example">help</a>'
        '<a href="#top">top</a>'
        '<a href="https://shop.example/private" data-notrack>private</a>'
        "</body></html>")


@pytest.fixture(scope="module")
def proxied(stack: Stack) -> Iterator[str]:
    """A second API behind a "reverse proxy" on loopback (127.0.0.1 trusted for
    X-Forwarded-For), without the prefetch window: fetches through it are a person's."""
    port = free_port()
    service = stack.add_service("api-tracking", "mailgate-api", f"http://127.0.0.1:{port}/health", {
        "MAILGATE_API_PORT": str(port), "MAILGATE_TRUSTED_PROXIES": "127.0.0.1",
        "MAILGATE_TRACKING_PREFETCH_SECONDS": "0"})
    service.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        service.kill(signal.SIGTERM)
        stack.services.pop("api-tracking", None)


def submit(api: httpx.Client, account: str, **fields: Any) -> tuple[str, str, str]:
    rcpt = f"track-{uuid.uuid4().hex[:8]}@example.net"
    response = api.post(f"/v1/account/{account}/submit", json={
        "to": [{"address": rcpt}], "subject": "Receipt", "text": "Your receipt", "html": PAGE, **fields})
    assert response.status_code == 200, response.text
    body = response.json()
    return body["queueId"], body["messageId"], rcpt


def delivered_html(smtp_sink: SmtpSink, rcpt: str) -> str:
    [got] = wait_for(lambda: smtp_sink.to(rcpt), message="delivery")
    message: EmailMessage = got.message
    part = message.get_body(("html",))
    assert part is not None
    content: str = part.get_content()
    return content


def links(page: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(r'<a\b[^>]*href="([^"]*)"', page)]


def pixel(page: str) -> str:
    [src] = re.findall(r'<img src="([^"]*)" width="1" height="1"', page)
    return html.unescape(src)


def via(url: str, base: str) -> str:
    """The same signed link, fetched through another API address."""
    parts = urlsplit(url)
    return f"{base}{parts.path}?{parts.query}"




def hooks_of(receiver: WebhookReceiver, message_id: str) -> list[dict[str, Any]]:
    return [h.json for h in receiver.received() if h.json.get("data", {}).get("messageId") == message_id]


def wait_hooks(receiver: WebhookReceiver, message_id: str, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = wait_for(lambda: len(hooks_of(receiver, message_id)) >= count and
                                           hooks_of(receiver, message_id), message=f"{count} tracking hooks")
    return found


@pytest.fixture
def two_endpoints(receivers: Callable[..., WebhookReceiver],
                  endpoints: Callable[..., dict[str, Any]]) -> tuple[WebhookReceiver, WebhookReceiver, str]:
    """Two endpoints of the tracking events: one gets everything, one excludes machine ones."""
    everything, people = receivers(), receivers()
    tracked = ["trackOpen", "trackClick"]
    endpoints(f"http://127.0.0.1:{everything.port}/hook", events=tracked)
    human = endpoints(f"http://127.0.0.1:{people.port}/hook", events=tracked, excludeMachine=True)
    assert human["excludeMachine"] is True
    return everything, people, human["id"]


def test_tracked_message_from_delivery_to_webhooks(
    api: httpx.Client, stack: Stack, account: str, smtp_sink: SmtpSink, proxied: str,
    two_endpoints: tuple[WebhookReceiver, WebhookReceiver, str],
) -> None:
    everything, people, human_id = two_endpoints
    queue_id, message_id, rcpt = submit(api, account, trackOpens=True, trackClicks=True)
    page = delivered_html(smtp_sink, rcpt)

    # The delivered html: the pixel, the click link; mailto, anchors and the opt-out as they were.
    hrefs = links(page)
    assert hrefs[0].startswith(f"{stack.api_url}/redirect?")
    assert hrefs[1:] == ["mailto:help@shop.example", "#top", "https://shop.example/private"]
    assert "data-notrack" not in page
    open_url = pixel(page)
    assert open_url.startswith(f"{stack.api_url}/open.gif?")
    assert page.index(open_url.replace("&", "&amp;")) < page.index("</body>")
    # The stored body is the submitted one.
    [(stored,)] = stack.rows("SELECT raw FROM outbox WHERE id = $1", queue_id)
    assert b"open.gif" not in stored and b"/redirect?" not in stored and b"data-notrack" in stored

    click_url = hrefs[0]
    # Right after the send, on the main API (5 s prefetch window): a scanner's click.
    response = httpx.get(click_url, headers={"User-Agent": BROWSER})
    assert response.status_code == 302
    assert response.headers["location"] == "https://shop.example/orders?id=7&lang=en"
    assert response.headers["referrer-policy"] == "no-referrer"

    # A person, through the proxied API: first open, another open, a click.
    with httpx.Client(headers={"User-Agent": BROWSER}) as person:
        first = person.get(via(open_url, proxied))
        assert first.status_code == 200 and first.headers["content-type"] == "image/gif"
        assert first.headers["cache-control"] == NO_STORE
        assert first.content.startswith(b"GIF89a") and len(first.content) == 42
        wait_hooks(everything, message_id, 2)
        assert person.get(via(open_url, proxied)).status_code == 200
        clicked = person.get(via(click_url, proxied))
        assert clicked.status_code == 302 and clicked.headers["location"] == "https://shop.example/orders?id=7&lang=en"
    # Apple Mail Privacy Protection fetching the pixel through the proxy.
    apple = httpx.get(via(open_url, proxied), headers={"User-Agent": "Mozilla/5.0",
                                                        "X-Forwarded-For": "17.58.63.4"})
    assert apple.status_code == 200

    hooks = wait_hooks(everything, message_id, 5)
    assert len(hooks) == 5
    by_kind = {(h["event"], h["data"]["machine"], h["data"]["machineReason"]): h for h in hooks}
    prefetched = by_kind[("trackClick", True, "prefetch_timing")]
    assert prefetched["account"] == account
    assert prefetched["data"]["url"] == "https://shop.example/orders?id=7&lang=en"
    assert prefetched["data"]["remoteAddress"] == "127.0.0.1" and prefetched["data"]["userAgent"] == BROWSER
    opens = [h["data"] for h in hooks if h["event"] == "trackOpen" and not h["data"]["machine"]]
    assert sorted(o["firstOpen"] for o in opens) == [False, True]
    for data in opens:
        assert data["messageId"] == message_id and data["queueId"] == queue_id and data["recipient"] == rcpt
        assert data["remoteAddress"] == "127.0.0.1" and data["userAgent"] == BROWSER
        assert data["machineReason"] is None
    human_click = by_kind[("trackClick", False, None)]["data"]
    assert human_click["url"] == "https://shop.example/orders?id=7&lang=en"
    apple_open = by_kind[("trackOpen", True, "apple_mpp")]["data"]
    assert apple_open["remoteAddress"] == "17.58.63.4" and apple_open["userAgent"] == "Mozilla/5.0"
    assert apple_open["firstOpen"] is False

    # The excludeMachine endpoint got the person's three, none of the machine ones.
    people_hooks = wait_hooks(people, message_id, 3)
    stored_for_people = api.get(f"/v1/webhooks/{human_id}/deliveries", params={"pageSize": 100}).json()
    assert stored_for_people["total"] == 3
    assert all(not h["data"]["machine"] for h in people_hooks)

    rows = stack.rows("SELECT kind, machine, machine_reason, first FROM tracking_events WHERE queue_id = $1 "
                          "ORDER BY id", queue_id)
    assert [tuple(r) for r in rows] == [("click", True, "prefetch_timing", False), ("open", False, None, True),
                                        ("open", False, None, False), ("click", False, None, False),
                                        ("open", True, "apple_mpp", False)]


def test_bad_links_are_refused_and_head_counts_nothing(
    api: httpx.Client, stack: Stack, account: str, smtp_sink: SmtpSink,
) -> None:
    queue_id, _, rcpt = submit(api, account, trackOpens=True, trackClicks=True)
    page = delivered_html(smtp_sink, rcpt)
    click_url, open_url = links(page)[0], pixel(page)
    query = parse_qs(urlsplit(click_url).query)
    data, sig = query["data"][0], query["sig"][0]
    base = stack.api_url
    evil = data[:-4] + ("AAAA" if not data.endswith("AAAA") else "BBBB")
    for bad in (f"{base}/redirect?data={evil}&sig={sig}",
                f"{base}/redirect?data={data}",
                f"{base}/redirect?data={data}&sig=deadbeef.{sig.split('.', 1)[1]}",
                f"{base}/redirect?url=https://evil.example/",
                f"{base}/redirect?data={parse_qs(urlsplit(open_url).query)['data'][0]}"
                f"&sig={parse_qs(urlsplit(open_url).query)['sig'][0]}"):  # an open link is no click link
        response = httpx.get(bad)
        assert response.status_code == 403, bad
        assert "location" not in response.headers
        assert response.json()["statusCode"] == 403
    bad_pixel = httpx.get(f"{base}/open.gif?data={evil}&sig={sig}")
    assert bad_pixel.status_code == 200 and bad_pixel.headers["content-type"] == "image/gif"
    assert httpx.get(f"{base}/open.gif").status_code == 200

    head_pixel = httpx.head(open_url)
    assert head_pixel.status_code == 200 and head_pixel.headers["cache-control"] == NO_STORE
    head_click = httpx.head(click_url)
    assert head_click.status_code == 302
    assert head_click.headers["location"] == "https://shop.example/orders?id=7&lang=en"
    assert httpx.head(f"{base}/redirect?data={evil}&sig={sig}").status_code == 403

    assert stack.rows("SELECT id FROM tracking_events WHERE queue_id = $1", queue_id) == []

    # Genuinely signed, but not an http(s) destination: refused all the same.
    signer = Signer(stack.env["MAILGATE_SECRET"])
    assert httpx.get(signer.click_url(base, "javascript:alert(1)", account=account, queue_id=queue_id,
                                      message_id=None, recipient=None)).status_code == 403
    # A link without a queue id (hand-made) still counts, by its Message-ID.
    message_id = f"<{uuid.uuid4().hex}@hand.example>"
    hand_made = signer.open_url(base, account=account, queue_id=None, message_id=message_id, recipient=None)
    assert httpx.get(hand_made).status_code == 200
    assert httpx.get(hand_made).status_code == 200
    rows = stack.rows("SELECT first FROM tracking_events WHERE message_id = $1 ORDER BY id", message_id)
    assert [r["first"] for r in rows] == [True, False]


def test_untracked_unless_asked_and_the_runtime_settings_decide_when_absent(
    api: httpx.Client, account: str, smtp_sink: SmtpSink,
) -> None:
    _, _, rcpt = submit(api, account, trackOpens=False, trackClicks=False)
    page = delivered_html(smtp_sink, rcpt)
    assert "open.gif" not in page and "/redirect?" not in page and "data-notrack" in page

    assert api.post("/v1/settings", json={"trackOpens": True}).status_code == 200
    try:
        def tracked_by_default() -> bool:
            _, _, rcpt = submit(api, account)  # no flags: the settings decide at send time
            page = delivered_html(smtp_sink, rcpt)
            assert "/redirect?" not in page  # trackClicks is still off
            return "open.gif" in page
        wait_for(tracked_by_default, 10, interval=0.5, message="the trackOpens setting applied")
        _, _, rcpt = submit(api, account, trackOpens=False)  # the message's own flag wins
        assert "open.gif" not in delivered_html(smtp_sink, rcpt)
    finally:
        api.post("/v1/settings", json={"trackOpens": False})
    assert api.post("/v1/settings", json={"trackClicks": "often"}).json()["field"] == "trackClicks"


def test_tracking_privacy_keeps_only_the_verdicts(
    api: httpx.Client, stack: Stack, account: str, smtp_sink: SmtpSink, proxied: str,
    receivers: Callable[..., WebhookReceiver], endpoints: Callable[..., dict[str, Any]],
) -> None:
    receiver = receivers()
    endpoints(f"http://127.0.0.1:{receiver.port}/hook", events=["trackOpen"])
    queue_id, message_id, rcpt = submit(api, account, trackOpens=True)
    open_url = pixel(delivered_html(smtp_sink, rcpt))
    assert api.post("/v1/settings", json={"trackingPrivacy": True}).status_code == 200
    try:
        httpx.get(via(open_url, proxied), headers={"User-Agent": "Mozilla/5.0", "X-Forwarded-For": "17.1.2.3"})
        [hook] = wait_hooks(receiver, message_id, 1)
    finally:
        api.post("/v1/settings", json={"trackingPrivacy": False})
    data = hook["data"]
    assert data["remoteAddress"] is None and data["userAgent"] is None
    assert data["machine"] is True and data["machineReason"] == "apple_mpp" and data["firstOpen"] is True
    [row] = stack.rows("SELECT remote_address, user_agent, machine_reason FROM tracking_events "
                           "WHERE queue_id = $1", queue_id)
    assert tuple(row) == (None, None, "apple_mpp")


def test_exclude_machine_is_an_endpoint_field(
    api: httpx.Client, endpoints: Callable[..., dict[str, Any]],
) -> None:
    created = endpoints("http://127.0.0.1:9/hook")
    assert created["excludeMachine"] is False
    changed = api.put(f"/v1/webhooks/{created['id']}", json={"excludeMachine": True})
    assert changed.status_code == 200 and changed.json()["excludeMachine"] is True
    assert api.get(f"/v1/webhooks/{created['id']}").json()["excludeMachine"] is True
    kept = api.put(f"/v1/webhooks/{created['id']}", json={"description": "no bots"}).json()
    assert kept["excludeMachine"] is True
    bad = api.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/x", "excludeMachine": "yes"})
    assert bad.status_code == 400 and "excludeMachine" in bad.text


def test_concurrent_opens_have_exactly_one_first(stack: Stack, account: str) -> None:
    queue_id = f"hand-{uuid.uuid4().hex}"
    url = Signer(stack.env["MAILGATE_SECRET"]).open_url(stack.api_url, account=account, queue_id=queue_id,
                                                        message_id=None, recipient=None)

    async def fetch_all() -> list[int]:
        async with httpx.AsyncClient() as client:
            responses = await asyncio.gather(*(client.get(url) for _ in range(8)))
        return [r.status_code for r in responses]

    assert asyncio.run(fetch_all()) == [200] * 8
    rows = stack.rows("SELECT first FROM tracking_events WHERE queue_id = $1", queue_id)
    assert len(rows) == 8 and sum(r["first"] for r in rows) == 1
