"""Templates over SMTP: ``X-Mailgate-Template`` renders a submission before it is queued.

Real smtplib against the stack's SMTP door, delivery checked at the real SMTP sink.
"""

from __future__ import annotations

import base64
import json
import smtplib
import uuid
from email import policy
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from tests.support.smtp_sink import SmtpSink
from tests.support.stack import Stack, wait_for
from tests.support.tokens import create_token

HOST = "127.0.0.1"
HTML = ("<html><head><style>p { color: red } @media (max-width: 600px) { p { color: blue } }</style></head>"
        "<body><p>Hello {{rcpt.name}}, order {{params.order.id}} ({{params.note}})</p>"
        '<img src="cid:logo@x"></body></html>')


def rcpt(tag: str = "smtpt") -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}@example.org"


@pytest.fixture
def token(stack: Stack, account: str) -> str:
    return create_token(stack.database_url, account, ["smtp"])


def template(api: httpx.Client, account: str | None, **content: Any) -> str:
    response = api.post("/v1/templates/template", json={
        "account": account, "name": "smtp", "inlineCss": True, "content": content})
    assert response.status_code == 200, response.text
    template_id: str = response.json()["id"]
    return template_id


def message(to: str, headers: dict[str, str]) -> EmailMessage:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = "app@sender.test"
    msg["To"] = f"Zoë Ångström <{to}>"
    msg["Subject"] = "the application's subject"
    for name, value in headers.items():
        msg[name] = value
    msg.set_content("the application's body")
    msg.add_alternative("<p>the application's html</p>", subtype="html")
    return msg


def send(stack: Stack, account: str, token: str, msg: EmailMessage) -> tuple[int, bytes]:
    with smtplib.SMTP(HOST, stack.smtp_port, timeout=15) as client:
        client.login(account, token)
        try:
            client.sendmail("app@sender.test", [str(a.addr_spec) for a in msg["To"].addresses], msg.as_bytes())
        except smtplib.SMTPDataError as exc:
            reply = exc.smtp_error
            return exc.smtp_code, reply if isinstance(reply, bytes) else reply.encode()
        return 250, b""


def outbox_total(api: httpx.Client, account: str) -> int:
    total: int = api.get("/v1/outbox", params={"account": account, "state": "all"}).json()["total"]
    return total


def test_template_header_renders_the_message_and_keeps_attachments(
    stack: Stack, api: httpx.Client, account: str, token: str, smtp_sink: SmtpSink
) -> None:
    tid = template(api, account, subject="Order {{params.order.id}} for {{account.name}} ✓",
                   text="Hi {{rcpt.address}}: {{params.note}}", html=HTML)
    to = rcpt()
    params = {"order": {"id": 4815}, "note": "Zoë  <two spaces>"}
    msg = message(to, {"X-Mailgate-Template": tid, "X-Mailgate-Template-Params": json.dumps(params)})
    own_html = msg.get_body(("html",))
    assert isinstance(own_html, EmailMessage)
    own_html.add_related(b"\x89PNG-logo", maintype="image", subtype="png", cid="<logo@x>")
    msg.add_attachment(b"%PDF-1.4 invoice", maintype="application", subtype="pdf", filename="invoice.pdf")
    assert send(stack, account, token, msg)[0] == 250

    [got] = wait_for(lambda: smtp_sink.to(to), message="delivery")
    sent = got.message
    assert sent["Subject"] == "Order 4815 for Test Sender ✓"
    assert sent["X-Mailgate-Template"] is None and sent["X-Mailgate-Template-Params"] is None
    assert b"X-Mailgate" not in got.data
    text = sent.get_body(("plain",))
    html = sent.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().strip() == f"Hi {to}: Zoë  <two spaces>"
    body = html.get_content()
    assert "application" not in body and "application's body" not in text.get_content()
    assert '<p style="color: red;">Hello Zoë Ångström, order 4815 (Zoë  &lt;two spaces&gt;)</p>' in body
    assert "@media (max-width: 600px)" in body
    files = {p.get_filename(): p.get_content() for p in sent.walk() if p.get_filename()}
    assert files == {"invoice.pdf": b"%PDF-1.4 invoice"}
    [logo] = [p for p in sent.walk() if p["Content-ID"] == "<logo@x>"]
    assert logo.get_content() == b"\x89PNG-logo"


