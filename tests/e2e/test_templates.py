"""Stored templates (/v1/templates) and submit's ``template`` / ``render``, end to end."""

from __future__ import annotations

import base64
import threading
import uuid
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.support.smtp_sink import Received, SmtpSink
from tests.support.stack import Stack, wait_for

NAME = "<b>Ann</b> & Co"


def rcpt(tag: str = "t") -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}@example.net"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def outbox_total(api: httpx.Client, account: str) -> int:
    total: int = api.get("/v1/outbox", params={"account": account, "state": "all"}).json()["total"]
    return total


def create(api: httpx.Client, account: str | None, **content: str) -> str:
    response = api.post("/v1/templates/template", json={
        "account": account, "name": "Receipt", "format": "html", "content": content})
    assert response.status_code == 200, response.text
    assert response.json()["created"] is True and response.json()["account"] == account
    template_id: str = response.json()["id"]
    return template_id


def received(smtp_sink: SmtpSink, to: str) -> EmailMessage:
    [got] = wait_for(lambda: smtp_sink.to(to), message="delivery")
    assert isinstance(got, Received)
    return got.message


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def new_account(api: httpx.Client, smtp_sink: SmtpSink) -> str:
    account = f"tpl-{uuid.uuid4().hex[:8]}"
    response = api.post("/v1/account", json={
        "account": account, "name": "Other", "email": f"{account}@sender.test", "imap": False,
        "smtp": {"host": "127.0.0.1", "port": smtp_sink.port, "secure": False,
                 "auth": {"user": account, "pass": "smtp-password"}}})
    assert response.status_code == 200, response.text
    return account


def test_crud_partial_update_list_and_flush(api: httpx.Client, account: str) -> None:
    template = create(api, account, subject="Hi {{params.name}}", html="<p>{{params.name}}</p>")
    got = api.get(f"/v1/templates/template/{template}").json()
    assert got["id"] == template and got["account"] == account and got["name"] == "Receipt"
    assert got["format"] == "html" and got["content"] == {"subject": "Hi {{params.name}}",
                                                         "html": "<p>{{params.name}}</p>"}
    assert got["created"] and got["updated"]

    response = api.put(f"/v1/templates/template/{template}", json={"description": "Sent after payment"})
    assert response.json() == {"updated": True, "account": account, "id": template}
    got = api.get(f"/v1/templates/template/{template}").json()
    assert got["name"] == "Receipt" and got["description"] == "Sent after payment"
    assert got["content"]["html"] == "<p>{{params.name}}</p>"  # untouched by a partial update

    second = create(api, account, text="second")
    listed = api.get("/v1/templates", params={"account": account, "pageSize": 1}).json()
    assert listed["account"] == account and listed["total"] == 2 and listed["pages"] == 2
    assert [t["id"] for t in listed["templates"]] == [template]
    assert set(listed["templates"][0]) == {"id", "name", "description", "format", "created", "updated"}

    assert api.delete(f"/v1/templates/template/{second}").json() == {
        "deleted": True, "account": account, "id": second}
    assert api.get(f"/v1/templates/template/{second}").json()["code"] == "TemplateNotFound"

    refused = api.delete(f"/v1/templates/account/{account}")
    assert refused.status_code == 400 and refused.json()["code"] == "ForceRequired"
    assert api.get("/v1/templates", params={"account": account}).json()["total"] == 1
    flushed = api.delete(f"/v1/templates/account/{account}", params={"force": "true"})
    assert flushed.json() == {"flushed": True, "account": account}
    assert api.get("/v1/templates", params={"account": account}).json()["total"] == 0


def test_broken_template_is_refused_naming_the_part(api: httpx.Client, account: str) -> None:
    response = api.post("/v1/templates/template", json={
        "account": account, "name": "Broken", "content": {"subject": "ok", "html": "{{#if x}}never closed"}})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "InputValidationError" and response.json()["field"] == "content.html"
    template = create(api, account, text="fine")
    response = api.put(f"/v1/templates/template/{template}", json={"content": {"text": "{{#each}}"}})
    assert response.status_code == 400 and response.json()["field"] == "content.text"
    assert api.get(f"/v1/templates/template/{template}").json()["content"] == {"text": "fine"}
    unknown = api.post("/v1/templates/template", json={"account": "no-such-account", "name": "x", "content": {}})
    assert unknown.status_code == 404 and unknown.json()["code"] == "AccountNotFound"


