"""Wires token auth into the app: middleware, token routes, 401 handler, OpenAPI scheme."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.openapi.spec import Components, Reference, SecurityRequirement, SecurityScheme
from litestar.plugins import InitPlugin

from mailgate_api.auth import policy
from mailgate_api.auth.errors import Unauthorized, handle_unauthorized
from mailgate_api.auth.middleware import TokenAuthMiddleware
from mailgate_api.auth.routes import TokenController
from mailgate_api.deps import Resources

SECURITY_SCHEMES: dict[str, SecurityScheme | Reference] = {
    "bearerAuth": SecurityScheme(type="http", scheme="bearer",
                                 description="Authorization: Bearer <access token>"),
    "accessToken": SecurityScheme(type="apiKey", name=policy.QUERY_TOKEN, security_scheme_in="query",
                                  description="EmailEngine-compatible ?access_token=<access token>"),
}
# Either scheme is enough.
SECURITY: list[SecurityRequirement] = [{"bearerAuth": []}, {"accessToken": []}]


def document_security(app: Litestar) -> None:
    """Mark every protected operation in the OpenAPI doc (health and docs stay open)."""
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if not any(policy.is_protected(p) for p in handler.paths):
                continue
            if (handler.opt or {}).get("auth") != "public" and not handler.security:
                handler.security = SECURITY


class AuthPlugin(InitPlugin):
    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.route_handlers = [*app_config.route_handlers, TokenController]
        app_config.middleware = [*app_config.middleware, TokenAuthMiddleware(self.resources)]
        handlers: dict[Any, Any] = dict(app_config.exception_handlers or {})
        handlers[Unauthorized] = handle_unauthorized
        app_config.exception_handlers = handlers
        app_config.on_startup = [*app_config.on_startup, document_security]
        openapi = app_config.openapi_config
        if openapi is not None:
            existing = openapi.components if isinstance(openapi.components, list) else [openapi.components]
            openapi.components = [*existing, Components(security_schemes=SECURITY_SCHEMES)]
        return app_config
