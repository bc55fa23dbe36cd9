"""Inbound routes: which recipients the MX door accepts and what happens to their mail.

CONTRACT (filled in by the routes work; other code imports these names as they are):
``RouteTable(routes)`` built from the enabled ``inbound_routes`` rows (``load(db)``);
at RCPT the door asks ``table.for_recipient(address)`` (the routes whose
recipient criterion matches, by priority, with the plus-tag and regex captures)
and refuses the recipient with ``550 5.1.1`` when it is empty; at DATA it asks
``decide(matches, message_headers, auth)`` for the routes whose header and
authentication criteria hold too, cut after the first route with a ``stop``
action.  ``RouteCache`` keeps a replica's table fresh without a query per RCPT.

The stored JSON (``inbound_routes.match`` / ``actions``, the API's camelCase
shape) is parsed once, when the table is built, by ``build_route``; the API
validates with the same function, so a route the API accepted always loads.
Helpers for the door: ``rejects_at_rcpt(matches)`` (the reject action that
certainly applies before DATA), ``first_reject(taken)`` and ``max_size``.
"""

from __future__ import annotations

import asyncio
import email.header
import logging
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from typing import Any, Literal, cast

from sqlalchemy import select

from mailgate_common.db import Database
from mailgate_common.db.models import InboundRoute
from mailgate_common.inbound.auth import AuthResults

log = logging.getLogger(__name__)

ActionType = Literal["webhook", "hold", "reject", "stop"]
ACTION_TYPES: frozenset[str] = frozenset({"webhook", "hold", "reject", "stop"})

MAX_PATTERN = 1000  # characters of a regex, recipient or header
MAX_ADDRESS = 320  # 64 (local) + 1 + 255 (domain), RFC 5321's limits; longer never matches
MAX_HEADER_VALUE = 4096  # characters of a header value a regex sees (bounded work per message)
MAX_REJECT_MESSAGE = 200
MAX_LIST = 50  # header rules, actions, endpoints per action: the work per message stays bounded

# The verdicts each check can give (mailgate_common.inbound.auth); a requirement lists allowed ones.
AUTH_VERDICTS: dict[str, frozenset[str]] = {
    "spf": frozenset({"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"}),
    "dkim": frozenset({"pass", "fail", "neutral", "none", "temperror", "permerror", "policy"}),
    "dmarc": frozenset({"pass", "fail", "none", "temperror", "permerror"}),
}

_MATCH_KEYS = frozenset({"recipient", "domain", "recipientRegex", "headers", "auth"})
_CRITERIA = ("recipient", "domain", "recipientRegex")
_HEADER_NAME = re.compile(r"[!-9;-~]{1,200}")  # RFC 5322 field-name: printable ASCII but ":"
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?|[a-z0-9_]")
_LOCAL_BAD = re.compile(r"[\s<>@\x00-\x1f\x7f]")


