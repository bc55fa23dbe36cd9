"""One error shape for every failure, EmailEngine's (Boom's) with its ``code``:
``{"statusCode", "error", "message", "code"?, "field"?, "fields"?, "details"?}``.

Clients written for EmailEngine branch on ``statusCode`` and ``code`` and read
``fields[{message, key}]`` of a validation failure; mailgate's own clients read
``field`` (the offending input's full path) and ``details[{field, message}]``.
Every input validation failure is 400 ``InputValidationError``, as EmailEngine
answers them (it has no 422 for bad input).
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

INPUT_VALIDATION = "InputValidationError"

# EmailEngine's codes for the things mailgate looks up; the rest get its generic "NotFound".
_NOT_FOUND_CODES = {
    "Account": "AccountNotFound",
    "Message": "MessageNotFound",
    "Referenced message": "ReferenceNotFound",
    "Gateway": "GatewayNotFound",
    "Token": "UnknownToken",
}


class ApiError(Exception):
    """A failure answered as JSON; a 400 without a ``code`` is bad input (``InputValidationError``)."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        details: list[dict[str, Any]] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        if status == 400 and code is None:
            code = INPUT_VALIDATION
        self.status = status
        self.message = message
        self.field = field
        self.details = details
        self.code = code


def invalid(field: str, message: str) -> ApiError:
    """400 InputValidationError naming ``field``; ``message`` reads after the field name."""
    return ApiError(400, f"{field}: {message}", field,
                    [{"field": field, "message": message}], INPUT_VALIDATION)


def not_found(what: str, field: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(404, f"{what} not found", field, code=code or _NOT_FOUND_CODES.get(what, "NotFound"))


def _key(field: str | None) -> str | None:
    # EmailEngine's ``fields[].key`` is Joi's context.key: the last path element.
    if not field:
        return None
    return re.split(r"[.\[]", field.rstrip("]"))[-1] or field


def error_body(status: int, message: str, field: str | None = None,
               details: list[dict[str, Any]] | None = None, code: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "statusCode": status,
        "error": HTTPStatus(status).phrase,
        "message": message,
    }
    if code:
        body["code"] = code
    if field:
        body["field"] = field
    if details:
        body["details"] = details
        if code == INPUT_VALIDATION:
            body["fields"] = [{"message": d.get("message", ""), "key": _key(d.get("field"))}
                              for d in details]
    elif code == INPUT_VALIDATION and field:
        body["fields"] = [{"message": message, "key": _key(field)}]
    return body


def _respond(status: int, message: str, field: str | None = None,
             details: list[dict[str, Any]] | None = None, code: str | None = None) -> Response[dict[str, Any]]:
    return Response(error_body(status, message, field, details, code), status_code=status)


def handle_api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[dict[str, Any]]:
    return _respond(exc.status, exc.message, exc.field, exc.details, exc.code)


_MSGSPEC_PATH = re.compile(r"at `\$\.?([^`]*)`")
_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `([^`]*)`")
_MISSING_FIELD = re.compile(r"Object missing required field `([^`]*)`")


def _detail(message: str, key: Any) -> dict[str, Any]:
    found = _MSGSPEC_PATH.search(message)
    field = found.group(1) if found else key
    if field in (None, "", "data", "body"):
        field = None
    text = _MSGSPEC_PATH.sub("", message).rstrip(" -")
    unknown = _UNKNOWN_FIELD.search(text)
    if unknown:
        # msgspec names the object holding the field; the user wants the field itself.
        field = f"{field}.{unknown.group(1)}" if field else unknown.group(1)
        text = "is not allowed (unknown field)"
    missing = _MISSING_FIELD.search(text)
    if missing:
        field = f"{field}.{missing.group(1)}" if field else missing.group(1)
        text = "is required"
    return {"field": field, "message": text}


def handle_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    details = [
        _detail(str(item.get("message", "")), item.get("key"))
        for item in (exc.extra if isinstance(exc.extra, list) else [])
        if isinstance(item, dict)
    ]
    if not details:
        return _respond(400, "Request body is not valid JSON", code=INPUT_VALIDATION)
    first = details[0]
    message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    return _respond(400, message, first["field"], details, INPUT_VALIDATION)


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
