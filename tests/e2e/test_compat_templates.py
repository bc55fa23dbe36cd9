"""EmailEngine's documented /v1/templates and submit examples, sent unchanged (but for the account id)."""

from __future__ import annotations

import uuid

import httpx

from tests.support.smtp_sink import SmtpSink
from tests.support.stack import wait_for

# EmailEngine's CreateTemplate example (its OpenAPI schema examples).
CREATE = {
    "account": "example",
    "name": "Transaction receipt",
    "description": "Something about the template",
    "format": "html",
    "content": {
        "subject": "What a wonderful message",
        "text": "Hello from myself!",
        "html": "<p>Hello from myself!</p>",
        "previewText": "Welcome to our newsletter!",
    },
}


def test_documented_template_lifecycle_and_submit(api: httpx.Client, account: str, smtp_sink: SmtpSink) -> None:
    created = api.post("/v1/templates/template", json={**CREATE, "account": account})
    assert created.status_code == 200, created.text
    assert set(created.json()) == {"created", "account", "id"} and created.json()["created"] is True
    template = created.json()["id"]

    got = api.get(f"/v1/templates/template/{template}").json()
    for key in ("id", "name", "description", "format", "created", "updated", "content"):
        assert key in got, key
    assert got["content"] == CREATE["content"]

    listed = api.get("/v1/templates", params={"account": account, "page": 0, "pageSize": 20}).json()
    assert set(listed) == {"account", "total", "page", "pages", "templates"}
    assert listed["total"] == 1 and listed["templates"][0]["name"] == "Transaction receipt"

    updated = api.put(f"/v1/templates/template/{template}", json={
        "name": "Transaction receipt", "description": "Something about the template", "format": "html",
        "content": {"subject": "What a wonderful message {{params.firstName}}",
                    "text": "Hello from myself!", "html": "<p>Hello from myself!</p>"}})
    assert updated.json() == {"updated": True, "account": account, "id": template}

    # EmailEngine's submit example: template plus render params.
    to = f"nyan-{uuid.uuid4().hex[:8]}@example.net"
    response = api.post(f"/v1/account/{account}/submit", json={
        "to": [{"name": "Nyan Cat", "address": to}], "template": template,
        "render": {"format": "html", "params": {"firstName": "Nyan", "orderId": "4815"}}})
    assert response.status_code == 200, response.text
    assert {"response", "messageId", "sendAt", "queueId"} <= set(response.json())
    [received] = wait_for(lambda: smtp_sink.to(to), message="delivery")
    assert received.message["Subject"] == "What a wonderful message Nyan"

    assert api.delete(f"/v1/templates/template/{template}").json() == {
        "deleted": True, "account": account, "id": template}
    assert api.delete(f"/v1/templates/account/{account}", params={"force": "true"}).json() == {
        "flushed": True, "account": account}