class RouteError(ValueError):
    """A route's JSON is invalid; ``field`` is its path in the API shape ("match.recipientRegex")."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Action:
    type: ActionType
    endpoints: tuple[str, ...] = ()  # webhook: /v1/webhooks endpoint ids
    payload: Literal["json", "raw"] = "json"  # webhook: the body's form
    sync: bool = False  # webhook: ask the endpoint during the SMTP transaction
    message: str | None = None  # reject: the SMTP reply text

    def as_json(self) -> dict[str, Any]:
        if self.type == "webhook":
            return {"type": "webhook", "endpoints": list(self.endpoints), "payload": self.payload, "sync": self.sync}
        if self.type == "reject":
            return {"type": "reject", "message": self.message}
        return {"type": self.type}


@dataclass(frozen=True)
class HeaderRule:
    name: str  # lower-cased field name
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class Route:
    id: str
    name: str
    priority: int
    account: str | None
    actions: tuple[Action, ...]
    max_size: int | None = None
    # Exactly one recipient criterion: an exact address (lower-cased), a domain
    # catch-all, or a regex over the lower-cased address.
    recipient: str | None = None
    domain: str | None = None  # the recipient's domain, or the catch-all's; None for a regex
    recipient_regex: re.Pattern[str] | None = None
    headers: tuple[HeaderRule, ...] = ()  # all must match
    auth: tuple[tuple[str, frozenset[str]], ...] = ()  # ("spf", {"pass"}), ...: allowed verdicts
    enabled: bool = True
    created_at: datetime | None = None

    @property
    def kind(self) -> Literal["recipient", "domain", "recipientRegex"]:
        if self.recipient is not None:
            return "recipient"
        if self.recipient_regex is not None:
            return "recipientRegex"
        return "domain"

    @property
    def has_content_criteria(self) -> bool:
        """Whether the route needs the message (headers, verdicts) to know if it applies."""
        return bool(self.headers or self.auth)

    @property
    def stops(self) -> bool:
        return any(action.type == "stop" for action in self.actions)

    @property
    def holds(self) -> bool:
        return any(action.type == "hold" for action in self.actions)

    def action(self, type: ActionType) -> Action | None:
        return next((action for action in self.actions if action.type == type), None)

    def webhook_actions(self) -> list[Action]:
        return [action for action in self.actions if action.type == "webhook"]


@dataclass(frozen=True)
class RecipientMatch:
    route: Route
    address: str  # the envelope recipient as given
    tag: str | None = None  # "1234" of support+1234@...
    captures: dict[str, str] = field(default_factory=dict)  # a regex route's named (or numbered) groups


# --- parsing the stored / API JSON ---------------------------------------------------------


def normalize_domain(value: object, where: str) -> str:
    """The lower-cased ASCII (IDNA) form of a domain name, or RouteError naming ``where``."""
    if not isinstance(value, str) or not value.strip():
        raise RouteError(where, "must be a domain name")
    name = value.strip().lower().rstrip(".")
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise RouteError(where, f"{value!r} is not a valid domain name") from None
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        raise RouteError(where, f"{value!r} is not a valid domain name")
    return name


def normalize_address(value: object, where: str) -> str:
    if not isinstance(value, str) or "@" not in value:
        raise RouteError(where, "must be an email address (local@domain)")
    local, _, domain = value.strip().rpartition("@")
    if not local or len(local) > 64 or _LOCAL_BAD.search(local):
        raise RouteError(where, f"{value!r} is not a valid email address")
    return f"{local.lower()}@{normalize_domain(domain, where)}"


def compile_pattern(value: object, where: str, flags: int = 0) -> re.Pattern[str]:
    if not isinstance(value, str) or not value:
        raise RouteError(where, "must be a regular expression")
    if len(value) > MAX_PATTERN:
        raise RouteError(where, f"longer than {MAX_PATTERN} characters")
    try:
        return re.compile(value, flags)
    except re.error as exc:
        raise RouteError(where, f"invalid regular expression: {exc}") from None


def _parse_headers(value: object) -> tuple[HeaderRule, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RouteError("match.headers", "must be a list of {name, regex}")
    if len(value) > MAX_LIST:
        raise RouteError("match.headers", f"at most {MAX_LIST} rules")
    rules = []
    for i, item in enumerate(value):
        where = f"match.headers[{i}]"
        if not isinstance(item, Mapping):
            raise RouteError(where, "must be an object {name, regex}")
        extra = set(item) - {"name", "regex"}
        if extra:
            raise RouteError(f"{where}.{sorted(extra)[0]}", "unknown field")
        name = item.get("name")
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise RouteError(f"{where}.name", "must be a header field name (printable ASCII, no ':')")
        rules.append(HeaderRule(name.lower(), compile_pattern(item.get("regex"), f"{where}.regex")))
    return tuple(rules)


def _parse_auth(value: object) -> tuple[tuple[str, frozenset[str]], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise RouteError("match.auth", 'must be an object like {"spf": ["pass"], "dmarc": ["pass"]}')
    rules = []
    for check, allowed in value.items():
        where = f"match.auth.{check}"
        if check not in AUTH_VERDICTS:
            raise RouteError(where, f"unknown check; one of {', '.join(sorted(AUTH_VERDICTS))}")
        if not isinstance(allowed, list) or not allowed:
            raise RouteError(where, "must be a non-empty list of verdicts")
        for verdict in allowed:
            if not isinstance(verdict, str) or verdict.lower() not in AUTH_VERDICTS[check]:
                known = ", ".join(sorted(AUTH_VERDICTS[check]))
                raise RouteError(where, f"unknown verdict {verdict!r}; one of {known}")
        rules.append((check, frozenset(v.lower() for v in allowed)))
    return tuple(rules)


def parse_action(item: object, i: int) -> Action:
    where = f"actions[{i}]"
    if not isinstance(item, Mapping):
        raise RouteError(where, "must be an object with a type")
    kind = item.get("type")
    if kind not in ACTION_TYPES:
        raise RouteError(f"{where}.type", f"must be one of {', '.join(sorted(ACTION_TYPES))}")
    allowed = {"webhook": {"endpoints", "payload", "sync"}, "reject": {"message"}}.get(kind, set())
    extra = set(item) - allowed - {"type"}
    if extra:
        raise RouteError(f"{where}.{sorted(extra)[0]}", f"unknown field for a {kind} action")
    if kind == "webhook":
        endpoints = item.get("endpoints")
        if not isinstance(endpoints, list) or not endpoints or len(endpoints) > MAX_LIST:
            raise RouteError(f"{where}.endpoints", f"must be a list of 1 to {MAX_LIST} webhook endpoint ids")
        for j, endpoint in enumerate(endpoints):
            if not isinstance(endpoint, str) or not endpoint:
                raise RouteError(f"{where}.endpoints[{j}]", "must be a webhook endpoint id")
        payload = item.get("payload", "json")
        if payload not in ("json", "raw"):
            raise RouteError(f"{where}.payload", 'must be "json" or "raw"')
        sync = item.get("sync", False)
        if not isinstance(sync, bool):
            raise RouteError(f"{where}.sync", "must be true or false")
        return Action("webhook", tuple(dict.fromkeys(endpoints)), cast(Literal["json", "raw"], payload), sync)
    if kind == "reject":
        message = item.get("message")
        if message is not None and (
            not isinstance(message, str) or len(message) > MAX_REJECT_MESSAGE or re.search(r"[\x00-\x1f\x7f]", message)
        ):
            raise RouteError(f"{where}.message", f"must be one line of at most {MAX_REJECT_MESSAGE} characters")
        return Action("reject", message=message or None)
    return Action(cast(ActionType, kind))


def parse_actions(value: object) -> tuple[Action, ...]:
    if not isinstance(value, list) or not value or len(value) > MAX_LIST:
        raise RouteError("actions", f"must be a list of 1 to {MAX_LIST} actions")
    return tuple(parse_action(item, i) for i, item in enumerate(value))


@dataclass(frozen=True)
class Criteria:
    recipient: str | None
    domain: str | None
    recipient_regex: re.Pattern[str] | None
    headers: tuple[HeaderRule, ...]
    auth: tuple[tuple[str, frozenset[str]], ...]

    def as_json(self) -> dict[str, Any]:
        """The normalized ``match`` object as stored."""
        out: dict[str, Any] = {}
        if self.recipient is not None:
            out["recipient"] = self.recipient
        elif self.recipient_regex is not None:
            out["recipientRegex"] = self.recipient_regex.pattern
        else:
            out["domain"] = self.domain
        if self.headers:
            out["headers"] = [{"name": rule.name, "regex": rule.pattern.pattern} for rule in self.headers]
        if self.auth:
            out["auth"] = {check: sorted(allowed) for check, allowed in self.auth}
        return out


def parse_match(value: object) -> Criteria:
    if not isinstance(value, Mapping):
        raise RouteError("match", "must be an object with one of recipient, domain, recipientRegex")
    extra = set(value) - _MATCH_KEYS
    if extra:
        raise RouteError(f"match.{sorted(extra)[0]}", "unknown field")
    given = [key for key in _CRITERIA if value.get(key) is not None]
    if len(given) != 1:
        raise RouteError("match", "exactly one of recipient, domain, recipientRegex is required")
    recipient = domain = None
    regex = None
    if given[0] == "recipient":
        recipient = normalize_address(value["recipient"], "match.recipient")
        domain = recipient.rpartition("@")[2]
    elif given[0] == "domain":
        domain = normalize_domain(value["domain"], "match.domain")
    else:
        regex = compile_pattern(value["recipientRegex"], "match.recipientRegex", re.IGNORECASE)
    return Criteria(recipient, domain, regex, _parse_headers(value.get("headers")), _parse_auth(value.get("auth")))


def build_route(
    *,
    id: str,
    name: str,
    priority: int,
    account: str | None,
    match: object,
    actions: object,
    max_size: int | None = None,
    enabled: bool = True,
    created_at: datetime | None = None,
) -> Route:
    """A Route from the stored (or posted) JSON; RouteError names the bad field."""
    criteria = parse_match(match)
    return Route(
        id=id,
        name=name,
        priority=priority,
        account=account,
        actions=parse_actions(actions),
        max_size=max_size,
        recipient=criteria.recipient,
        domain=criteria.domain,
        recipient_regex=criteria.recipient_regex,
        headers=criteria.headers,
        auth=criteria.auth,
        enabled=enabled,
        created_at=created_at,
    )


# --- matching ------------------------------------------------------------------------------


def split_address(address: str) -> tuple[str, str | None, str] | None:
    """(local without the tag, tag, domain) of an address, the tag split on the first "+"."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return None
    base, plus, tag = local.partition("+")
    return base, (tag or None) if plus else None, domain


