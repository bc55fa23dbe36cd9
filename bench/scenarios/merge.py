"""Mail merge: 10,000 recipients in one request, queued and delivered into Postfix smtp-sink.

Queued: recipients/s from sending the request to its answer (every message
rendered, built and committed), vs the same templated message sent as
individual REST submits by 100 concurrent clients.  Delivered: recipients/s
from starting the sender to the last one sent, vs the sender draining as many
plain messages put straight into the outbox.
"""

from __future__ import annotations

import json
import time

from bench.context import Bench, Row
from bench.peers import SmtpSink, wrk_post
from bench.scenarios.drain import INSERT, RAW, _psql
from tests.support.stack import free_port

RECIPIENTS = 10_000
TEMPLATE = {
    "subject": "Your order {{params.order}}, {{params.name}}",
    "text": "Hello {{params.name}},\n\nOrder {{params.order}} ships {{params.when}}.\n" + "Thank you. " * 40,
    "html": "<html><body><p>Hello <b>{{params.name}}</b>,</p><p>Order {{params.order}} ships "
            "{{params.when}}.</p>" + "<p>Thank you for shopping with us.</p>" * 20 + "</body></html>",
}


def _params(i: int) -> dict[str, object]:
    return {"name": f"Customer {i}", "order": 100_000 + i, "when": "today" if i % 2 else "tomorrow"}


def _wait_sent(bench: Bench, where: str, count: int, timeout: float = 600) -> float:
    """Seconds until ``count`` rows matching ``where`` are final; the clock starts now."""
    started = time.perf_counter()
    deadline = started + timeout
    while time.perf_counter() < deadline:
        done = int(_psql(bench, f"SELECT count(*) FROM outbox WHERE {where} AND state IN ('sent', 'failed')"))
        if done >= count:
            break
        time.sleep(0.2)
    return time.perf_counter() - started


def run(bench: Bench, count: int = RECIPIENTS) -> None:
    port = free_port()
    sender = bench.stack.services["sender"]
    with SmtpSink(port), bench.api() as api:
        api.timeout = 120
        account = bench.create_account(port)
        # Public: the reference's account sends with it too.
        created = api.post("/v1/templates/template", json={"account": None, "name": "Order",
                                                           "format": "html", "content": TEMPLATE})
        created.raise_for_status()
        template = created.json()["id"]
        sender.kill()  # queue first, deliver after: each figure measures one thing

        # Reference: the same message, one REST submit per recipient, 100 clients
        # (an account nobody delivers for: its rows are dropped with it).
        single_account = bench.create_account(9)
        one = json.dumps({"to": [{"address": "rcpt@example.org"}], "template": template,
                          "render": {"params": _params(7)}}).encode()
        seconds = 8
        singles = wrk_post(f"{bench.stack.api_url}/v1/account/{single_account}/submit", one, bench.headers,
                           connections=100, seconds=seconds)
        bench.commands.append(singles.command)
        api.delete(f"/v1/account/{single_account}")
        assert singles.requests > singles.non_2xx, "the reference's submits all failed"

        entries = [{"to": {"name": f"Customer {i}", "address": f"rcpt{i}@example.org"}, "params": _params(i)}
                   for i in range(count)]
        started = time.perf_counter()
        answer = api.post(f"/v1/account/{account}/submit", json={"template": template, "mailMerge": entries})
        accepted = time.perf_counter() - started
        answer.raise_for_status()
        results = answer.json()["mailMerge"]
        queued = sum(1 for r in results if r.get("queueId"))
        assert queued == count, f"only {queued} of {count} queued"
        bench.commands.append(f"POST /v1/account/…/submit with mailMerge of {count:,} (template, params each)")
        print(f"  merge of {count:,} answered in {accepted:.2f} s", flush=True)
        bench.add(Row("Mail merge", f"{count:,} recipients queued in one request", queued / accepted,
                      "rcpt/s", "individual templated REST submits, 100 clients",
                      (singles.requests - singles.non_2xx) / seconds, target="≥ 333/s (10,000 in < 30 s)"))

        sender.start(wait=False)
        elapsed = _wait_sent(bench, f"account_id = '{account}'", count)
        sent = int(_psql(bench, f"SELECT count(*) FROM outbox WHERE account_id = '{account}' AND state = 'sent'"))
        sender.wait_ready()

        # Reference: as many plain 1 KB messages put straight into the outbox, drained the same way.
        sender.kill()
        _psql(bench, INSERT.format(tag="merge-ref", account=account, raw=RAW, count=count))
        sender.start(wait=False)
        plain = _wait_sent(bench, "id LIKE 'drain%-merge-ref'", count)
        sender.wait_ready()
        plain_sent = int(_psql(bench, "SELECT count(*) FROM outbox WHERE id LIKE 'drain%-merge-ref' "
                                      "AND state = 'sent'"))
        bench.add(Row("Mail merge", f"{count:,} merged messages delivered -> smtp-sink", sent / elapsed, "rcpt/s",
                      "plain 1 KB outbox rows drained -> smtp-sink", plain_sent / plain))
        api.delete(f"/v1/account/{account}")
        api.delete(f"/v1/templates/template/{template}")
