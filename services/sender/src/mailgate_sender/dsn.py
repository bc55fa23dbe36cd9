"""Delivery status notification parameters (RFC 3461) from a message's ``dsn`` option.

EmailEngine's submit field ``dsn {id, return, notify, recipient}`` is what
nodemailer turns into ENVID/RET on MAIL FROM and NOTIFY/ORCPT on RCPT TO.  They
are only sent to a server that offers DSN; elsewhere the message goes without.
Pure logic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_RET = {"headers": b"HDRS", "hdrs": b"HDRS", "full": b"FULL"}
_NOTIFY = ("success", "failure", "delay", "never")


def xtext(value: str) -> bytes:
    """RFC 3461 4: printable ASCII except "+" and "=" as is, every other byte as "+XX"."""
    out = bytearray()
    for byte in value.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (0x2B, 0x3D):
            out.append(byte)
        else:
            out += b"+%02X" % byte
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Dsn:
    envelope_id: str | None = None
    ret: bytes | None = None  # HDRS | FULL
    notify: tuple[str, ...] = ()  # upper case: SUCCESS, FAILURE, DELAY or NEVER alone
    recipient: str | None = None  # ORCPT, as nodemailer sends EmailEngine's ``dsn.recipient``

    @classmethod
    def from_option(cls, option: Any) -> Dsn | None:
        """The stored ``options["dsn"]``; None when absent or asking for nothing."""
        if not isinstance(option, dict):
            return None
        notify_option = option.get("notify") or ()
        if isinstance(notify_option, str):
            notify_option = (notify_option,)
        notify = tuple(dict.fromkeys(str(n).lower() for n in notify_option if str(n).lower() in _NOTIFY))
        if "never" in notify:
            notify = ("never",)  # RFC 3461 4.1: NEVER excludes the others
        ret = _RET.get(str(option.get("return") or "").lower())
        envelope_id = option.get("id")
        recipient = option.get("recipient")
        dsn = cls(str(envelope_id) if envelope_id else None, ret, tuple(n.upper() for n in notify),
                  str(recipient) if recipient else None)
        return dsn if dsn != cls() else None

    def mail_options(self) -> list[bytes]:
        options: list[bytes] = []
        if self.ret:
            options.append(b"RET=" + self.ret)
        if self.envelope_id:
            options.append(b"ENVID=" + xtext(self.envelope_id))
        return options

    def rcpt_options(self) -> list[bytes]:
        options: list[bytes] = []
        if self.notify:
            options.append(b"NOTIFY=" + ",".join(self.notify).encode())
        if self.recipient:
            options.append(b"ORCPT=rfc822;" + xtext(self.recipient))
        return options