def _order(route: Route) -> tuple[int, float, str]:
    return route.priority, route.created_at.timestamp() if route.created_at else math.inf, route.id


class RouteTable:
    """The enabled routes, indexed: exact addresses and domains by dict, regexes in order."""

    def __init__(self, routes: Iterable[Route]) -> None:
        ordered = sorted((route for route in routes if route.enabled), key=_order)
        self.routes: tuple[Route, ...] = tuple(ordered)
        self._rank = {route.id: i for i, route in enumerate(ordered)}
        self._exact: dict[str, list[Route]] = {}
        self._domains: dict[str, list[Route]] = {}
        self._regexes: list[Route] = []
        for route in ordered:
            if route.recipient is not None:
                self._exact.setdefault(route.recipient, []).append(route)
            elif route.recipient_regex is not None:
                self._regexes.append(route)
            elif route.domain is not None:
                self._domains.setdefault(route.domain, []).append(route)
        # Every domain an exact or catch-all route names (regex routes name none).
        self.domains: frozenset[str] = frozenset(route.domain for route in ordered if route.domain is not None)

    def __len__(self) -> int:
        return len(self.routes)

    def for_recipient(self, address: str) -> list[RecipientMatch]:
        """The routes whose recipient criterion takes ``address``, by priority then age."""
        given = address.strip()
        lowered = given.lower()
        if len(lowered) > MAX_ADDRESS:
            return []
        parts = split_address(lowered)
        if parts is None:
            return []
        base, _, domain = parts
        # The tag and captures keep the case they were sent in (ticket ids often are
        # case-sensitive); only the matching ignores case.
        tag = split_address(given)[1]  # type: ignore[index]
        found: list[RecipientMatch] = []
        for route in self._exact.get(lowered, ()):
            found.append(RecipientMatch(route, given))
        if tag is not None or lowered != f"{base}@{domain}":
            for route in self._exact.get(f"{base}@{domain}", ()):
                found.append(RecipientMatch(route, given, tag))
        for route in self._domains.get(domain, ()):
            found.append(RecipientMatch(route, given, tag))
        for route in self._regexes:
            assert route.recipient_regex is not None
            hit = route.recipient_regex.search(given)  # compiled IGNORECASE
            if hit is not None:
                found.append(RecipientMatch(route, given, captures=_captures(hit)))
        if len(found) > 1:
            found.sort(key=lambda m: self._rank[m.route.id])
        return found


