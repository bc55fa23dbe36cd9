"""One error shape for every failure: ``{"statusCode", "error", "message", "field"?}``.

The shape follows EmailEngine's (Boom) so clients written for it parse our
errors too; ``field`` names the offending input, ``details`` lists every one.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from mailgate_common.failures import is_transient

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.details = details


def not_found(what: str, field: str | None = None) -> ApiError:
    return ApiError(404, f"{what} not found", field)


def error_body(status: int, message: str, field: str | None = None,
               details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "statusCode": status,
        "error": HTTPStatus(status).phrase,
        "message": message,
    }
    if field:
        body["field"] = field
    if details:
        body["details"] = details
    return body


def _respond(status: int, message: str, field: str | None = None,
             details: list[dict[str, Any]] | None = None) -> Response[dict[str, Any]]:
    return Response(error_body(status, message, field, details), status_code=status)


def handle_api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[dict[str, Any]]:
    return _respond(exc.status, exc.message, exc.field, exc.details)


_MSGSPEC_PATH = re.compile(r"at `\$\.?([^`]*)`")


def handle_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    details: list[dict[str, Any]] = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if not isinstance(item, dict):
            continue
        message = str(item.get("message", ""))
        key = item.get("key")
        found = _MSGSPEC_PATH.search(message)
        field = found.group(1) if found else key
        if field in (None, "", "data", "body"):
            field = None
        details.append({"field": field, "message": _MSGSPEC_PATH.sub("", message).rstrip(" -")})
    if not details:
        return _respond(400, "Request body is not valid JSON")
    status = 400 if any("malformed" in d["message"].lower() or "JSON" in d["message"] for d in details) else 422
    first = details[0]
    message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    return _respond(status, message, first["field"], details)


def handle_http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    return _respond(exc.status_code, str(exc.detail))


def handle_database_down(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    # Usually nothing was committed, but a connection lost while COMMIT was on its
    # way leaves it unknown: say so, and how to retry safely.
    log.warning("database unavailable: %r", exc)
    return _respond(503, "Database unavailable; the request was probably not stored. Retry it "
                    "(with the same Idempotency-Key, so it can never be queued twice)")


def handle_unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    if is_transient(exc):
        return handle_database_down(_, exc)
    log.exception("unhandled error", exc_info=exc)
    return _respond(500, "Internal error")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ApiError: handle_api_error,
    ValidationException: handle_validation,
    HTTPException: handle_http,
    Exception: handle_unexpected,
}