def test_account_token_sees_own_and_public_templates_only(
    api: httpx.Client, stack: Stack, account: str, smtp_sink: SmtpSink
) -> None:
    other = new_account(api, smtp_sink)
    theirs = create(api, other, text="other's")
    public = create(api, None, text="everyone's")
    token = api.post("/v1/token", json={"account": account, "scopes": ["api"]}).json()["token"]
    with httpx.Client(base_url=stack.api_url, headers=bearer(token), timeout=15) as client:
        missing = client.get(f"/v1/templates/template/{theirs}")
        assert missing.status_code == 404 and missing.json()["code"] == "TemplateNotFound"
        assert client.delete(f"/v1/templates/template/{theirs}").status_code == 404
        assert client.get(f"/v1/templates/template/{public}").json()["content"] == {"text": "everyone's"}
        assert client.put(f"/v1/templates/template/{public}", json={"name": "mine"}).status_code == 403
        assert client.delete(f"/v1/templates/template/{public}").status_code == 403
        # EmailEngine: an account token's template is its account's, whatever the body says.
        own = client.post("/v1/templates/template", json={"account": None, "name": "n", "content": {"text": "x"}})
        assert own.status_code == 200 and own.json()["account"] == account
        listed = client.get("/v1/templates").json()
        assert listed["account"] == account and [t["id"] for t in listed["templates"]] == [own.json()["id"]]
        assert client.get("/v1/templates", params={"account": other}).status_code == 403
        # A submit with another account's template is a missing template.
        response = client.post(f"/v1/account/{account}/submit", json={
            "to": [{"address": rcpt()}], "template": theirs})
        assert response.status_code == 404 and response.json()["code"] == "TemplateNotFound"
    assert api.get(f"/v1/templates/template/{theirs}").status_code == 200  # untouched
    assert api.get(f"/v1/templates/template/{public}").json()["name"] == "Receipt"


def test_submit_with_template_renders_escaping_html_only(
    api: httpx.Client, account: str, smtp_sink: SmtpSink
) -> None:
    template = create(api, None, subject="Order {{params.order}} for {{params.name}}",
                      text="Hello {{params.name}} from {{account.name}} to {{rcpt.address}}",
                      html="<p>Hello {{params.name}}</p>")
    to = rcpt("tpl")
    response = api.post(f"/v1/account/{account}/submit", json={
        "to": [{"address": to}], "template": template,
        "render": {"params": {"name": NAME, "order": 4815}}})
    assert response.status_code == 200, response.text
    message = received(smtp_sink, to)
    assert message["Subject"] == f"Order 4815 for {NAME}"
    text, html = parts(message)
    assert text.strip() == f"Hello {NAME} from Test Sender to {to}"
    assert "<p>Hello &lt;b&gt;Ann&lt;/b&gt; &amp; Co</p>" in html


def test_template_parts_replace_the_request_and_markdown_format(
    api: httpx.Client, account: str, smtp_sink: SmtpSink
) -> None:
    response = api.post("/v1/templates/template", json={
        "account": account, "name": "md", "format": "markdown",
        "content": {"subject": "From the template", "html": "# Hi {{params.name}}"}})
    template = response.json()["id"]
    to = rcpt("md")
    response = api.post(f"/v1/account/{account}/submit", json={
        "to": [{"address": to}], "template": template, "subject": "from the request", "text": "request text",
        "render": {"params": {"name": NAME}}})
    assert response.status_code == 200, response.text
    message = received(smtp_sink, to)
    assert message["Subject"] == "From the template"  # EmailEngine: the template's parts win
    text, html = parts(message)
    assert text.strip() == "request text"  # a part the template lacks is the request's
    assert "<h1>Hi &lt;b&gt;Ann&lt;/b&gt; &amp; Co</h1>" in html