def _captures(hit: re.Match[str]) -> dict[str, str]:
    named = {number: name for name, number in hit.re.groupindex.items()}
    out: dict[str, str] = {}
    for number in range(1, (hit.re.groups or 0) + 1):
        value = hit.group(number)
        if value is not None:
            out[named.get(number, str(number))] = value
    return out


# An email Message (every occurrence of a field counts), a mapping, or (name, value) pairs.
Headers = Message | Mapping[str, str] | Iterable[tuple[str, str]] | None


def _header_values(headers: Headers) -> dict[str, list[str]]:
    """Lower-cased name -> decoded, unfolded values."""
    out: dict[str, list[str]] = {}
    if headers is None:
        return out
    pairs: Iterable[tuple[str, Any]] = headers.items() if isinstance(headers, (Message, Mapping)) else headers
    for name, value in pairs:
        out.setdefault(str(name).lower(), []).append(_decoded(value))
    return out


def _decoded(value: object) -> str:
    text = str(value)
    if "=?" in text:
        try:
            text = str(email.header.make_header(email.header.decode_header(text)))
        except (ValueError, LookupError, UnicodeError):
            pass
    return re.sub(r"\r?\n[ \t]*", " ", text)[:MAX_HEADER_VALUE]


def headers_hold(route: Route, values: dict[str, list[str]]) -> bool:
    return all(
        any(rule.pattern.search(value) for value in values.get(rule.name, ())) for rule in route.headers
    )


