"""Suppression list: REST add/list/remove, and REST submit refusing or skipping suppressed recipients."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.support.smtp_sink import SmtpSink
from tests.support.stack import wait_for


def rcpt(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.org"


def message(account: str, *to: str, **extra: Any) -> dict[str, Any]:
    return {
        "from": {"address": f"{account}@sender.test"},
        "to": [{"address": a} for a in to],
        "subject": f"suppression {uuid.uuid4().hex[:6]}",
        "text": "hello",
        **extra,
    }


def test_suppressed_recipient_is_refused_until_removed(api: httpx.Client, account: str, smtp_sink: SmtpSink) -> None:
    dead = rcpt("dead")
    added = api.post(
        f"/v1/account/{account}/suppressions",
        json={"address": dead.upper(), "reason": "hard bounce: userunknown (5.1.1)"},
    )
    assert added.status_code == 200, added.text
    assert added.json()["address"] == dead  # stored lower-cased
    assert added.json()["source"] == "manual"

    listed = api.get(f"/v1/account/{account}/suppressions").json()
    assert [e["address"] for e in listed["suppressions"]] == [dead]
    assert listed["total"] == 1

    refused = api.post(f"/v1/account/{account}/submit", json=message(account, dead))
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["field"] == "to"
    assert dead in body["message"] and "hard bounce" in body["message"]
    assert [d["address"] for d in body["details"]] == [dead]

    removed = api.delete(f"/v1/account/{account}/suppressions/{dead}")
    assert removed.status_code == 200, removed.text
    assert api.get(f"/v1/account/{account}/suppressions").json()["total"] == 0
    assert api.delete(f"/v1/account/{account}/suppressions/{dead}").status_code == 404

    accepted = api.post(f"/v1/account/{account}/submit", json=message(account, dead))
    assert accepted.status_code == 200, accepted.text
    wait_for(lambda: smtp_sink.to(dead), message="delivery once the address is no longer suppressed")


def test_skip_suppressed_drops_only_those_recipients(api: httpx.Client, account: str, smtp_sink: SmtpSink) -> None:
    dead, alive = rcpt("dead"), rcpt("alive")
    api.post(f"/v1/account/{account}/suppressions", json={"address": dead, "reason": "complained"}).raise_for_status()

    # A suppressed Cc is caught too: the check runs on the envelope.
    body = message(account, alive, cc=[{"address": dead}], skipSuppressed=True)
    queued = api.post(f"/v1/account/{account}/submit", json=body)
    assert queued.status_code == 200, queued.text

    [received] = wait_for(lambda: smtp_sink.to(alive), message="delivery to the recipient that is not suppressed")
    assert [r.lower() for r in received.rcpt_tos] == [alive]
    assert smtp_sink.to(dead) == []

    # Nobody left to mail: still an error, naming the address.
    only_dead = api.post(f"/v1/account/{account}/submit", json=message(account, dead, skipSuppressed=True))
    assert only_dead.status_code == 422, only_dead.text
    assert dead in only_dead.json()["message"]


def test_global_entry_applies_to_every_account(api: httpx.Client, account: str, smtp_sink: SmtpSink) -> None:
    other = f"acct-{uuid.uuid4().hex[:10]}"
    api.post(
        "/v1/account",
        json={
            "account": other,
            "email": f"{other}@sender.test",
            "imap": False,
            "smtp": {
                "host": "127.0.0.1",
                "port": smtp_sink.port,
                "secure": False,
                "auth": {"user": other, "pass": "smtp-password"},
            },
        },
    ).raise_for_status()
    dead = rcpt("global")
    added = api.post("/v1/suppressions", json={"address": dead, "reason": "spam trap"})
    assert added.status_code == 200, added.text
    assert dead in [e["address"] for e in api.get("/v1/suppressions", params={"pageSize": 1000}).json()["suppressions"]]
    # Not an entry of the account's own list.
    assert api.get(f"/v1/account/{account}/suppressions").json()["total"] == 0

    for sender in (account, other):
        refused = api.post(f"/v1/account/{sender}/submit", json=message(sender, dead))
        assert refused.status_code == 422, refused.text
        assert "spam trap" in refused.json()["message"]

    assert api.delete(f"/v1/suppressions/{dead}").status_code == 200
    accepted = api.post(f"/v1/account/{other}/submit", json=message(other, dead))
    assert accepted.status_code == 200, accepted.text


def test_bad_input_is_refused_with_the_field(api: httpx.Client, account: str) -> None:
    bad = api.post(f"/v1/account/{account}/suppressions", json={"address": "not-an-address"})
    assert bad.status_code == 400 and bad.json()["field"] == "address", bad.text
    unknown = api.get("/v1/account/no-such-account/suppressions")
    assert unknown.status_code == 404, unknown.text


def test_concurrent_submits_each_get_their_own_answer(api: httpx.Client, account: str, smtp_sink: SmtpSink) -> None:
    """Submits arriving together share one commit: a refused one must not take the others down."""
    dead = rcpt("dead")
    added = api.post(f"/v1/account/{account}/suppressions", json={"address": dead, "reason": "manual"})
    assert added.status_code == 200, added.text
    alive = [rcpt("burst") for _ in range(16)]
    jobs = [(account, message(account, a)) for a in alive]
    jobs += [(account, message(account, dead)) for _ in range(4)]
    jobs += [("no-such-account-" + uuid.uuid4().hex[:6], message(account, rcpt()))]
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: api.post(f"/v1/account/{job[0]}/submit", json=job[1]), jobs))

    assert [a.status_code for a in answers] == [200] * 16 + [422] * 4 + [404], [a.text for a in answers]
    assert all(a.json()["field"] == "to" for a in answers[16:20])
    queue_ids = [a.json()["queueId"] for a in answers[:16]]
    assert len(set(queue_ids)) == 16
    for queue_id in queue_ids:
        assert api.get(f"/v1/outbox/{queue_id}").status_code == 200
    for address in alive:
        wait_for(lambda a=address: smtp_sink.to(a), message=f"delivery to {address}")
    assert not smtp_sink.to(dead)
