"""How every non-HTTP service lives: start, serve health and metrics, stop on SIGTERM.

A service is anything with ``start()``, ``stop()`` and ``ready()``.  ``run``
gives it uvloop, logging, tracing, a small HTTP server for
``/health/live``, ``/health/ready`` and ``/metrics``, and a clean shutdown:
SIGTERM stops new work, the service hands back what it holds, and the
process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

import uvicorn
import uvloop
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mailgate_common import gc_tuning, malloc
from mailgate_common.settings import Settings, check_secret_or_exit
from mailgate_common.telemetry import setup_logging, setup_tracing

log = logging.getLogger(__name__)

DEFAULT_HEALTH_PORTS = {"sender": 9102, "webhooks": 9103, "smtp-ingress": 9104, "imap-sync": 9105}

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Service(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def ready(self) -> bool: ...


def health_app(service: Service) -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/metrics":
            status, body, ctype = 200, generate_latest(), CONTENT_TYPE_LATEST
        elif path in ("/health/live", "/healthz"):
            status, body, ctype = 200, b'{"status":"ok"}', "application/json"
        elif path in ("/health/ready", "/health", "/readyz"):
            ok = await service.ready()
            status = 200 if ok else 503
            body = b'{"status":"ok"}' if ok else b'{"status":"unavailable"}'
            ctype = "application/json"
        else:
            status, body, ctype = 404, b'{"error":"Not Found"}', "application/json"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", ctype.encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside our loop: the service, not uvicorn, owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class GracefulServer(uvicorn.Server):
    """uvicorn as the main server: SIGTERM/SIGINT drain connections, then exit 0
    (stock uvicorn re-raises the signal afterwards, which reads as a crash)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


def run(name: str, settings: Settings, service: Service, young_generation: int | None = gc_tuning.YOUNG) -> None:
    """``young_generation``: see :func:`mailgate_common.gc_tuning.tune_after_start`."""
    check_secret_or_exit(settings)
    setup_logging(settings, name)
    setup_tracing(name)
    uvloop.run(_serve(name, settings, service, young_generation))


async def _serve(name: str, settings: Settings, service: Service, young_generation: int | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    port = settings.health_port or DEFAULT_HEALTH_PORTS.get(name, 0)
    health = _EmbeddedServer(
        uvicorn.Config(
            health_app(service),
            host=settings.health_host,
            port=port,
            log_level="warning",
            lifespan="off",
        )
    )
    health_task = asyncio.create_task(health.serve())
    await service.start()
    malloc.trim()
    gc_tuning.tune_after_start(young_generation)
    log.info("%s started (health on %s:%s)", name, settings.health_host, port)
    await stop.wait()
    log.info("%s stopping", name)
    await service.stop()
    health.should_exit = True
    await health_task
    log.info("%s stopped", name)