def auth_holds(route: Route, auth: AuthResults | None) -> bool | None:
    """Whether the verdicts meet the route's requirements; None when unknown (no verdicts)."""
    if not route.auth:
        return True
    if auth is None:
        return None
    for check, allowed in route.auth:
        if check == "spf":
            ok = auth.spf.result.lower() in allowed
        elif check == "dmarc":
            ok = auth.dmarc.result.lower() in allowed
        else:
            # Any signature with an allowed verdict; an unsigned message is "none".
            results = [dkim.result.lower() for dkim in auth.dkim] or ["none"]
            ok = any(result in allowed for result in results)
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class Verdict:
    """One match's content criteria, for the API's dry run."""

    match: RecipientMatch
    headers: bool
    auth: bool | None  # None: the route has verdict criteria and no verdicts were given


def evaluate(
    matches: Sequence[RecipientMatch], headers: Headers, auth: AuthResults | None
) -> list[Verdict]:
    values = _header_values(headers)
    return [Verdict(m, headers_hold(m.route, values), auth_holds(m.route, auth)) for m in matches]


def decide(
    matches: Sequence[RecipientMatch], headers: Headers, auth: AuthResults | None
) -> list[RecipientMatch]:
    """The matches whose header and verdict criteria hold, cut after the first with ``stop``.

    ``headers``: an ``email.message.Message``, a mapping or (name, value) pairs; a
    header the message lacks fails its criterion.  ``auth=None`` fails every verdict criterion.
    """
    values = _header_values(headers)
    taken: list[RecipientMatch] = []
    for m in matches:
        if headers_hold(m.route, values) and auth_holds(m.route, auth) is True:
            taken.append(m)
            if m.route.stops:
                break
    return taken


