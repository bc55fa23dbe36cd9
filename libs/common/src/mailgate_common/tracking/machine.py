"""Tells opens and clicks no person made: flagged, never dropped.

Pure: the request's facts in, a :class:`Verdict` out.  ``machine`` true means
no person was behind the fetch (webhook endpoints with ``excludeMachine`` do
not get it); ``reason`` may also be set on a fetch that stays ``machine``
false (``image_proxy``: a mailbox provider's proxy fetched the image, usually
because the person opened the message, the address and user agent are the
proxy's).

Reasons, checked in this order:

* ``head_request``: a HEAD (a link checker); the routes answer it and count nothing.
* ``apple_mpp``: Apple Mail Privacy Protection fetches every image of a
  message when it reaches the device, opened or not, from Apple's own network
  17.0.0.0/8 (certain) or with the bare user agent ``Mozilla/5.0`` that its
  proxy sends (likely: almost no browser sends it).
* ``scanner_network``: a click from a mail security gateway that follows every
  link of every message (Microsoft Defender Safe Links, Proofpoint, Mimecast,
  Barracuda): see :data:`SCANNER_NETWORKS`.  Clicks only: those networks also
  serve people's image fetches through webmail proxies.
* ``prefetch_timing``: an open or click at most ``prefetch_seconds`` after the
  message was sent: too soon for a person, the receiving side's scanners do it.
* ``image_proxy``: an open through Google's or Yahoo's image proxy (user agent)
  or from a Microsoft mail network (Outlook.com / Microsoft 365 fetch images
  through their servers): flagged, ``machine`` stays false.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Kind = Literal["open", "click"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

APPLE_NETWORKS: tuple[Network, ...] = (ipaddress.ip_network("17.0.0.0/8"),)
APPLE_MPP_USER_AGENT = "Mozilla/5.0"

# (network, operator, certainty): the published delivery/scanning ranges of the
# big security gateways.  "high": the operator publishes the range as its own
# mail-processing network; "medium": a shared range of the operator where link
# scanning is known to run.  Kept small on purpose: a false "machine" hides a
# person's click from endpoints that exclude machine events.
SCANNER_NETWORKS: tuple[tuple[Network, str, str], ...] = tuple(
    (ipaddress.ip_network(cidr), operator, certainty) for cidr, operator, certainty in (
        ("40.92.0.0/15", "Microsoft Exchange Online Protection (Safe Links)", "high"),
        ("40.107.0.0/16", "Microsoft Exchange Online Protection (Safe Links)", "high"),
        ("52.100.0.0/14", "Microsoft Exchange Online Protection (Safe Links)", "high"),
        ("104.47.0.0/17", "Microsoft Exchange Online Protection (Safe Links)", "high"),
        ("148.163.128.0/19", "Proofpoint (URL Defense)", "high"),
        ("67.231.144.0/20", "Proofpoint (URL Defense)", "medium"),
        ("205.220.160.0/19", "Proofpoint (URL Defense)", "medium"),
        ("205.139.110.0/24", "Mimecast (URL Protect)", "high"),
        ("207.211.30.0/24", "Mimecast (URL Protect)", "high"),
        ("91.220.42.0/24", "Mimecast (URL Protect)", "high"),
        ("195.130.217.0/24", "Mimecast (URL Protect)", "high"),
        ("185.58.84.0/22", "Mimecast (URL Protect)", "medium"),
        ("64.235.144.0/20", "Barracuda Email Security (Link Protection)", "high"),
        ("209.222.80.0/21", "Barracuda Email Security (Link Protection)", "high"),
    )
)

# Image proxies that fetch when the person opens the message (so: real opens, hidden client).
IMAGE_PROXY_AGENTS = ("GoogleImageProxy", "YahooMailProxy")
MICROSOFT_MAIL_NETWORKS = tuple(net for net, operator, _ in SCANNER_NETWORKS if operator.startswith("Microsoft"))


@dataclass(frozen=True, slots=True)
class Verdict:
    machine: bool = False
    reason: str | None = None


HUMAN = Verdict()


def parse_address(text: str | None) -> Address | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(address: Address | None, networks: tuple[Network, ...]) -> bool:
    return address is not None and any(address in net for net in networks)


def scanner(address: Address | None) -> str | None:
    """The operator of the scanner network ``address`` is in, if any."""
    if address is None:
        return None
    return next((operator for net, operator, _ in SCANNER_NETWORKS if address in net), None)


def classify(
    kind: Kind,
    *,
    address: str | None,
    user_agent: str | None,
    method: str = "GET",
    sent_at: datetime | None = None,
    now: datetime | None = None,
    prefetch_seconds: float = 0.0,
) -> Verdict:
    """The verdict on one fetch of the pixel (``open``) or of a click link (``click``)."""
    if method.upper() == "HEAD":
        return Verdict(True, "head_request")
    ip = parse_address(address)
    agent = (user_agent or "").strip()
    if _within(ip, APPLE_NETWORKS) or (kind == "open" and agent == APPLE_MPP_USER_AGENT):
        return Verdict(True, "apple_mpp")
    if kind == "click" and scanner(ip) is not None:
        return Verdict(True, "scanner_network")
    if sent_at is not None and now is not None and prefetch_seconds > 0:
        elapsed = (now - sent_at).total_seconds()
        if elapsed <= prefetch_seconds:
            return Verdict(True, "prefetch_timing")
    if kind == "open" and (any(proxy in agent for proxy in IMAGE_PROXY_AGENTS)
                           or _within(ip, MICROSOFT_MAIL_NETWORKS)):
        return Verdict(False, "image_proxy")
    return HUMAN


def trusted_networks(spec: str | None) -> tuple[Network, ...]:
    """MAILGATE_TRUSTED_PROXIES: comma-separated addresses or CIDRs (ValueError if one is not)."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False)
                 for part in (spec or "").split(",") if part.strip())


def client_address(peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str | None:
    """The client: the socket peer, or, when the peer is a trusted proxy, the
    right-most X-Forwarded-For entry that is not itself a trusted proxy (the
    left-most entries are whatever the client claimed)."""
    if not trusted or not forwarded_for or not _within(parse_address(peer), trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            return peer  # a garbled header: trust nothing in it
        if not _within(address, trusted):
            return str(address)
    return str(parse_address(hops[0])) if hops else peer
