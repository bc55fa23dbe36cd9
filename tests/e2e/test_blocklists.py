"""EmailEngine's blocklists API: add, list, page, remove, and the field named in every refusal."""

from __future__ import annotations

import uuid

import httpx

from tests.support.stack import Stack
from tests.support.tokens import create_token


def new_list() -> str:
    return f"promo-{uuid.uuid4().hex[:8]}.example.com"


def rcpt(prefix: str = "reader") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.org"


def test_round_trip_in_emailengine_shapes(api: httpx.Client, account: str) -> None:
    list_id, first, second = new_list(), rcpt("first"), rcpt("second")

    added = api.post(f"/v1/blocklist/{list_id}", json={"account": account, "recipient": first.upper()})
    assert added.status_code == 200, added.text
    assert added.json() == {"success": True, "added": True}
    again = api.post(f"/v1/blocklist/{list_id}", json={"account": account, "recipient": first, "reason": "x"})
    assert again.json() == {"success": True, "added": False}  # the first entry is kept
    api.post(f"/v1/blocklist/{list_id}", json={"account": account, "recipient": second,
                                               "reason": "unsubscribe"}).raise_for_status()

    every = api.get("/v1/blocklists", params={"pageSize": 1000}).json()
    assert set(every) == {"total", "page", "pages", "blocklists"}
    assert {"listId": list_id, "count": 2} in every["blocklists"]

    listed = api.get(f"/v1/blocklist/{list_id}")
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert {k: body[k] for k in ("listId", "total", "page", "pages")} == {
        "listId": list_id, "total": 2, "page": 0, "pages": 1}
    entries = {e["recipient"]: e for e in body["addresses"]}
    assert set(entries) == {first, second}  # stored lower-cased
    entry = entries[first]
    assert entry["account"] == account and entry["source"] == "api" and entry["reason"] == "block"
    assert entry["created"].endswith("Z")
    assert set(entry) <= {"recipient", "account", "messageId", "source", "reason", "remoteAddress", "userAgent",
                          "created"}
    assert entries[second]["reason"] == "unsubscribe"

    paged = api.get(f"/v1/blocklist/{list_id}", params={"page": 1, "pageSize": 1}).json()
    assert paged["pages"] == 2 and paged["page"] == 1 and len(paged["addresses"]) == 1

    removed = api.delete(f"/v1/blocklist/{list_id}", params={"recipient": first})
    assert removed.status_code == 200 and removed.json() == {"deleted": True}
    assert api.delete(f"/v1/blocklist/{list_id}", params={"recipient": first}).json() == {"deleted": False}
    assert [e["recipient"] for e in api.get(f"/v1/blocklist/{list_id}").json()["addresses"]] == [second]

    # A list exists through its entries (as in EmailEngine): once empty it is gone.
    api.delete(f"/v1/blocklist/{list_id}", params={"recipient": second}).raise_for_status()
    assert api.get(f"/v1/blocklist/{list_id}").status_code == 404
    assert api.delete(f"/v1/blocklist/{list_id}", params={"recipient": second}).status_code == 404
    assert list_id not in [b["listId"] for b in api.get("/v1/blocklists", params={"pageSize": 1000}).json()[
        "blocklists"]]


def test_bad_input_names_the_field(api: httpx.Client, account: str) -> None:
    list_id = new_list()
    cases = [
        (api.post("/v1/blocklist/not_a%20list", json={"account": account, "recipient": rcpt()}), 400, "listId"),
        (api.post(f"/v1/blocklist/{list_id}", json={"recipient": rcpt()}), 400, "account"),
        (api.post(f"/v1/blocklist/{list_id}", json={"account": account}), 400, "recipient"),
        (api.post(f"/v1/blocklist/{list_id}", json={"account": account, "recipient": "nobody"}), 400, "recipient"),
        (api.post(f"/v1/blocklist/{list_id}", json={"account": account, "recipient": rcpt(), "colour": "red"}),
         400, "colour"),
        (api.post(f"/v1/blocklist/{list_id}", json={"account": "no-such-account", "recipient": rcpt()}),
         404, "account"),
        (api.delete(f"/v1/blocklist/{list_id}"), 400, "recipient"),
        (api.delete(f"/v1/blocklist/{list_id}", params={"recipient": "nobody"}), 400, "recipient"),
        (api.get(f"/v1/blocklist/{list_id}"), 404, "listId"),
        (api.get("/v1/blocklists", params={"pageSize": 0}), 400, None),
    ]
    for answer, status, field in cases:
        assert answer.status_code == status, (answer.request.url, answer.text)
        if field:
            assert answer.json()["field"] == field, answer.text
    assert api.get("/v1/blocklists", params={"pageSize": 1000}).status_code == 200
    assert list_id not in [b["listId"] for b in api.get("/v1/blocklists", params={"pageSize": 1000}).json()[
        "blocklists"]]


def test_blocklists_are_for_admin_tokens_only(stack: Stack, account: str) -> None:
    token = create_token(stack.database_url, account, ["api"])
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}) as scoped:
        assert scoped.get("/v1/blocklists").status_code == 403
        refused = scoped.post(f"/v1/blocklist/{new_list()}", json={"account": account, "recipient": rcpt()})
        assert refused.status_code == 403
    with httpx.Client(base_url=stack.api_url) as anonymous:
        assert anonymous.get("/v1/blocklists").status_code == 401
