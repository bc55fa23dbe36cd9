"""EmailEngine's operations routes with its documented example requests: access
tokens (current and deprecated API, restrictions enforced), SMTP gateways, stats."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import httpx
import pytest

from tests.support.stack import Stack


def _as(stack: Stack, token: str, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=stack.api_url, timeout=15,
                        headers={"Authorization": f"Bearer {token}", **headers})


# --- tokens -------------------------------------------------------------------


def test_token_lifecycle_with_ee_example(stack: Stack, api: httpx.Client, account: str) -> None:
    # EmailEngine's POST /v1/tokens example fields.
    body = {"account": account, "description": "Token description", "scopes": ["api"],
            "metadata": '{"example": "value"}', "restrictions": {"addresses": ["127.0.0.0/8"]},
            "ip": "127.0.0.1"}
    response = api.post("/v1/tokens", json=body)
    assert response.status_code == 200, response.text
    created = response.json()
    token, token_id = created["token"], created["id"]
    assert len(token) == 64 and token_id == hashlib.sha256(token.encode()).hexdigest()

    shown = api.get(f"/v1/tokens/{token_id}").json()
    assert {k: shown[k] for k in ("id", "account", "description", "scopes", "metadata", "ip")} == {
        "id": token_id, "account": account, "description": "Token description", "scopes": ["api"],
        "metadata": '{"example": "value"}', "ip": "127.0.0.1"}
    assert shown["restrictions"] == {"addresses": ["127.0.0.0/8"]}
    assert shown["access"] == {"time": None} and shown["created"]

    with _as(stack, token) as client:
        assert client.get(f"/v1/account/{account}").status_code == 200
    listing = api.get("/v1/tokens").json()
    assert {"total", "page", "pages", "tokens"} <= set(listing)
    mine = [t for t in listing["tokens"] if t["id"] == token_id]
    assert mine and mine[0]["access"]["time"] is not None  # it was just used
    assert token not in str(listing)
    by_account = api.get(f"/v1/tokens/account/{account}").json()["tokens"]
    assert [t["id"] for t in by_account] == [token_id]

    response = api.delete(f"/v1/tokens/{token}")
    assert response.status_code == 200 and response.json() == {"deleted": True}
    with _as(stack, token) as client:
        assert client.get(f"/v1/account/{account}").status_code == 401
    assert api.get(f"/v1/tokens/{token_id}").status_code == 404


def test_address_and_referrer_restrictions_are_enforced(stack: Stack, api: httpx.Client,
                                                        account: str) -> None:
    elsewhere = api.post("/v1/tokens", json={"account": account, "description": "office only",
                                             "restrictions": {"addresses": ["192.0.2.0/24"]}}).json()
    with _as(stack, elsewhere["token"]) as client:
        response = client.get(f"/v1/account/{account}")
    assert response.status_code == 403, response.text
    assert "address" in response.json()["message"]

    web = api.post("/v1/tokens", json={"account": account, "description": "web app",
                                       "restrictions": {"referrers": ["https://app.example.com/*"]}}).json()
    with _as(stack, web["token"]) as client:
        assert client.get(f"/v1/account/{account}").status_code == 403
    with _as(stack, web["token"], Referer="https://app.example.com/send") as client:
        assert client.get(f"/v1/account/{account}").status_code == 200
    for made in (elsewhere, web):
        api.delete(f"/v1/tokens/{made['id']}")


@pytest.mark.parametrize(("body", "field"), [
    ({"scopes": ["api"]}, "description"),
    ({"description": "x", "permissions": {"actions": ["read"]}}, "permissions"),
    ({"description": "x", "expires": "2030-01-01T00:00:00Z"}, "expires"),
    ({"description": "x", "restrictions": {"rateLimit": {"maxRequests": 20, "timeWindow": 2}}},
     "restrictions.rateLimit"),
    ({"description": "x", "metadata": "{not json"}, "metadata"),
    ({"description": "x", "scopes": ["imap-proxy"]}, "scopes"),
])
def test_token_fields_mailgate_cannot_honour_are_refused(api: httpx.Client, body: dict[str, Any],
                                                         field: str) -> None:
    before = api.get("/v1/tokens").json()["total"]
    response = api.post("/v1/tokens", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert api.get("/v1/tokens").json()["total"] == before


def test_deprecated_token_route_takes_the_same_fields(api: httpx.Client, account: str) -> None:
    response = api.post("/v1/token", json={"account": account, "scopes": "smtp",
                                           "metadata": '{"team": "billing"}'})
    assert response.status_code == 200, response.text
    token_id = response.json()["id"]
    shown = api.get(f"/v1/tokens/{token_id}").json()
    assert shown["scopes"] == ["smtp"] and shown["metadata"] == '{"team": "billing"}'
    assert api.delete(f"/v1/token/{token_id}").json() == {"deleted": True}


# --- gateways -----------------------------------------------------------------


def test_gateway_crud_with_ee_example(api: httpx.Client) -> None:
    gateway = f"sendgun-{uuid.uuid4().hex[:6]}"
    # EmailEngine's POST /v1/gateway example fields.
    body = {"gateway": gateway, "name": "John Smith", "user": "smtp-user", "pass": "verysecret",
            "host": "smtp.gmail.com", "port": 465, "secure": True}
    response = api.post("/v1/gateway", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"gateway": gateway, "state": "new"}
    assert api.post("/v1/gateway", json=body).json() == {"gateway": gateway, "state": "existing"}

    shown = api.get(f"/v1/gateway/{gateway}").json()
    assert shown == {"gateway": gateway, "name": "John Smith", "deliveries": 0, "lastUse": None,
                     "user": "smtp-user", "pass": "******", "host": "smtp.gmail.com", "port": 465,
                     "secure": True}
    listing = api.get("/v1/gateways", params={"pageSize": 1000}).json()
    assert {"total", "page", "pages", "gateways"} <= set(listing)
    assert {"gateway": gateway, "name": "John Smith", "deliveries": 0, "lastUse": None,
            "lastError": None} in listing["gateways"]

    response = api.put(f"/v1/gateway/edit/{gateway}", json={"name": "Relay", "port": 587,
                                                            "secure": False, "pass": "******"})
    assert response.status_code == 200 and response.json() == {"gateway": gateway}
    shown = api.get(f"/v1/gateway/{gateway}").json()
    assert (shown["name"], shown["port"], shown["secure"], shown["pass"]) == ("Relay", 587, False, "******")
    api.put(f"/v1/gateway/edit/{gateway}", json={"pass": None})
    assert "pass" not in api.get(f"/v1/gateway/{gateway}").json()

    response = api.delete(f"/v1/gateway/{gateway}")
    assert response.status_code == 200 and response.json() == {"gateway": gateway, "deleted": True}
    assert api.get(f"/v1/gateway/{gateway}").status_code == 404
    assert api.delete(f"/v1/gateway/{gateway}").status_code == 404


def test_gateway_bad_input_names_the_field(api: httpx.Client) -> None:
    response = api.post("/v1/gateway", json={"gateway": "g1", "name": "x", "host": "smtp.example.com",
                                             "port": 70000})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "port"
    response = api.post("/v1/gateway", json={"gateway": "g1", "name": "x", "host": "smtp.example.com",
                                             "port": 25, "tls": {}})
    assert response.status_code == 400, response.text
    assert api.put("/v1/gateway/edit/no-such-gateway", json={"name": "x"}).status_code == 404


# --- stats --------------------------------------------------------------------


def test_stats_counts_accounts_by_state(api: httpx.Client, account: str) -> None:
    response = api.get("/v1/stats", params={"seconds": 3600})
    assert response.status_code == 200, response.text
    stats = response.json()
    assert stats["version"]
    listed = api.get("/v1/accounts", params={"pageSize": 1000}).json()["total"]
    assert stats["accounts"] == listed >= 1
    assert sum(stats["connections"].values()) == stats["accounts"]
    assert stats["connections"]["unset"] >= 1  # the send-only account
    assert set(stats["queues"]) == {"submit", "notify"}
    assert isinstance(stats["counters"], dict)
