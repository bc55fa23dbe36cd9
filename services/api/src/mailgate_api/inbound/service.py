"""Inbound routes (validation with the engine's own parser, ownership, the dry run) and
received messages (views, attachments, release)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_api.errors import ApiError, invalid
from mailgate_api.inbound.schemas import AuthVerdicts, MessageSummary, RouteView, TestedRoute
from mailgate_common import events
from mailgate_common.content import AttachmentData, part_bytes
from mailgate_common.db.models import Account, InboundMessage, InboundRoute, WebhookEndpoint
from mailgate_common.inbound import payload
from mailgate_common.inbound import routes as engine
from mailgate_common.inbound.auth import AuthResults, DkimResult, DmarcResult, SpfResult

CATCH_ALL_WARNING = (
    "catch-all routes attract spam: every address at this domain is accepted, including guessed ones; "
    "prefer exact recipients or a regex, or add header/auth criteria"
)
MAX_SUMMARY_TEXT = 64 * 1024


def new_route_id() -> str:
    return "rt_" + secrets.token_hex(8)


def route_not_found(route_id: str) -> ApiError:
    return ApiError(404, f"Inbound route not found [{route_id}]", "id", code="RouteNotFound")


def message_not_found(message_id: str) -> ApiError:
    return ApiError(404, f"Inbound message not found [{message_id}]", "id", code="MessageNotFound")


# --- routes ----------------------------------------------------------------------------------


def parse(match: dict[str, Any], actions: list[Any]) -> tuple[engine.Criteria, tuple[engine.Action, ...]]:
    """The route's criteria and actions, or 400 naming the field (the engine's own rules)."""
    try:
        return engine.parse_match(match), engine.parse_actions(actions)
    except engine.RouteError as exc:
        raise invalid(exc.field, exc.message) from None


async def check_endpoints(
    session: AsyncSession, actions: Sequence[engine.Action], route_account: str | None, caller: str | None
) -> None:
    """Every webhook action names an existing endpoint the route's account may use.

    An account's route may use its account's endpoints and (set up by an admin) global
    ones; an account token only its own, and another account's endpoint looks missing.
    """
    wanted = {endpoint for action in actions for endpoint in action.endpoints}
    found: dict[str, str | None] = {}
    if wanted:
        rows = await session.execute(
            select(WebhookEndpoint.id, WebhookEndpoint.account_id).where(WebhookEndpoint.id.in_(wanted))
        )
        found = {row.id: row.account_id for row in rows}
    for i, action in enumerate(actions):
        for j, endpoint in enumerate(action.endpoints):
            field = f"actions[{i}].endpoints[{j}]"
            if endpoint not in found or (caller is not None and found[endpoint] != caller):
                raise ApiError(404, f"{field}: webhook endpoint {endpoint!r} not found", field,
                               [{"field": field, "message": "webhook endpoint not found"}], "WebhookNotFound")
            owner = found[endpoint]
            if owner is not None and owner != route_account:
                raise invalid(field, f"webhook endpoint {endpoint!r} belongs to another account")


async def check_account(session: AsyncSession, account: str) -> None:
    if await session.get(Account, account) is None:
        raise ApiError(404, "Account not found", "account", code="AccountNotFound")


def warnings(criteria: engine.Criteria) -> list[str]:
    if criteria.recipient is None and criteria.recipient_regex is None and not criteria.headers and not criteria.auth:
        return [CATCH_ALL_WARNING]
    return []


def stored_criteria(row: InboundRoute) -> engine.Criteria | None:
    try:
        return engine.parse_match(row.match)
    except engine.RouteError:
        return None


def route_view(row: InboundRoute) -> RouteView:
    criteria = stored_criteria(row)
    return RouteView(
        id=row.id,
        name=row.name,
        description=row.description,
        enabled=row.enabled,
        priority=row.priority,
        account=row.account_id,
        match=row.match,
        actions=row.actions,
        max_size=row.max_size,
        created=events.iso(row.created_at),
        updated=events.iso(row.updated_at),
        warnings=warnings(criteria) if criteria is not None else [],
    )


def visible(row: InboundRoute, caller: str | None) -> bool:
    return caller is None or row.account_id == caller


async def get_route(session: AsyncSession, route_id: str, caller: str | None, lock: bool = False) -> InboundRoute:
    row = await session.get(InboundRoute, route_id, with_for_update=lock)
    if row is None or not visible(row, caller):
        raise route_not_found(route_id)
    return row


async def list_routes(
    session: AsyncSession, account: str | None, page: int, page_size: int
) -> tuple[list[InboundRoute], int]:
    conditions = [InboundRoute.account_id == account] if account else []
    total = await session.scalar(select(func.count()).select_from(InboundRoute).where(*conditions)) or 0
    rows = await session.scalars(
        select(InboundRoute).where(*conditions)
        .order_by(InboundRoute.priority, InboundRoute.created_at, InboundRoute.id)
        .offset(page * page_size).limit(page_size)
    )
    return list(rows), total


# --- the dry run ---------------------------------------------------------------------------


def auth_results(verdicts: AuthVerdicts | None) -> AuthResults | None:
    if verdicts is None:
        return None
    return AuthResults(SpfResult(verdicts.spf.lower()), [DkimResult(v.lower()) for v in verdicts.dkim],
                       DmarcResult(verdicts.dmarc.lower()))


@dataclass
class DryRun:
    rcpt: str
    rcpt_reply: str | None
    tested: list[TestedRoute]
    notes: list[str]


def dry_run(table: engine.RouteTable, recipient: str, headers: dict[str, str],
            auth: AuthResults | None) -> DryRun:
    """What the MX door would do with this recipient and these headers (nothing is stored)."""
    matches = table.for_recipient(recipient)
    notes: list[str] = []
    if not matches:
        return DryRun("no route", "550 5.1.1 No such recipient here", [], notes)
    reject = engine.rejects_at_rcpt(matches)
    rcpt, reply = "accepted", None
    if reject is not None:
        rcpt, reply = "rejected", f"550 5.7.1 {reject.message or 'Recipient rejected'}"
    verdicts = engine.evaluate(matches, headers, auth)
    tested: list[TestedRoute] = []
    stopped = maybe_stopped = False
    for verdict in verdicts:
        route = verdict.match.route
        takes: bool | None
        if stopped:
            takes, reason = False, "an earlier route stopped the message"
        elif not verdict.headers:
            takes, reason = False, "its header criteria do not match"
        elif verdict.auth is False:
            takes, reason = False, "its authentication criteria do not match"
        elif verdict.auth is None:
            takes, reason = None, "depends on the authentication verdicts (none were given: unknown)"
        elif maybe_stopped:
            takes, reason = None, "matches, unless an earlier route with unknown verdicts stops the message"
        else:
            takes, reason = True, "matches"
        if route.stops:
            stopped = stopped or takes is True
            maybe_stopped = maybe_stopped or takes is None
        tested.append(TestedRoute(
            id=route.id, name=route.name, priority=route.priority, enabled=route.enabled,
            tag=verdict.match.tag, captures=verdict.match.captures, headers_match=verdict.headers,
            auth_match=verdict.auth, takes=takes, reason=reason, actions=[a.type for a in route.actions],
        ))
    if auth is None and any(v.auth is None for v in verdicts):
        notes.append("no authentication verdicts given: routes with auth criteria are marked unknown "
                     "(send \"auth\": {\"spf\", \"dkim\", \"dmarc\"} to test them)")
    if any(route.takes for route in tested) and rcpt == "accepted":
        notes.append("the message would be taken at DATA by the routes marked takes=true")
    return DryRun(rcpt, reply, tested, notes)


# --- received messages ---------------------------------------------------------------------


def auth_summary(stored: dict[str, Any]) -> dict[str, Any]:
    """{spf, dkim[], dmarc}: the verdicts only, whatever detail the stored payload has."""

    def verdict(value: Any) -> str | None:
        if isinstance(value, dict):
            result = value.get("result")
            return str(result) if result is not None else None
        return str(value) if value is not None else None

    dkim = stored.get("dkim") or []
    return {
        "spf": verdict(stored.get("spf")),
        "dkim": [verdict(d) for d in dkim] if isinstance(dkim, list) else [verdict(dkim)],
        "dmarc": verdict(stored.get("dmarc")),
    }


def message_summary(row: Any) -> MessageSummary:
    """From an ``InboundMessage`` or a row of its columns without ``raw``."""
    return MessageSummary(
        id=row.id,
        received_at=events.iso(row.received_at),
        mail_from=row.mail_from,
        rcpt_to=list(row.rcpt_to),
        subject=row.subject,
        message_id=row.message_id,
        size=row.size,
        held=row.held,
        automated=row.automated,
        deliveries=row.deliveries,
        auth=auth_summary(row.auth or {}),
    )


def parse_raw(raw: bytes) -> EmailMessage:
    return payload.parse(raw)


def _header(message: EmailMessage, name: str) -> str | None:
    try:
        value = message.get(name)
    except (ValueError, IndexError):  # a header the parser cannot make sense of
        return None
    return str(value) if value is not None else None


def _addresses(message: EmailMessage, name: str) -> list[dict[str, str]]:
    try:
        header = message.get(name)
        groups = getattr(header, "addresses", None)
    except (ValueError, IndexError):
        return []
    if not groups:
        return []
    return [{"name": a.display_name, "address": a.addr_spec} for a in groups]


def _text(message: EmailMessage, subtype: str) -> str | None:
    try:
        part = message.get_body(preferencelist=(subtype,))
        content = part.get_content() if part is not None else None
    except (LookupError, ValueError, AttributeError):
        return None
    return content[:MAX_SUMMARY_TEXT] if isinstance(content, str) else None


def parsed_summary(row: InboundMessage, base_url: str) -> dict[str, Any]:
    message = parse_raw(row.raw)
    found = []
    # The payload's own list, so ``n`` here, in the webhook body's urls and in
    # /attachments/{n} is always the same attachment.
    for n, part in enumerate(payload.attachment_parts(message)):
        data = part_bytes(part.part)
        found.append({
            "index": n,
            "filename": part.part.get_filename(),
            "contentType": part.part.get_content_type(),
            "size": len(data),
            "contentId": part.part.get("Content-ID"),
            "url": f"{base_url}/v1/inbound/messages/{row.id}/attachments/{n}",
        })
    from_ = _addresses(message, "From")
    return {
        "from": from_[0] if from_ else None,
        "to": _addresses(message, "To"),
        "cc": _addresses(message, "Cc"),
        "replyTo": _addresses(message, "Reply-To"),
        "subject": _header(message, "Subject"),
        "date": _header(message, "Date"),
        "messageId": _header(message, "Message-ID"),
        "inReplyTo": _header(message, "In-Reply-To"),
        "text": {"plain": _text(message, "plain"), "html": _text(message, "html")},
        "attachments": found,
    }


def attachment(row: InboundMessage, n: int) -> AttachmentData:
    """The n-th attachment (0-based, as ``payload.attachment_parts`` counts: the webhook body's urls)."""
    found = payload.attachment(row.raw, n)
    if found is None:
        count = len(payload.attachment_parts(parse_raw(row.raw)))
        raise ApiError(404, f"Attachment {n} not found (the message has {count})", "n",
                       code="AttachmentNotFound")
    return found


async def release_events(session: AsyncSession, row: InboundMessage) -> list[events.InboundMessage]:
    """The inboundMessage events the door held back: one per taken route (and payload form)
    with webhook actions, to the route's endpoints as they are now."""
    ids = [str(d.get("route")) for d in row.deliveries if d.get("route")]
    found = {r.id: r for r in await session.scalars(select(InboundRoute).where(InboundRoute.id.in_(ids)))}
    staged: list[events.InboundMessage] = []
    for delivery in row.deliveries:
        route = found.get(str(delivery.get("route")))
        if route is None:
            continue  # deleted since: nobody to tell
        try:
            actions = engine.parse_actions(route.actions)
        except engine.RouteError:
            continue
        by_payload: dict[str, list[str]] = {}
        for action in actions:
            if action.type == "webhook":
                by_payload.setdefault(action.payload, [])
                by_payload[action.payload] += [e for e in action.endpoints if e not in by_payload[action.payload]]
        for form, endpoints in by_payload.items():
            staged.append(events.InboundMessage(
                account=route.account_id,
                message=row.id,
                route=route.id,
                route_name=route.name,
                recipients=list(delivery.get("recipients") or row.rcpt_to),
                endpoints=endpoints,
                payload="raw" if form == "raw" else "json",
            ))
    return staged
