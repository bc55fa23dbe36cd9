"""Outbound local addresses (EmailEngine's ``localAddresses``).

``MAILGATE_LOCAL_ADDRESSES="ip1|ehlo-name1,ip2|ehlo-name2"``: each new SMTP and
IMAP connection binds to one of these addresses, taken in turn, and the SMTP
client greets with that address's EHLO name.  Unset: the kernel picks the
source address and the EHLO name is the configured default.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LocalAddress:
    ip: str
    ehlo_name: str | None = None


def parse(spec: str | None) -> tuple[LocalAddress, ...]:
    """``"ip1|name1,ip2"`` as LocalAddress values; raises ValueError naming a bad entry."""
    found: list[LocalAddress] = []
    for entry in (spec or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        ip, _, name = entry.partition("|")
        try:
            ipaddress.ip_address(ip.strip())
        except ValueError:
            raise ValueError(f"MAILGATE_LOCAL_ADDRESSES: {entry!r} does not start with an IP address") from None
        found.append(LocalAddress(ip.strip(), name.strip() or None))
    return tuple(found)


class LocalAddresses:
    """Hands out the configured addresses in turn (None when none are configured)."""

    def __init__(self, addresses: tuple[LocalAddress, ...]) -> None:
        self.addresses = addresses
        self._turn: Iterator[LocalAddress] | None = itertools.cycle(addresses) if addresses else None

    @classmethod
    def from_spec(cls, spec: str | None) -> LocalAddresses:
        return cls(parse(spec))

    def next(self) -> LocalAddress | None:
        return next(self._turn) if self._turn is not None else None
