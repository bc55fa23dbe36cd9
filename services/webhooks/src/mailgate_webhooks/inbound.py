"""``inboundMessage`` deliveries: bodies rendered from the stored messages, for
the endpoints each route names.

The event names its message (``inbound_messages.id``) and does not carry it:
the rows of a whole batch are read in one statement, and their raw bytes in
groups of at most ``RAW_GROUP_BYTES`` (a batch of large messages must not hold
them all at once).  Rendering parses MIME, which is CPU work, so it runs in a
worker thread while this replica's POSTs go on.  A message no longer stored
(retention removed it before its event came through) makes no delivery and is
logged.

The body is rendered once, when the delivery is stored: retries and replays
send the same bytes, as for every other event.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from mailgate_common import events
from mailgate_common.db import Database
from mailgate_common.inbound.payload import Received, RouteRef
from mailgate_webhooks import store
from mailgate_webhooks.payload import render_inbound
from mailgate_webhooks.plan import Wanted

log = logging.getLogger(__name__)

RAW_GROUP_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Rendered:
    bodies: dict[int, bytes]  # batch index -> stored payload
    endpoints: dict[str, store.EndpointRow]  # the enabled endpoints the events name


def api_base_url(api_host: str, api_port: int) -> str:
    """The API's own address, the links' last resort (a wildcard bind is reached on loopback)."""
    host = api_host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"http://{host}:{api_port}"
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return f"http://[{address}]:{api_port}" if address.version == 6 else f"http://{address}:{api_port}"


def route_ref(event: events.InboundMessage, deliveries: list[dict[str, object]]) -> RouteRef:
    """The route's match as the door stored it (``inbound_messages.deliveries``): tag and captures."""
    entry = next((d for d in deliveries if isinstance(d, dict) and d.get("route") == event.route), {})
    tag = entry.get("tag")
    captures = entry.get("captures")
    return RouteRef(
        event.route, event.route_name, list(event.recipients),
        tag=tag if isinstance(tag, str) else None,
        captures={str(k): str(v) for k, v in captures.items()} if isinstance(captures, dict) else {},
    )


def received(row: store.InboundRow, raw: bytes) -> Received:
    return Received(
        id=row.id, raw=raw, received_at=row.received_at, mail_from=row.mail_from, rcpt_to=row.rcpt_to,
        remote_ip=row.remote_ip, helo=row.helo, tls=row.tls, auth=row.auth, spam=row.spam,
        automated=row.automated,
    )


def _groups(rows: Sequence[store.InboundRow], limit: int) -> Iterator[list[store.InboundRow]]:
    group: list[store.InboundRow] = []
    size = 0
    for row in rows:
        if group and size + row.raw_size > limit:
            yield group
            group, size = [], 0
        group.append(row)
        size += row.raw_size
    if group:
        yield group


class InboundRenderer:
    def __init__(self, *, service_url: str | None, api_url: str, inline_max: int) -> None:
        self.service_url = service_url  # MAILGATE_SERVICE_URL
        self.api_url = api_url
        self.inline_max = inline_max

    async def render(self, db: Database, wanted: Sequence[Wanted]) -> Rendered:
        """Bodies for the routed events of a batch, and the endpoints they name."""
        routed = [(w, w.event) for w in wanted if isinstance(w.event, events.InboundMessage)]
        if not routed:
            return Rendered({}, {})
        message_ids = sorted({event.message for _, event in routed})
        endpoint_ids = sorted({e for _, event in routed for e in event.endpoints})
        async with store.connection(db) as conn:
            rows = await store.inbound_messages(conn, message_ids)
            endpoints = await store.endpoints_by_id(conn, endpoint_ids)
            setting = await store.service_url_setting(conn)
        service_url = setting or self.service_url
        base_url = service_url or self.api_url
        for missing in sorted(set(message_ids) - set(rows)):
            log.warning("inboundMessage: message %s is no longer stored; no delivery", missing)
        bodies: dict[int, bytes] = {}
        for group in _groups([rows[i] for i in message_ids if i in rows], RAW_GROUP_BYTES):
            # The connection goes back to the pool before the parsing starts.
            async with store.connection(db) as conn:
                raws = await store.inbound_raws(conn, [row.id for row in group])
            items = [(w, event, row) for row in group for w, event in routed if event.message == row.id]
            bodies.update(await asyncio.to_thread(self._render_group, items, raws, service_url, base_url))
        return Rendered(bodies, endpoints)

    def _render_group(self, items: list[tuple[Wanted, events.InboundMessage, store.InboundRow]],
                      raws: dict[str, bytes], service_url: str | None, base_url: str) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        for item, event, row in items:
            raw = raws.get(row.id)
            if raw is None:
                continue  # removed between the two statements
            out[item.index] = render_inbound(event, received(row, raw), route_ref(event, row.deliveries),
                                             service_url=service_url, base_url=base_url,
                                             inline_max=self.inline_max)
        return out
