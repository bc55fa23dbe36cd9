"""List unsubscribe end to end: the RFC 8058 one-click POST, the page (a GET changes
nothing), its buttons, forged links, the privacy setting and a mailto unsubscribe landing
in a real Dovecot INBOX.  Requests come from a plain HTTP client without a token, as a
mailbox provider's or a recipient's browser would send them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx
import pytest

from mailgate_common.tracking.tokens import Signer
from tests.e2e.test_imap_sync import add_imap_account, wait_connected
from tests.support.dovecot import Dovecot
from tests.support.smtp_sink import SmtpSink
from tests.support.stack import Stack, wait_for
from tests.support.webhook_receiver import WebhookReceiver

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def rcpt(prefix: str = "reader") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.org"


def new_list() -> str:
    return f"news-{uuid.uuid4().hex[:8]}.example.com"


def signer(stack: Stack) -> Signer:
    return Signer(stack.env["MAILGATE_SECRET"])


def link(stack: Stack, account: str, recipient: str, list_id: str, message_id: str = "<m1@sender.test>") -> str:
    return signer(stack).unsubscribe_url(stack.api_url, account=account, list_id=list_id, recipient=recipient,
                                         message_id=message_id)


def signed(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


@pytest.fixture
def public(stack: Stack) -> Iterator[httpx.Client]:
    """No token, no cookies: what a mailbox provider or a browser sends."""
    with httpx.Client(timeout=15, headers={"User-Agent": "OneClickTester/1.0"}) as client:
        yield client


def entries(api: httpx.Client, list_id: str) -> dict[str, dict[str, Any]]:
    listed = api.get(f"/v1/blocklist/{list_id}", params={"pageSize": 100})
    if listed.status_code == 404:
        return {}
    assert listed.status_code == 200, listed.text
    return {e["recipient"]: e for e in listed.json()["addresses"]}


def hooks(receiver: WebhookReceiver, event: str, recipient: str) -> list[dict[str, Any]]:
    return [h.json for h in receiver.received(event, recipient=recipient)]


def one_hook(receiver: WebhookReceiver, event: str, recipient: str) -> dict[str, Any]:
    [hook] = wait_for(lambda: hooks(receiver, event, recipient), message=f"{event} for {recipient}")
    found: dict[str, Any] = hook
    return found


def submit(api: httpx.Client, account: str, to: str) -> str:
    sent = api.post(f"/v1/account/{account}/submit", json={
        "to": [{"address": to}], "subject": "Your password reset", "text": "transactional"})
    assert sent.status_code == 200, sent.text
    queue_id: str = sent.json()["queueId"]
    return queue_id


def merge(api: httpx.Client, account: str, to: str, list_id: str, base: str) -> dict[str, Any]:
    """A one-recipient mail merge for ``list_id``: its one result."""
    response = api.post(f"/v1/account/{account}/submit", json={
        "mailMerge": [{"to": {"address": to}}], "listId": list_id, "baseUrl": base,
        "subject": f"News from {list_id}", "text": "This week's news."})
    assert response.status_code == 200, response.text
    [result] = response.json()["mailMerge"]
    assert result["success"] is True, result
    found: dict[str, Any] = result
    return found


def test_one_click_from_a_delivered_merge_blocks_that_list_only_and_is_announced_once(
    stack: Stack, api: httpx.Client, public: httpx.Client, account: str, smtp_sink: SmtpSink,
    webhook_receiver: WebhookReceiver,
) -> None:
    reader, list_id, other_list = rcpt(), new_list(), new_list()
    sent = merge(api, account, reader, list_id, stack.api_url)
    [received] = wait_for(lambda: smtp_sink.to(reader), message="the list message delivered")
    assert received.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = str(received.message["List-Unsubscribe"]).split(",")[0].strip().strip("<>")
    assert url.startswith(f"{stack.api_url}/unsubscribe?")

    # What the mailbox provider does with those headers (application/x-www-form-urlencoded).
    answer = public.post(url, data=ONE_CLICK)
    assert answer.status_code == 200 and answer.text == "ok", answer.text

    entry = entries(api, list_id)[reader]
    assert entry["source"] == "one-click" and entry["reason"] == "unsubscribe"
    assert entry["account"] == account and entry["messageId"] == sent["messageId"]
    assert entry["remoteAddress"] == "127.0.0.1" and entry["userAgent"] == "OneClickTester/1.0"
    hook = one_hook(webhook_receiver, "listUnsubscribe", reader)
    assert hook["account"] == account
    assert hook["data"] == {"recipient": reader, "messageId": sent["messageId"], "listId": list_id,
                            "remoteAddress": "127.0.0.1", "userAgent": "OneClickTester/1.0"}

    # The provider retries, this time as multipart/form-data (RFC 8058 allows both).
    again = public.post(url, files={"List-Unsubscribe": (None, "One-Click")})
    assert again.status_code == 200 and again.text == "ok", again.text
    assert list(entries(api, list_id)) == [reader]

    # The next merge for that list skips the reader; another list's merge and transactional mail do not.
    skipped = api.post(f"/v1/account/{account}/submit", json={
        "mailMerge": [{"to": {"address": reader}}], "listId": list_id, "subject": "More news", "text": "t"})
    assert skipped.status_code == 200, skipped.text
    assert skipped.json()["mailMerge"] == [{"success": True, "to": {"address": reader},
                                            "skipped": {"reason": "unsubscribe", "listId": list_id}}]
    merge(api, account, reader, other_list, stack.api_url)
    queue_id = submit(api, account, reader)
    wait_for(lambda: len(smtp_sink.to(reader)) == 3, message="the other list's message and a password reset")
    assert sorted(str(m.message["Subject"]) for m in smtp_sink.to(reader)) == sorted(
        [f"News from {list_id}", f"News from {other_list}", "Your password reset"])
    assert api.get(f"/v1/account/{account}/suppressions").json()["total"] == 0
    # Its messageSent was announced after the repeat: a second listUnsubscribe would be in by now.
    wait_for(lambda: webhook_receiver.received("messageSent", queueId=queue_id), message="messageSent")
    assert len(hooks(webhook_receiver, "listUnsubscribe", reader)) == 1


def test_simultaneous_one_click_requests_are_announced_once(
    stack: Stack, api: httpx.Client, public: httpx.Client, account: str, webhook_receiver: WebhookReceiver,
) -> None:
    reader, marker, list_id = rcpt(), rcpt("marker"), new_list()
    url = link(stack, account, reader, list_id)
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: httpx.post(url, data=ONE_CLICK, timeout=15), range(6)))
    assert [(a.status_code, a.text) for a in answers] == [(200, "ok")] * 6
    # Announced after all of them: a second listUnsubscribe for the reader would be in by now.
    assert public.post(link(stack, account, marker, list_id), data=ONE_CLICK).text == "ok"
    one_hook(webhook_receiver, "listUnsubscribe", marker)
    assert len(hooks(webhook_receiver, "listUnsubscribe", reader)) == 1
    assert sorted(entries(api, list_id)) == sorted([reader, marker])


def test_a_get_only_shows_the_page(
    stack: Stack, api: httpx.Client, public: httpx.Client, account: str, webhook_receiver: WebhookReceiver,
) -> None:
    reader, other, list_id = rcpt(), rcpt("other"), new_list()
    url = link(stack, account, reader, list_id)

    for _ in range(3):  # a link scanner, a prefetch and the reader: none of them unsubscribes
        page = public.get(url)
        assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["referrer-policy"] == "no-referrer" and page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    html = page.text
    assert reader in html and list_id in html
    assert '<form method="post" action="unsubscribe/address">' in html
    assert 'name="action" value="unsubscribe"' in html and f'name="sig" value="{signed(url)["sig"]}"' in html

    # Another reader's one-click request is announced; by then anything the GETs did would be too.
    assert public.post(link(stack, account, other, list_id), data=ONE_CLICK).text == "ok"
    one_hook(webhook_receiver, "listUnsubscribe", other)
    assert list(entries(api, list_id)) == [other]
    assert hooks(webhook_receiver, "listUnsubscribe", reader) == []


def test_the_page_unsubscribes_and_resubscribes_with_its_buttons(
    stack: Stack, api: httpx.Client, public: httpx.Client, account: str, webhook_receiver: WebhookReceiver,
) -> None:
    reader, list_id = rcpt(), new_list()
    url = link(stack, account, reader, list_id)
    form = f"{stack.api_url}/unsubscribe/address"  # where the page's relative action leads

    done = public.post(form, data={"action": "unsubscribe", **signed(url)})
    assert done.status_code == 200, done.text
    assert "You are unsubscribed" in done.text and 'name="action" value="subscribe"' in done.text
    assert 'action="address"' in done.text  # the result page posts to itself
    assert entries(api, list_id)[reader]["source"] == "form"
    assert one_hook(webhook_receiver, "listUnsubscribe", reader)["data"]["listId"] == list_id

    shown = public.get(url)
    assert "You are unsubscribed" in shown.text and 'value="subscribe"' in shown.text

    back = public.post(form, data={"action": "subscribe", **signed(url)})
    assert back.status_code == 200 and "Subscription resumed" in back.text
    assert entries(api, list_id) == {}
    hook = one_hook(webhook_receiver, "listSubscribe", reader)
    assert hook["account"] == account and hook["data"]["listId"] == list_id


def test_forged_or_dead_links_change_nothing(
    stack: Stack, api: httpx.Client, public: httpx.Client, account: str,
) -> None:
    reader, list_id = rcpt(), new_list()
    url = link(stack, account, reader, list_id)
    query = signed(url)
    path = f"{stack.api_url}/unsubscribe"
    other_list = signed(link(stack, account, reader, new_list()))
    forgeries = [
        {"data": query["data"], "sig": query["sig"][:-4] + "AAAA"},  # tampered signature
        {"data": other_list["data"], "sig": query["sig"]},  # someone else's data, this signature
        {"data": query["data"]},  # no signature
        signed(Signer("not-our-secret").unsubscribe_url(stack.api_url, account=account, list_id=list_id,
                                                         recipient=reader, message_id=None)),
    ]
    for forged in forgeries:
        # Final: a 2xx, or the provider would retry forever.
        answer = public.post(path, params=forged, data=ONE_CLICK)
        assert answer.status_code == 200 and answer.text == "data validation failed", (forged, answer.text)
        page = public.get(path, params=forged)
        assert page.status_code == 400 and "This unsubscribe link is not valid" in page.text
        button = public.post(f"{path}/address", data={"action": "unsubscribe", **forged})
        assert button.status_code == 400 and "not valid" in button.text

    gone = public.post(link(stack, account="no-such-account", recipient=reader, list_id=list_id), data=ONE_CLICK)
    assert gone.status_code == 200 and gone.text == "unknown account"
    assert public.get(link(stack, "no-such-account", reader, list_id)).status_code == 404

    # Not an RFC 8058 request: refused, naming what is missing.
    plain = public.post(url, data={"something": "else"})
    assert plain.status_code == 400 and plain.json()["field"] == "List-Unsubscribe", plain.text
    assert entries(api, list_id) == {}


def test_tracking_privacy_keeps_no_address_or_user_agent(
    stack: Stack, api: httpx.Client, public: httpx.Client, account: str, webhook_receiver: WebhookReceiver,
) -> None:
    assert api.post("/v1/settings", json={"trackingPrivacy": True}).status_code == 200
    try:
        reader, list_id = rcpt(), new_list()
        assert public.post(link(stack, account, reader, list_id), data=ONE_CLICK).text == "ok"
        entry = entries(api, list_id)[reader]
        assert "remoteAddress" not in entry and "userAgent" not in entry
        data = one_hook(webhook_receiver, "listUnsubscribe", reader)["data"]
        assert data["remoteAddress"] is None and data["userAgent"] is None
    finally:
        api.post("/v1/settings", json={"trackingPrivacy": False}).raise_for_status()


def unsubscribe_mail(to: str, mailto: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Reader <reader@example.org>"
    msg["To"] = to
    msg["Subject"] = unquote(mailto.split("?subject=", 1)[1])
    msg.set_content("This message was automatically generated by a mail app.\n")
    return msg.as_bytes()


def test_a_mailto_unsubscribe_in_the_inbox_blocks_the_reader(
    stack: Stack, api: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver,
) -> None:
    user = dovecot.new_user()
    mailbox = f"{user}@dovecot.test"
    account = add_imap_account(api, dovecot, smtp_sink, user)
    wait_connected(api, account)
    reader, stranger, list_id = rcpt(), rcpt("stranger"), new_list()

    # A token signed for another account, mailed to this one, does nothing here.
    foreign = signer(stack).unsubscribe_mailto(mailbox, account="another-account", list_id=list_id,
                                               recipient=stranger, message_id=None)
    dovecot.deliver(user, unsubscribe_mail(mailbox, foreign))
    # The mailto entry of a real list message from this (IMAP-watched) account, as a mail app uses it.
    sent = merge(api, account, reader, list_id, stack.api_url)
    [received] = wait_for(lambda: smtp_sink.to(reader), message="the list message delivered")
    _, mailto = (part.strip().strip("<>") for part in str(received.message["List-Unsubscribe"]).split(","))
    assert mailto.startswith(f"mailto:{mailbox}?subject=unsubscribe%20")
    dovecot.deliver(user, unsubscribe_mail(mailbox, mailto))

    entry = wait_for(lambda: entries(api, list_id).get(reader), message="the mailto unsubscribe applied")
    assert entry["source"] == "mailto" and entry["reason"] == "unsubscribe" and entry["account"] == account
    hook = one_hook(webhook_receiver, "listUnsubscribe", reader)
    assert hook["account"] == account and hook["data"]["messageId"] == sent["messageId"]
    assert list(entries(api, list_id)) == [reader]