def test_render_false_sends_literally_and_render_renders_own_parts(
    api: httpx.Client, account: str, smtp_sink: SmtpSink
) -> None:
    literal, rendered = rcpt("lit"), rcpt("own")
    for to, render in ((literal, False), (rendered, {"params": {"name": NAME}})):
        response = api.post(f"/v1/account/{account}/submit", json={
            "to": [{"address": to}], "subject": "Hi {{params.name}}", "text": "T {{params.name}}",
            "html": "<i>{{params.name}}</i>", "render": render})
        assert response.status_code == 200, response.text
    message = received(smtp_sink, literal)
    assert message["Subject"] == "Hi {{params.name}}"
    assert [p.strip() for p in parts(message)] == ["T {{params.name}}", "<i>{{params.name}}</i>"]
    message = received(smtp_sink, rendered)
    assert message["Subject"] == f"Hi {NAME}"
    text, html = parts(message)
    assert text.strip() == f"T {NAME}" and "<i>&lt;b&gt;Ann&lt;/b&gt; &amp; Co</i>" in html


def test_render_error_is_422_and_nothing_is_queued(api: httpx.Client, account: str) -> None:
    before = outbox_total(api, account)
    response = api.post(f"/v1/account/{account}/submit", json={
        "to": [{"address": rcpt()}], "subject": "fine", "html": "{{#if params.x}}never closed",
        "render": {"params": {}}})
    assert response.status_code == 422, response.text
    assert response.json()["message"].startswith("Failed rendering html template")
    assert response.json()["field"] == "html"
    missing = api.post(f"/v1/account/{account}/submit", json={"to": [{"address": rcpt()}], "template": "nope"})
    assert missing.status_code == 404 and missing.json()["code"] == "TemplateNotFound"
    raw = api.post(f"/v1/account/{account}/submit", json={"raw": "eA==", "template": "nope"})
    assert raw.status_code == 400 and raw.json()["field"] == "template"
    assert outbox_total(api, account) == before


def test_dry_run_preview_shows_rendered_message_with_preheader(api: httpx.Client, account: str) -> None:
    template = create(api, account, subject="Dear {{params.name}}",
                      html="<html><body class=x><p>Body</p></body></html>", previewText="Sale for {{params.name}}")
    response = api.post(f"/v1/account/{account}/submit", json={
        "to": [{"address": rcpt()}], "template": template, "dryRun": True, "render": {"params": {"name": NAME}}})
    assert response.status_code == 200, response.text
    message = message_from_bytes(base64.b64decode(response.json()["preview"]), policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert message["Subject"] == f"Dear {NAME}"
    html = message.get_body(("html",))
    assert html is not None
    body = html.get_content()
    # EmailEngine's hidden preheader, right after <body>, escaped like html.
    assert body.index("<body class=x>") < body.index("display:none") < body.index("<p>Body</p>")
    assert "Sale for &lt;b&gt;Ann&lt;/b&gt; &amp; Co" in body


def test_validate_renders_parts_reports_errors_and_suggests_a_model(api: httpx.Client, account: str) -> None:
    template = create(api, account, subject="Hi {{params.name}}", html="<p>{{params.name}} #{{params.order.id}}</p>")
    response = api.post(f"/v1/templates/template/{template}/validate",
                        json={"params": {"name": NAME, "order": {"id": 7}}})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["valid"] is True and body["text"] is None
    assert body["subject"] == {"valid": True, "rendered": f"Hi {NAME}"}
    assert body["html"]["rendered"] == "<p>&lt;b&gt;Ann&lt;/b&gt; &amp; Co #7</p>"
    assert "params" in body["variables"] and "name" in body["variables"]["params"]
    empty = api.post(f"/v1/templates/template/{template}/validate", json={})
    assert empty.json()["subject"]["rendered"] == "Hi "


@pytest.mark.parametrize("body", [{"render": {"format": "mjml"}}, {"render": {"paramz": {}}},
                                  {"template": ""}])
def test_bad_template_fields_are_refused_by_name(api: httpx.Client, account: str, body: dict[str, Any]) -> None:
    response = api.post(f"/v1/account/{account}/submit", json={"to": [{"address": rcpt()}], "text": "x", **body})
    assert response.status_code == 400, response.text


# --- inlineCss -------------------------------------------------------------------------------------

STYLED = ("<html><head><style>p { color: red } .note { font-weight: bold }"
          " @media (max-width: 600px) { p { color: blue } }</style>{{{params.link}}}</head>"
          '<body><p class="note" style="{{params.style}}">Hi {{params.name}}</p></body></html>')


class CountingServer:
    """A real HTTP server that counts what it is asked: a stylesheet must never be fetched."""

    def __init__(self) -> None:
        hits: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "text/css")
                self.end_headers()
                self.wfile.write(b"p { color: green }")

            def log_message(self, *args: object) -> None:
                pass

        self.hits = hits
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/style.css"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def styled(api: httpx.Client, account: str, inline: bool) -> str:
    response = api.post("/v1/templates/template", json={
        "account": account, "name": "styled", "inlineCss": inline,
        "content": {"subject": "Styled", "html": STYLED}})
    assert response.status_code == 200, response.text
    template_id: str = response.json()["id"]
    return template_id


