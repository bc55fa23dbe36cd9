from __future__ import annotations

from typing import Any

from litestar import Request, Response

from mailgate_api.errors import ApiError, error_body


class Unauthorized(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(401, message)


def handle_unauthorized(_: Request[Any, Any, Any], exc: Unauthorized) -> Response[dict[str, Any]]:
    # RFC 6750: tell the client which scheme to use.
    return Response(error_body(401, exc.message), status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="mailgate"'})