def test_base64_params_and_public_templates(
    stack: Stack, api: httpx.Client, account: str, token: str, smtp_sink: SmtpSink
) -> None:
    tid = template(api, None, subject="{{params.greeting}}", text="{{params.greeting}} {{rcpt.address}}")
    to = rcpt()
    encoded = base64.b64encode(json.dumps({"greeting": "Grüße"}).encode()).decode()
    msg = message(to, {"X-Mailgate-Template": tid, "X-Mailgate-Template-Params": encoded})
    assert send(stack, account, token, msg)[0] == 250
    [got] = wait_for(lambda: smtp_sink.to(to), message="delivery")
    assert got.message["Subject"] == "Grüße"
    # No html in the template: the message is its text only.
    assert got.message.get_content_type() == "text/plain"
    assert got.message.get_content().strip() == f"Grüße {to}"


def test_a_template_without_subject_keeps_the_messages_subject(
    stack: Stack, api: httpx.Client, account: str, token: str, smtp_sink: SmtpSink
) -> None:
    tid = template(api, account, html="<p>{{params.x}}</p>")
    to = rcpt()
    assert send(stack, account, token, message(to, {"X-Mailgate-Template": tid}))[0] == 250
    [got] = wait_for(lambda: smtp_sink.to(to), message="delivery")
    assert got.message["Subject"] == "the application's subject"
    assert got.message.get_content_type() == "text/html"
    assert "<p></p>" in got.message.get_content()


@pytest.mark.parametrize(("headers", "expected"), [
    ({"X-Mailgate-Template": "no-such-template"}, "5.6.0 Template [no-such-template] was not found"),
    ({"X-Mailgate-Template-Params": '{"a": 1}'}, "5.6.0 X-Mailgate-Template-Params needs a X-Mailgate-Template"),
    ({"X-Mailgate-Template": "TID", "X-Mailgate-Template-Params": "{not json"},
     "5.6.0 X-Mailgate-Template-Params is not valid JSON"),
    ({"X-Mailgate-Template": "TID", "X-Mailgate-Template-Params": "[1, 2]"},
     "5.6.0 X-Mailgate-Template-Params is neither a JSON object nor base64 of one"),
    ({"X-Mailgate-Template": "TID", "X-Mailgate-Template-Params": '{"items": 5}'},
     "5.6.0 Failed rendering html template: length takes a list"),
])
def test_bad_template_submissions_are_refused_at_data_and_not_queued(
    stack: Stack, api: httpx.Client, account: str, token: str, headers: dict[str, str], expected: str
) -> None:
    tid = template(api, account, subject="fine", html="<p>{{length params.items}}</p>")
    before = outbox_total(api, account)
    msg = message(rcpt(), {name: value.replace("TID", tid) for name, value in headers.items()})
    code, reply = send(stack, account, token, msg)
    assert code == 550 and reply.decode().startswith(expected), reply
    assert outbox_total(api, account) == before


def test_another_accounts_template_is_not_found_and_duplicates_are_refused(
    stack: Stack, api: httpx.Client, account: str, token: str, smtp_sink: SmtpSink
) -> None:
    other = f"acct-{uuid.uuid4().hex[:10]}"
    response = api.post("/v1/account", json={
        "account": other, "name": "Other", "email": f"{other}@sender.test", "imap": False,
        "smtp": {"host": "127.0.0.1", "port": smtp_sink.port, "secure": False,
                 "auth": {"user": other, "pass": "x"}}})
    assert response.status_code == 200, response.text
    theirs = template(api, other, text="secret {{params.x}}")
    code, reply = send(stack, account, token, message(rcpt(), {"X-Mailgate-Template": theirs}))
    assert (code, reply.decode()) == (550, f"5.6.0 Template [{theirs}] was not found for this account")

    mine = template(api, account, text="x")
    twice = message(rcpt(), {"X-Mailgate-Template": mine})
    twice["X-Mailgate-Template"] = mine
    code, reply = send(stack, account, token, twice)
    assert (code, reply.decode()) == (550, "5.6.0 X-Mailgate-Template must appear once")
