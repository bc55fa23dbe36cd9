"""Webhook bodies and headers shaped as EmailEngine's (lib/payload-examples-webhooks.json)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from mailgate_common import events
from mailgate_webhooks.attempts import ee_headers
from mailgate_webhooks.jobs import Job, Target
from mailgate_webhooks.payload import render

WHEN = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def body(event: events.Event, service_url: str | None = None) -> dict[str, object]:
    name = event.webhook_name()
    assert name is not None
    result: dict[str, object] = json.loads(render(event, name, service_url))
    return result


def new_message(**overrides: object) -> events.MessageNew:
    fields: dict[str, object] = dict(
        account="acme", path="INBOX", message="AAAADAAABy4", uid=1838, message_id="<m1@example.org>",
        subject="Hello", from_={"name": "Ann", "address": "ann@example.org"},
        to=[{"address": "bob@example.net"}], date=WHEN, flags=[], size=549, occurred_at=WHEN,
        sender={"address": "ann@example.org"}, reply_to=[{"address": "replies@example.org"}],
        attachments=[{"id": "AAAADAAABy4y", "contentType": "image/png", "encodedSize": 546,
                      "filename": "a.png", "embedded": False, "inline": False}],
        text={"id": "AAAADAAABy6T", "encodedSize": {"plain": 34, "html": 66}},
    )
    fields.update(overrides)
    return events.MessageNew(**fields)  # type: ignore[arg-type]


def test_envelope_has_null_service_url_and_the_folder_at_the_top() -> None:
    hook = body(new_message())
    assert list(hook) == ["serviceUrl", "account", "date", "path", "specialUse", "event", "eventId", "data"]
    assert hook["serviceUrl"] is None
    assert hook["path"] == "INBOX"
    assert hook["specialUse"] == "\\Inbox"
    assert hook["event"] == "messageNew"
    assert body(new_message(), "https://mail.example.org")["serviceUrl"] == "https://mail.example.org"


def test_message_new_data_has_emailengine_fields() -> None:
    data = body(new_message())["data"]
    assert isinstance(data, dict)
    assert data == {
        "id": "AAAADAAABy4", "uid": 1838, "path": "INBOX", "date": "2026-12-07T10:00:00.000Z", "flags": [],
        "unseen": True, "flagged": False, "answered": False, "draft": False, "size": 549, "subject": "Hello",
        "from": {"name": "Ann", "address": "ann@example.org"}, "sender": {"address": "ann@example.org"},
        "replyTo": [{"address": "replies@example.org"}], "to": [{"address": "bob@example.net"}],
        "attachments": [{"id": "AAAADAAABy4y", "contentType": "image/png", "encodedSize": 546,
                         "filename": "a.png", "embedded": False, "inline": False}],
        "messageId": "<m1@example.org>",
        "text": {"id": "AAAADAAABy6T", "encodedSize": {"plain": 34, "html": 66}},
        "seemsLikeNew": True, "messageSpecialUse": "\\Inbox",
    }


def test_message_new_in_another_folder_and_with_headers() -> None:
    event = new_message(path="Junk", special_use="\\Junk", flags=["\\Seen", "\\Answered"],
                        headers={"x-campaign": ["spring"]}, cc=[{"address": "cc@example.net"}],
                        in_reply_to="<parent@example.org>")
    hook = body(event)
    assert (hook["path"], hook["specialUse"]) == ("Junk", "\\Junk")
    data = hook["data"]
    assert isinstance(data, dict)
    assert data["messageSpecialUse"] == "\\Junk"
    assert data["headers"] == {"x-campaign": ["spring"]}
    assert data["cc"] == [{"address": "cc@example.net"}]
    assert data["inReplyTo"] == "<parent@example.org>"
    assert (data["unseen"], data["answered"], data["seemsLikeNew"]) == (False, True, False)
    # A folder without a special use has no specialUse anywhere.
    plain = body(new_message(path="Projects"))
    assert "specialUse" not in plain
    assert "messageSpecialUse" not in plain["data"]  # type: ignore[operator]


def test_message_updated_says_added_deleted_and_value() -> None:
    event = events.MessageUpdated(account="acme", path="INBOX", message="AAAADAAABy4", uid=1838,
                                  flags=["\\Seen"], added=["\\Seen"], removed=["\\Flagged"])
    hook = body(event)
    assert hook["path"] == "INBOX"
    assert hook["data"] == {"id": "AAAADAAABy4", "uid": 1838,
                            "changes": {"flags": {"added": ["\\Seen"], "deleted": ["\\Flagged"],
                                                  "value": ["\\Seen"]}}}


def test_message_deleted_is_id_and_uid_with_the_folder_at_the_top() -> None:
    event = events.MessageDeleted(account="acme", path="Trash", message="AAAADAAABy4", uid=7,
                                  message_id="<m1@example.org>", special_use="\\Trash")
    hook = body(event)
    assert (hook["path"], hook["specialUse"]) == ("Trash", "\\Trash")
    assert hook["data"] == {"id": "AAAADAAABy4", "uid": 7}


def test_message_complaint_has_arf_and_headers_directly_under_data() -> None:
    event = events.MessageComplaint(account="acme", complaint_message="AAAAAQAABzE", recipient="bob@example.net",
                                    feedback_type="abuse", message_id="<m1@example.org>", queue_id="q1")
    data = body(event)["data"]
    assert isinstance(data, dict)
    assert data["arf"] == {"feedbackType": "abuse", "originalRcptTo": ["bob@example.net"]}
    assert data["headers"] == {"messageId": "<m1@example.org>"}
    assert "complaint" not in data


def test_mailbox_new_and_deleted() -> None:
    created = body(events.MailboxNew(account="acme", path="Work/Projects", name="Projects", uid_validity=17))
    assert created["event"] == "mailboxNew"
    assert created["path"] == "Work/Projects"
    assert created["data"] == {"path": "Work/Projects", "name": "Projects", "specialUse": False,
                               "uidValidity": "17"}
    gone = body(events.MailboxDeleted(account="acme", path="Old", name="Old", special_use="\\Archive"))
    assert gone["data"] == {"path": "Old", "name": "Old", "specialUse": "\\Archive"}
    assert {"mailboxNew", "mailboxDeleted"} <= set(events.WEBHOOK_EVENT_NAMES)


def test_mailbox_events_survive_the_bus() -> None:
    event = events.MailboxNew(account="acme", path="Work", name="Work", uid_validity=3)
    assert events.decode(events.encode(event)) == event


def test_emailengine_delivery_headers() -> None:
    job = Job(delivery_id=42, claim_token="t", endpoint_id=None, event_id="ev-1", event="messageNew",
              payload=b"{}", attempts_made=2, retry_from=WHEN,
              target=Target(url="http://example.org/hook", secret="whsec_AAAA", previous_secret=None, headers={}),
              claimed_at=0.0, context=None)
    assert ee_headers(job, WHEN + timedelta(seconds=61.4)) == {
        "X-EE-Wh-Id": "42", "X-EE-Wh-Attempts-Made": "2", "X-EE-Wh-Queued-Time": "61s", "X-EE-Wh-Event-Id": "ev-1",
    }