def test_inline_css_sends_html_with_inline_styles_and_keeps_media_queries(
    api: httpx.Client, account: str, smtp_sink: SmtpSink
) -> None:
    template = styled(api, account, inline=True)
    stored = api.get(f"/v1/templates/template/{template}").json()
    assert stored["inlineCss"] is True and stored["content"]["html"] == STYLED  # the source stays as written
    to = rcpt("css")
    response = api.post(f"/v1/account/{account}/submit", json={
        "to": [{"address": to}], "template": template,
        "render": {"params": {"name": "Ann", "style": "margin: 0"}}})
    assert response.status_code == 200, response.text
    html = received(smtp_sink, to).get_body(("html",))
    assert html is not None
    body = html.get_content()
    assert '<p class="note" style="color: red;font-weight: bold;margin: 0">Hi Ann</p>' in body
    assert "@media (max-width: 600px) { p { color: blue } }" in body and ".note {" not in body

    # Switched off: the <style> block goes out as written.
    assert api.put(f"/v1/templates/template/{template}", json={"inlineCss": False}).status_code == 200
    assert api.get(f"/v1/templates/template/{template}").json()["inlineCss"] is False
    plain_to = rcpt("nocss")
    response = api.post(f"/v1/account/{account}/submit", json={
        "to": [{"address": plain_to}], "template": template, "render": {"params": {"name": "Ann"}}})
    assert response.status_code == 200, response.text
    plain = received(smtp_sink, plain_to).get_body(("html",))
    assert plain is not None and ".note { font-weight: bold }" in plain.get_content()
    assert 'style="color: red' not in plain.get_content()


def test_a_css_error_sends_the_html_un_inlined(api: httpx.Client, account: str, smtp_sink: SmtpSink) -> None:
    template = styled(api, account, inline=True)
    to = rcpt("badcss")
    # A value that makes a style attribute unparseable CSS: the message still goes out.
    response = api.post(f"/v1/account/{account}/submit", json={
        "to": [{"address": to}], "template": template, "render": {"params": {"name": "Ann", "style": "{"}}})
    assert response.status_code == 200, response.text
    html = received(smtp_sink, to).get_body(("html",))
    assert html is not None
    assert '<p class="note" style="{">Hi Ann</p>' in html.get_content()
    assert ".note { font-weight: bold }" in html.get_content()


def test_validate_shows_the_inlined_html_never_fetches_stylesheets_and_warns_on_css_errors(
    api: httpx.Client, account: str
) -> None:
    template = styled(api, account, inline=True)
    server = CountingServer()
    try:
        link = f'<link rel="stylesheet" href="{server.url}">'
        response = api.post(f"/v1/templates/template/{template}/validate",
                            json={"params": {"name": "Ann", "link": link}})
        assert response.status_code == 200, response.text
        html = response.json()["html"]
        assert html["valid"] is True and "warning" not in html
        assert '<p class="note" style="color: red;font-weight: bold">Hi Ann</p>' in html["rendered"]
        assert "green" not in html["rendered"] and server.url not in html["rendered"]
        assert server.hits == []
    finally:
        server.close()
    broken = api.post(f"/v1/templates/template/{template}/validate",
                      json={"params": {"name": "Ann", "style": "{"}}).json()
    assert broken["valid"] is True  # the template is fine; this send would go out un-inlined
    assert broken["html"]["warning"].startswith("CSS could not be inlined")
    assert '<p class="note" style="{">Hi Ann</p>' in broken["html"]["rendered"]


def test_inline_css_must_be_a_boolean(api: httpx.Client, account: str) -> None:
    response = api.post("/v1/templates/template", json={
        "account": account, "name": "x", "inlineCss": "yes", "content": {"html": "<p>x</p>"}})
    assert response.status_code == 400, response.text
    assert "inlineCss" in response.text
