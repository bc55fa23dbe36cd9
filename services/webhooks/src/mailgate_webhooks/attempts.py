"""One attempt of a claimed delivery: the POST, then the delivery's next state
(delivered, retrying at a backed-off time, or failed once the window is spent).

Status contract: any 2xx is delivered; anything else (and no answer) is retried
until the retry window is spent, as EmailEngine does for every event.  The one
exception is ``inboundMessage``: its receiver is the application a route hands
mail to, and 406 (Not Acceptable: "I do not want this message") or 410 (Gone:
"this recipient is no more") fail the delivery at once, with the reason
recorded, and do not count against the endpoint's health: the endpoint
answered, deliberately.  Other events keep EmailEngine's behaviour, which their
subscribers were written for.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from opentelemetry import trace
from prometheus_client import Counter, Histogram

from mailgate_common import events, lifecycle
from mailgate_common.settings import Settings
from mailgate_webhooks import retry
from mailgate_webhooks.http import Answer, WebhookClient
from mailgate_webhooks.jobs import AttemptResult, Job

log = logging.getLogger(__name__)
tracer = trace.get_tracer("mailgate.webhooks")

WEBHOOK_ATTEMPTS = Counter("mailgate_webhook_attempts_total", "Webhook POSTs", ["result"])
WEBHOOK_SECONDS = Histogram("mailgate_webhook_seconds", "Webhook POST latency")

# Answers that end an inboundMessage delivery without a retry, and why.
REFUSALS = {406: "refused by the endpoint (406 Not Acceptable): not retried",
            410: "refused by the endpoint (410 Gone): not retried"}
REFUSING_EVENTS = frozenset({"inboundMessage"})


def refusal(event: str, status: int | None) -> str | None:
    """The recorded reason when this answer ends the delivery without a retry."""
    return REFUSALS.get(status or 0) if event in REFUSING_EVENTS else None


def ee_headers(job: Job, now: datetime) -> dict[str, str]:
    """EmailEngine's headers about the delivery: its id, the attempts made before
    this one, how long it has been queued, and the event id (also in the body)."""
    queued = max(0, round((now - job.retry_from).total_seconds()))
    return {
        "X-EE-Wh-Id": str(job.delivery_id),
        "X-EE-Wh-Attempts-Made": str(job.attempts_made),
        "X-EE-Wh-Queued-Time": f"{queued}s",
        "X-EE-Wh-Event-Id": job.event_id,
    }


class Attempts:
    def __init__(self, settings: Settings, client: WebhookClient) -> None:
        self.settings = settings
        self.client = client

    async def attempt(self, job: Job) -> AttemptResult:
        """POST ``job`` once (or, when its target cannot be signed for, fail it without a POST)."""
        attempt = job.attempts_made + 1
        started = events.utcnow()
        t0 = time.perf_counter()
        with tracer.start_as_current_span(
            "webhook POST",
            context=job.context,
            kind=trace.SpanKind.CLIENT,
            attributes={"mailgate.event_id": job.event_id, "mailgate.event": job.event,
                        "mailgate.attempt": attempt},
        ) as span:
            if job.target.unusable is not None:
                answer = Answer(None, job.target.unusable, None)
            else:
                answer = await self.client.post(job.target, job.event_id, job.payload, ee_headers(job, started))
            span.set_attribute("http.response.status_code", answer.status or 0)
        duration = time.perf_counter() - t0
        WEBHOOK_SECONDS.observe(duration)
        status = answer.status
        ok = status is not None and 200 <= status < 300
        refused = refusal(job.event, status)
        error = answer.error if answer.error is not None or ok else f"HTTP {status}"
        if refused is not None:
            error = f"HTTP {status}: {refused}"
        WEBHOOK_ATTEMPTS.labels("ok" if ok else "refused" if refused else "error").inc()
        now = events.utcnow()
        due = None
        if ok:
            state = lifecycle.WEBHOOK_DELIVERED
        elif refused is not None:
            state = lifecycle.WEBHOOK_FAILED
        else:
            settings = self.settings
            due = retry.next_attempt_at(attempt, job.retry_from, now, settings.webhook_retry_base,
                                        settings.webhook_retry_max, settings.webhook_retry_window)
            state = lifecycle.WEBHOOK_FAILED if due is None else lifecycle.WEBHOOK_RETRYING
        # Failures at INFO; one line per success would cost more than the POST's bookkeeping.
        log.log(logging.DEBUG if ok else logging.INFO, "webhook %s %s -> %s", job.event, job.target.url,
                status or error)
        return AttemptResult(
            job=job, state=state, attempt=attempt, status=status, error=error, excerpt=answer.excerpt,
            next_attempt_at=due, delivered_at=now if ok else None, duration_ms=int(duration * 1000),
            started_at=started, refused=refused is not None,
        )
