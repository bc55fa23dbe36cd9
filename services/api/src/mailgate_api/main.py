"""mailgate-api: the REST door."""

from __future__ import annotations

import uvicorn
import uvloop
from litestar import Litestar

from mailgate_api.app import create_app
from mailgate_common.runtime import GracefulServer
from mailgate_common.settings import check_secret_or_exit, load_settings_or_exit
from mailgate_common.telemetry import setup_logging, setup_tracing


def app_from_environment() -> Litestar:
    """Factory for uvicorn's worker processes, each of which reads the environment itself."""
    settings = load_settings_or_exit()
    setup_logging(settings, "api")
    setup_tracing("api")
    return create_app(settings)


def main() -> None:
    settings = load_settings_or_exit()
    check_secret_or_exit(settings)
    setup_logging(settings, "api")
    if settings.api_workers > 1:
        uvicorn.run(
            "mailgate_api.main:app_from_environment",
            factory=True,
            workers=settings.api_workers,
            host=settings.api_host,
            port=settings.api_port,
            loop="uvloop",
            http="httptools",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=20,
        )
        return
    setup_tracing("api")
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=20,
    )
    uvloop.run(GracefulServer(config).serve())
