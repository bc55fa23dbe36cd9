"""What moves between the parts of the service: a claimed delivery ready to POST
(:class:`Job`) and the result of one attempt (:class:`AttemptResult`)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime

from opentelemetry import context as otel_context

from mailgate_common import lifecycle
from mailgate_webhooks import store


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to POST one delivery."""

    url: str
    secret: str
    previous_secret: str | None  # signs too while a secret rotation's overlap lasts
    headers: dict[str, str]
    # Why no POST can be signed for this destination (its secret opens with no
    # key): the attempt is then recorded as failed without a POST.
    unusable: str | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed delivery, ready to POST."""

    delivery_id: int
    claim_token: str
    endpoint_id: str | None
    event_id: str
    event: str
    payload: bytes
    attempts_made: int
    retry_from: datetime
    target: Target
    claimed_at: float  # the scheduler's clock when the claim was taken
    context: otel_context.Context | None  # the event's trace, when known

    @property
    def dest(self) -> str:
        """The concurrency key: the endpoint id, or the URL."""
        return self.endpoint_id or self.target.url


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """One attempt: the delivery's new state and what its attempt row says."""

    job: Job
    state: str
    attempt: int
    status: int | None
    error: str | None
    excerpt: str | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    duration_ms: int
    started_at: datetime
    # The endpoint declined the delivery (attempts.refusal): failed, yet the endpoint is healthy.
    refused: bool = False

    @property
    def ok(self) -> bool:
        return self.state == lifecycle.WEBHOOK_DELIVERED

    @property
    def answered(self) -> bool:
        """Did the endpoint work (delivered, or refused on purpose)?"""
        return self.ok or self.refused

    def row(self) -> store.AttemptRow:
        job = self.job
        return store.AttemptRow(
            delivery_id=job.delivery_id, claim_token=job.claim_token, state=self.state, attempt=self.attempt,
            status=self.status, error=self.error, excerpt=self.excerpt, next_attempt_at=self.next_attempt_at,
            delivered_at=self.delivered_at, url=job.target.url, duration_ms=self.duration_ms,
            started_at=self.started_at,
        )

    def without_details(self) -> AttemptResult:
        """What is left when the full record cannot be stored: the state, the
        attempt and the status, which are what stop a delivered event from being
        POSTed again."""
        error = None if self.error is None else "the attempt's details could not be stored"
        return replace(self, error=error, excerpt=None)


class TraceContexts:
    """The event's trace context for deliveries stored here but POSTed later, so
    their POST joins the event's trace.  Bounded: another replica may POST them."""

    def __init__(self, capacity: int = 20000) -> None:
        self.capacity = capacity
        self._contexts: OrderedDict[int, otel_context.Context] = OrderedDict()

    def remember(self, delivery_id: int, context: otel_context.Context | None) -> None:
        if context is None:
            return
        self._contexts[delivery_id] = context
        if len(self._contexts) > self.capacity:
            self._contexts.popitem(last=False)

    def take(self, delivery_id: int) -> otel_context.Context | None:
        return self._contexts.pop(delivery_id, None)
