"""Mail merge (EmailEngine's ``mailMerge``), list headers and per-message tracking flags, end to end.

A merge is one submit answered with one entry per recipient; every queued entry
reaches the real SMTP sink as its own message, rendered with its own params.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import httpx

from mailgate_common.db import Database
from mailgate_common.event_relay import EventRelay
from mailgate_common.outbox import HeldBack, NewMessage, Outbox, Queued
from mailgate_common.tracking.tokens import Signer
from tests.support.smtp_sink import Received, SmtpSink
from tests.support.stack import Stack, wait_for


def outbox_total(api: httpx.Client, account: str) -> int:
    total: int = api.get("/v1/outbox", params={"account": account, "state": "all"}).json()["total"]
    return total


def template(api: httpx.Client, account: str, **content: str) -> str:
    response = api.post("/v1/templates/template", json={
        "account": account, "name": "Merge", "format": "html", "content": content})
    assert response.status_code == 200, response.text
    template_id: str = response.json()["id"]
    return template_id


def merge(api: httpx.Client, account: str, entries: list[dict[str, Any]], **fields: Any) -> httpx.Response:
    return api.post(f"/v1/account/{account}/submit", json={"mailMerge": entries, **fields})


def delivered_to(smtp_sink: SmtpSink, tag: str, count: int, timeout: float = 30) -> dict[str, list[Received]]:
    """Every message whose recipient carries ``tag``, by recipient, once ``count`` arrived."""
    def arrived() -> dict[str, list[Received]] | None:
        with smtp_sink.handler.lock:
            messages = list(smtp_sink.handler.messages)
        found: dict[str, list[Received]] = defaultdict(list)
        for message in messages:
            for rcpt in message.rcpt_tos:
                if tag in rcpt:
                    found[rcpt.lower()].append(message)
        return found if sum(map(len, found.values())) >= count else None

    result: dict[str, list[Received]] = wait_for(arrived, timeout=timeout, message=f"{count} deliveries")
    return result


def test_a_merge_of_1000_with_a_template_reaches_each_recipient_once_with_their_params(
    api: httpx.Client, account: str, smtp_sink: SmtpSink
) -> None:
    tag = uuid.uuid4().hex[:8]
    template_id = template(api, account, subject="Order {{params.order}} for {{params.name}}",
                           text="Hello {{params.name}}, order {{params.order}} ships {{params.when}}.",
                           html="<p>Hello <b>{{params.name}}</b></p>")
    entries = [{"to": {"name": f"Person {i}", "address": f"m{i}-{tag}@example.net"},
                "params": {"name": f"N{i} <{tag}>", "order": i, "when": "today" if i % 2 else "tomorrow"}}
               for i in range(1000)]
    started = time.monotonic()
    response = merge(api, account, entries, template=template_id)
    accepted = time.monotonic() - started
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"mailMerge"}
    results = answer["mailMerge"]
    assert len(results) == 1000
    for entry, result in zip(entries, results, strict=True):
        assert result["success"] is True and result["to"] == entry["to"], result
        assert result["queueId"] and result["messageId"] and result["sendAt"], result
    assert len({r["queueId"] for r in results}) == 1000
    assert accepted < 20, f"1,000 recipients took {accepted:.1f} s to accept"

    by_rcpt = delivered_to(smtp_sink, tag, 1000)
    assert len(by_rcpt) == 1000
    for i, result in enumerate(results):
        [received] = by_rcpt[f"m{i}-{tag}@example.net"]
        message = received.message
        assert received.rcpt_tos == [f"m{i}-{tag}@example.net"]
        assert message["Subject"] == f"Order {i} for N{i} <{tag}>"
        assert message["To"] == f"Person {i} <m{i}-{tag}@example.net>"
        assert message["Message-ID"] == result["messageId"]
        text = message.get_body(("plain",))
        html = message.get_body(("html",))
        assert text is not None and html is not None
        when = "today" if i % 2 else "tomorrow"
        assert text.get_content().strip() == f"Hello N{i} <{tag}>, order {i} ships {when}."
        assert f"<b>N{i} &lt;{tag}&gt;</b>" in html.get_content()
        # No listId: no list headers.
        assert message["List-ID"] is None and message["List-Unsubscribe"] is None
        assert message["List-Unsubscribe-Post"] is None


def test_entries_override_message_id_and_send_at(api: httpx.Client, account: str, smtp_sink: SmtpSink) -> None:
    tag = uuid.uuid4().hex[:8]
    later = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    soon = datetime.now(UTC) - timedelta(seconds=1)
    own_id = f"<own-{tag}@example.org>"
    response = merge(api, account, [
        {"to": {"address": f"now-{tag}@example.net"}, "messageId": own_id, "sendAt": soon.isoformat()},
        {"to": {"address": f"later-{tag}@example.net"}},
    ], subject="Scheduled", text="Hello", sendAt=later.isoformat())
    assert response.status_code == 200, response.text
    first, second = response.json()["mailMerge"]
    assert first["messageId"] == own_id
    assert second["messageId"] != own_id
    assert datetime.fromisoformat(second["sendAt"].replace("Z", "+00:00")) == later
    [received] = delivered_to(smtp_sink, f"now-{tag}", 1)[f"now-{tag}@example.net"]
    assert received.message["Message-ID"] == own_id
    scheduled = api.get(f"/v1/outbox/{second['queueId']}").json()
    assert scheduled["progress"] == {"status": "queued"}
    assert api.delete(f"/v1/outbox/{second['queueId']}").json() == {"deleted": True}


def test_fields_a_merge_forbids_and_bad_merges_are_refused_by_name(
    api: httpx.Client, account: str, smtp_sink: SmtpSink
) -> None:
    tag = uuid.uuid4().hex[:8]
    entry = {"to": {"address": f"x-{tag}@example.net"}}
    base = {"mailMerge": [entry], "subject": "s", "text": "t"}
    refused: list[tuple[dict[str, Any], str]] = [
        ({"to": [{"address": "a@example.org"}]}, "to"),
        ({"cc": {"address": "a@example.org"}}, "cc"),
        ({"bcc": [{"address": "a@example.org"}]}, "bcc"),
        ({"envelope": {"to": ["a@example.org"]}}, "envelope"),
        ({"raw": "TUlNRS1WZXJzaW9uOiAxLjANCg==", "text": None}, "raw"),
        ({"render": {"params": {"a": 1}}}, "render"),
        ({"render": False}, "render"),
        ({"messageId": "<one-for-all@example.org>"}, "messageId"),
        ({"listId": "not a host name"}, "listId"),
        ({"baseUrl": "ftp://files.example.com"}, "baseUrl"),
        ({"mailMerge": []}, "mailMerge"),
        ({"mailMerge": [{"params": {"a": 1}}]}, "mailMerge[0].to"),
        ({"mailMerge": [{**entry, "cc": "x"}]}, "mailMerge[0].cc"),
        ({"mailMerge": [entry] * 10_001}, "mailMerge"),
    ]
    before = outbox_total(api, account)
    for extra, field in refused:
        response = api.post(f"/v1/account/{account}/submit", json={**base, **extra})
        assert response.status_code == 400, (field, response.text)
        assert response.json()["field"] == field, (field, response.json())
    # listId belongs to a merge only.
    alone = api.post(f"/v1/account/{account}/submit", json={
        "to": [{"address": f"y-{tag}@example.net"}], "text": "t", "listId": "news"})
    assert alone.status_code == 400 and alone.json()["field"] == "listId", alone.text
    assert outbox_total(api, account) == before


def test_suppressed_and_unsubscribed_recipients_are_skipped_and_bad_entries_fail_alone(
    api: httpx.Client, account: str, stack: Stack, smtp_sink: SmtpSink
) -> None:
    tag = uuid.uuid4().hex[:8]
    list_id = f"news-{tag}"
    ok, suppressed, left, bad = (f"ok-{tag}@example.net", f"sup-{tag}@example.net",
                                 f"Left-{tag}@Example.net", f"bad-{tag}@@example.net")
    api.post(f"/v1/account/{account}/suppressions", json={"address": suppressed, "reason": "complained"}
             ).raise_for_status()
    stack.rows("INSERT INTO blocklist_entries (list_id, address, account_id, reason, source) "
               "VALUES ($1, $2, $3, 'unsubscribe', 'api')", list_id, left.lower(), account)
    # Another list's unsubscribe does not skip anyone here.
    stack.rows("INSERT INTO blocklist_entries (list_id, address, reason) VALUES ('other-list', $1, 'unsubscribe')",
        ok)
    response = merge(api, account, [{"to": {"address": a}, "params": {"n": a}} for a in (ok, suppressed, left, bad)],
                     subject="Weekly", html="<p>{{params.n}}</p>", listId=list_id)
    assert response.status_code == 200, response.text
    sent, skipped_suppressed, skipped_left, failed = response.json()["mailMerge"]
    assert sent["success"] is True and sent["queueId"]
    assert skipped_suppressed == {"success": True, "to": {"address": suppressed},
                                  "skipped": {"reason": "complained", "listId": None}}
    assert skipped_left == {"success": True, "to": {"address": left},
                            "skipped": {"reason": "unsubscribe", "listId": list_id}}
    assert failed["success"] is False and failed["to"] == {"address": bad}
    assert failed["statusCode"] == 400 and failed["code"] == "InputValidationError"
    assert "mailMerge[3].to" in failed["error"] and "not a valid email address" in failed["error"]
    assert "queueId" not in failed and "queueId" not in skipped_left
    [received] = delivered_to(smtp_sink, f"ok-{tag}", 1)[ok]
    assert received.message.get_body(("html",)) is not None
    for address in (suppressed, left):
        assert smtp_sink.to(address) == []


def test_list_headers_signed_unsubscribe_url_in_the_body_and_tracking_options(
    api: httpx.Client, account: str, stack: Stack, smtp_sink: SmtpSink
) -> None:
    tag = uuid.uuid4().hex[:8]
    to = f"reader-{tag}@example.net"
    template_id = template(api, account, subject="Digest",
                           html='<p>Hi</p><a href="{{rcpt.unsubscribeUrl}}">Unsubscribe</a>',
                           text="Leave: {{rcpt.unsubscribeUrl}}")
    response = merge(api, account, [{"to": {"address": to}}], template=template_id, listId="digest",
                     baseUrl="https://track.example.com/", trackOpens=True, trackingEnabled=False)
    assert response.status_code == 200, response.text
    [result] = response.json()["mailMerge"]
    [received] = delivered_to(smtp_sink, f"reader-{tag}", 1)[to]
    message = received.message
    assert message["List-ID"] == "<digest.track.example.com>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # The account is send-only: no mailto entry, since no one would read a mail sent there.
    https = str(message["List-Unsubscribe"]).strip().strip("<>")
    assert https.startswith("https://track.example.com/unsubscribe?")
    query = parse_qs(urlsplit(https).query)
    signer = Signer(stack.env["MAILGATE_SECRET"])
    data = signer.verify(query["data"][0], query["sig"][0])
    assert data == {"act": "unsub", "acc": account, "list": "digest", "rcpt": to, "msg": result["messageId"]}
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().strip() == f"Leave: {https}"
    # Escaped as handlebars.js escapes {{...}} in html; a browser reads the same URL.
    assert f'href="{https}"' in unescape(html.get_content())
    [row] = stack.rows("SELECT options FROM outbox WHERE id = $1", result["queueId"])
    options = json.loads(row["options"])
    # trackingEnabled fills in only the flag the request left out.
    assert options == {"listId": "digest", "baseUrl": "https://track.example.com", "trackOpens": True,
                       "trackClicks": False}


def test_tracking_flags_of_a_single_submit_reach_the_outbox_row(api: httpx.Client, account: str,
                                                                  stack: Stack) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({}, {}),
        ({"trackingEnabled": True}, {"trackOpens": True, "trackClicks": True}),
        ({"trackClicks": False, "baseUrl": "http://links.example.com"},
         {"trackClicks": False, "baseUrl": "http://links.example.com"}),
        ({"baseUrl": ""}, {}),
    ]
    for fields, expected in cases:
        response = api.post(f"/v1/account/{account}/submit", json={
            "to": [{"address": f"flags-{uuid.uuid4().hex[:6]}@example.net"}], "text": "x", "sendAt": later,
            **fields})
        assert response.status_code == 200, response.text
        queue_id = response.json()["queueId"]
        [row] = stack.rows("SELECT options FROM outbox WHERE id = $1", queue_id)
        assert json.loads(row["options"]) == expected, fields
        api.delete(f"/v1/outbox/{queue_id}")


def test_a_retried_merge_answers_the_first_result_and_queues_nothing_twice(
    api: httpx.Client, account: str, smtp_sink: SmtpSink
) -> None:
    tag = uuid.uuid4().hex[:8]
    entries = [{"to": {"address": f"idem{i}-{tag}@example.net"}, "params": {"i": i}} for i in range(3)]
    body = {"mailMerge": entries, "subject": "Once {{params.i}}", "text": "x"}
    headers = {"Idempotency-Key": f"merge-{tag}"}
    first = api.post(f"/v1/account/{account}/submit", json=body, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["idempotency"] == {"key": f"merge-{tag}", "status": "MISS"}
    total = outbox_total(api, account)
    again = api.post(f"/v1/account/{account}/submit", json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["mailMerge"] == first.json()["mailMerge"]
    assert again.json()["idempotency"] == {"key": f"merge-{tag}", "status": "HIT"}
    assert outbox_total(api, account) == total
    other = api.post(f"/v1/account/{account}/submit", json={**body, "text": "changed"}, headers=headers)
    assert other.status_code == 409 and other.json()["code"] == "IdempotencyConflict", other.text
    by_rcpt = delivered_to(smtp_sink, tag, 3)
    assert sorted(len(found) for found in by_rcpt.values()) == [1, 1, 1]


def test_a_dry_run_merge_decides_every_entry_and_queues_nothing(
    api: httpx.Client, account: str, smtp_sink: SmtpSink
) -> None:
    tag = uuid.uuid4().hex[:8]
    suppressed = f"dry-sup-{tag}@example.net"
    api.post(f"/v1/account/{account}/suppressions", json={"address": suppressed, "reason": "bounced"}
             ).raise_for_status()
    before = outbox_total(api, account)
    response = merge(api, account, [{"to": {"address": f"dry-{tag}@example.net"}}, {"to": {"address": suppressed}}],
                     subject="Preview", text="x", dryRun=True)
    assert response.status_code == 200, response.text
    built, skipped = response.json()["mailMerge"]
    assert built["success"] is True and built["messageId"] and "queueId" not in built
    assert skipped["skipped"] == {"reason": "bounced", "listId": None}
    assert outbox_total(api, account) == before


class _Wakeups:
    """Stands in for the event relay: counts the sender's wake-up calls."""

    def __init__(self) -> None:
        self.hints: list[Any] = []

    def publish_hint(self, event: Any) -> None:
        self.hints.append(event)


