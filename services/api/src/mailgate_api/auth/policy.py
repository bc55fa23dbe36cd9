"""Which caller a /v1 route admits - pure decisions, no I/O.

Default deny: a route is open to an account-restricted token only when every
resource it addresses can be tied to that account (an ``{account}`` or
``{queue_id}`` path parameter, or an ``account`` query filter the middleware
pins to the token's account).  Any other /v1 route is admin-only until its
handler says otherwise with ``opt={"auth": "account"}``.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

Access = Literal["public", "admin", "account"]

API_PREFIX = "/v1"
# Path parameters that name something owned by one account.
OWNED_PATH_PARAMS = ("account", "queue_id")
ACCOUNT_FILTER = "account"
QUERY_TOKEN = "access_token"


def is_protected(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def _declares_account_filter(handler: Any) -> bool:
    try:
        parameters = handler.parsed_fn_signature.parameters
    except AttributeError:
        return False
    return ACCOUNT_FILTER in parameters


def access(handler: Any, path_params: dict[str, Any]) -> Access:
    declared = (getattr(handler, "opt", None) or {}).get("auth")
    if declared in ("public", "admin", "account"):
        return declared  # type: ignore[no-any-return]
    if any(name in path_params for name in OWNED_PATH_PARAMS):
        return "account"
    if _declares_account_filter(handler):
        return "account"
    return "admin"


def is_admin(scope: Any) -> bool:
    """Whether the request was let in with a token that is not bound to one account."""
    info = scope.get("auth")
    return info is not None and getattr(info, "account", "") is None


def token_account(scope: Any) -> str | None:
    """The account the request's token is bound to (None: an admin token)."""
    account: str | None = getattr(scope.get("auth"), "account", None)
    return account


def needs_account_filter(handler: Any, path_params: dict[str, Any]) -> bool:
    return ACCOUNT_FILTER not in path_params and _declares_account_filter(handler)


def token_from(headers: list[tuple[bytes, bytes]], query_string: bytes) -> str | None:
    """``Authorization: Bearer <token>`` first, then EmailEngine's ``?access_token=``."""
    for name, raw in headers:
        if name.lower() == b"authorization":
            scheme, _, credentials = raw.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
    for key, token in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key == QUERY_TOKEN and token:
            return token
    return None


def pin_account(query_string: bytes, account: str) -> bytes | None:
    """The query with ``account`` forced to the token's account; None if it asked for another."""
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    if any(k == ACCOUNT_FILTER and v not in ("", account) for k, v in pairs):
        return None
    kept = [(k, v) for k, v in pairs if k != ACCOUNT_FILTER]
    return urlencode([*kept, (ACCOUNT_FILTER, account)]).encode("latin-1")