def rejects_at_rcpt(matches: Sequence[RecipientMatch]) -> Action | None:
    """The reject action that certainly applies to this recipient whatever the message says, or None.

    A route with header or verdict criteria may or may not apply, so its reject waits for
    DATA (``first_reject(decide(...))``); and when such a route could ``stop`` first, no
    later reject is certain either.
    """
    maybe_stopped = False
    for m in matches:
        if m.route.has_content_criteria:
            maybe_stopped = maybe_stopped or m.route.stops
            continue
        reject = m.route.action("reject")
        if reject is not None and not maybe_stopped:
            return reject
        if m.route.stops:
            return None
    return None


def first_reject(taken: Sequence[RecipientMatch]) -> Action | None:
    """The first reject action among the routes that took the message (``decide``'s answer)."""
    for m in taken:
        reject = m.route.action("reject")
        if reject is not None:
            return reject
    return None


def max_size(matches: Sequence[RecipientMatch], default: int) -> int:
    """The message size limit for these matches: the smallest a route sets, never above ``default``."""
    limits = [m.route.max_size for m in matches if m.route.max_size]
    return min([default, *limits])


# --- loading -------------------------------------------------------------------------------


def route_from_row(row: Any) -> Route:
    """A Route from an ``InboundRoute`` row (or anything with its attributes)."""
    return build_route(
        id=row.id,
        name=row.name,
        priority=row.priority,
        account=row.account_id,
        match=row.match,
        actions=row.actions,
        max_size=row.max_size,
        enabled=row.enabled,
        created_at=row.created_at,
    )


async def load(db: Database) -> RouteTable:
    """The enabled routes in one query; a row that no longer parses is skipped and logged."""
    async with db.transaction(durable=False) as session:
        rows = (await session.execute(select(InboundRoute).where(InboundRoute.enabled))).scalars().all()
    routes = []
    for row in rows:
        try:
            routes.append(route_from_row(row))
        except RouteError as exc:
            log.warning("inbound route %s skipped: %s", row.id, exc)
    return RouteTable(routes)


class RouteCache:
    """A replica's route table, reloaded at most every ``ttl`` seconds, one load at a time.

    When the database is briefly away the last table stays in use (the door keeps
    accepting what it accepted); only a first load that fails raises.
    """

    def __init__(self, db: Database, ttl: float = 5.0) -> None:
        self.db = db
        self.ttl = ttl
        self._table: RouteTable | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        """Reload at the next ``table()`` (after this process changed a route)."""
        self._loaded_at = 0.0

    async def table(self) -> RouteTable:
        if self._table is not None and time.monotonic() - self._loaded_at < self.ttl:
            return self._table
        async with self._lock:
            if self._table is not None and time.monotonic() - self._loaded_at < self.ttl:
                return self._table
            try:
                self._table = await load(self.db)
            except Exception as exc:
                if self._table is None:
                    raise
                log.warning("inbound routes not reloaded, keeping the last table: %r", exc)
            self._loaded_at = time.monotonic()
            return self._table


def delivery_entries(taken: Iterable[RecipientMatch]) -> list[dict[str, Any]]:
    """``inbound_messages.deliveries``: one entry per route, by priority, its recipients in envelope order.

    ``taken`` is every recipient's ``decide`` answer, concatenated; a route that took
    several recipients keeps the first one's tag and captures.
    """
    entries: dict[str, dict[str, Any]] = {}
    for m in taken:
        entry = entries.get(m.route.id)
        if entry is None:
            entries[m.route.id] = {
                "route": m.route.id,
                "routeName": m.route.name,
                "recipients": [m.address],
                "tag": m.tag,
                "captures": dict(m.captures),
                "actions": [action.type for action in m.route.actions],
            }
        elif m.address not in entry["recipients"]:
            entry["recipients"].append(m.address)
    ranks = {m.route.id: _order(m.route) for m in taken}
    return sorted(entries.values(), key=lambda entry: ranks[entry["route"]])
