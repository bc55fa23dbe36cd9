"""A server span per HTTP request, continuing the caller's W3C trace if it sent one.

Events published while handling the request carry this span's traceparent, so
the trace continues through the sender and the webhooks service.
"""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send
from opentelemetry import trace

from mailgate_common.telemetry import context_from_traceparent

tracer = trace.get_tracer("mailgate.api")


def tracing_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or not scope["path"].startswith("/v1"):
            await app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        incoming = headers.get(b"traceparent")
        context = context_from_traceparent(incoming.decode("latin-1") if incoming else None)
        name = f"{scope.get('method', 'HTTP')} {scope['path']}"
        with tracer.start_as_current_span(name, context=context, kind=trace.SpanKind.SERVER):
            await app(scope, receive, send)

    return middleware