def test_enqueue_many_commits_what_its_guard_allows_and_wakes_the_sender_once(
    api: httpx.Client, account: str, stack: Stack
) -> None:
    tag = uuid.uuid4().hex[:8]
    blocked = f"raced-{tag}@example.net"
    # Suppressed after the merge screened its recipients: only the guarded insert sees it.
    api.post(f"/v1/account/{account}/suppressions", json={"address": blocked, "reason": "bounced"}
             ).raise_for_status()

    def message(to: str) -> NewMessage:
        return NewMessage(account_id=account, message_id=f"<{uuid.uuid4()}@sender.test>",
                          envelope_from=f"{account}@sender.test", envelope_to=[to], subject="s",
                          raw=b"Subject: s\r\n\r\nx\r\n", send_at=datetime.now(UTC), max_attempts=1)

    async def run() -> tuple[list[Queued | HeldBack], Queued | HeldBack, int]:
        db = Database(stack.database_url, pool_size=1)
        wakeups = _Wakeups()
        try:
            outbox = Outbox(db, cast(EventRelay, wakeups))
            answers = await outbox.enqueue_many([message(f"a-{tag}@example.net"), message(blocked),
                                                 message(f"b-{tag}@example.net")])
            # Scheduled for later, the sender's poller finds it: no wake-up at all.
            later = message(f"c-{tag}@example.net")
            later.send_at = datetime.now(UTC) + timedelta(hours=1)
            [scheduled] = await outbox.enqueue_many([later])
            return answers, scheduled, len(wakeups.hints)
        finally:
            await db.dispose()

    (first, held, second), scheduled, wakeups = asyncio.run(run())
    assert isinstance(scheduled, Queued)
    assert api.delete(f"/v1/outbox/{scheduled.queue_id}").json() == {"deleted": True}
    assert isinstance(first, Queued) and isinstance(second, Queued)
    assert held == HeldBack({blocked: "bounced"})
    assert wakeups == 1
    rows = stack.rows("SELECT envelope_to FROM outbox WHERE id = ANY($1::text[])",
               [first.queue_id, second.queue_id])
    assert sorted(r["envelope_to"][0] for r in rows) == [f"a-{tag}@example.net", f"b-{tag}@example.net"]
