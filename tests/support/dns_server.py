"""A real DNS server on loopback (UDP and TCP) answering from zones a test writes.

The MX door's SPF, DKIM and DMARC lookups go to it (MAILGATE_DNS_SERVERS), so
tests publish a sender's SPF record, DKIM key and DMARC policy with ``add`` and
take them away with ``remove``.  A name with no record of any type is NXDOMAIN.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

from dnslib import AAAA, MX, PTR, QTYPE, RCODE, RR, TXT, A, DNSLabel
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from tests.support.stack import free_port

_RDATA: dict[str, Any] = {"A": A, "AAAA": AAAA, "MX": MX, "PTR": PTR}


def _txt(value: str) -> TXT:
    # A TXT string holds 255 octets; longer values (DKIM keys) are split, as zone files do.
    data = value.encode()
    return TXT([data[i:i + 255] for i in range(0, len(data), 255)] or [b""])


class _Zones(BaseResolver):  # type: ignore[misc]
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.lock = threading.Lock()

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        qname = request.q.qname
        name, qtype = str(qname).rstrip(".").lower(), QTYPE[request.q.qtype]
        with self.lock:
            values = list(self.records.get((name, qtype), []))
            known = any(key[0] == name and found for key, found in self.records.items())
        for value in values:
            rdata = _txt(value) if qtype == "TXT" else _RDATA[qtype](value)
            reply.add_answer(RR(qname, request.q.qtype, rdata=rdata, ttl=5))
        if not values and not known:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class DnsServer:
    def __init__(self) -> None:
        self.zones = _Zones()
        self.port = free_port()
        quiet = DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data")
        self._servers = [DNSServer(self.zones, address="127.0.0.1", port=self.port, tcp=tcp, logger=quiet)
                         for tcp in (False, True)]

    @property
    def address(self) -> str:
        """The MAILGATE_DNS_SERVERS value that points at this server."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        for server in self._servers:
            server.start_thread()

    def stop(self) -> None:
        for server in self._servers:
            server.stop()

    def add(self, name: str, rtype: str, value: str) -> None:
        """Publish a record, e.g. ``add("example.org", "TXT", "v=spf1 ip4:127.0.0.1 -all")``."""
        with self.zones.lock:
            self.zones.records[(str(DNSLabel(name)).rstrip(".").lower(), rtype.upper())].append(value)

    def remove(self, name: str, rtype: str | None = None) -> None:
        """Take a name's records (of one type, or all) away."""
        key = str(DNSLabel(name)).rstrip(".").lower()
        with self.zones.lock:
            for found in [k for k in self.zones.records if k[0] == key and (rtype is None or k[1] == rtype.upper())]:
                del self.zones.records[found]
