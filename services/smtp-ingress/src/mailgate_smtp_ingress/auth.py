"""Who may submit as an account over SMTP, and how guessing is slowed down.

The password is either an API token allowed the ``smtp`` scope, or the shared
SMTP password stored in the runtime setting ``smtpServerPassword`` -
EmailEngine's scheme, so clients configured for EmailEngine keep working.

* A token bound to one account names the account itself: any username is
  accepted, including an empty one (AUTH PLAIN ``\\0\\0<token>``, enKod's
  clients) and ``apikey`` (OpenSend's), unless the username is the id of
  another account - refused rather than sending as someone else than named.
* An unbound (admin) token, and the shared password, need the account id as
  username: they do not say which account is meant.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import OrderedDict
from dataclasses import dataclass

from mailgate_common import service_settings, tokens
from mailgate_common.db import Database
from mailgate_common.db.models import Account
from mailgate_common.passwords import verify_password

SERVER_PASSWORD_SETTING = "smtpServerPassword"


@dataclass(frozen=True)
class Identity:
    """What a successful AUTH leaves on the session (``session.auth_data``)."""

    account: str
    via: str  # "token" | "password"; for logs, never the secret itself

    @property
    def login(self) -> str:
        return self.account


class Authenticator:
    def __init__(self, db: Database, admin_token: str | None) -> None:
        self._db = db
        self._admin_token = admin_token

    async def check(self, username: bytes, password: bytes) -> Identity | None:
        """The identity for these credentials, or None.  DB errors propagate (-> 454)."""
        try:
            account = username.decode("utf-8")
            secret = password.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not secret:
            return None
        info = await tokens.verify(self._db, secret, self._admin_token)
        if info is not None and info.account is not None:
            if not info.allows("smtp") or (account not in ("", info.account) and await self._exists(account)):
                return None
            return Identity(info.account, "token")
        if not account or not await self._exists(account):
            return None
        if info is not None:
            return Identity(account, "token") if info.allows("smtp", account) else None
        async with self._db.sessions() as session:
            stored = (await service_settings.read(session, [SERVER_PASSWORD_SETTING]))[
                SERVER_PASSWORD_SETTING
            ]
        if isinstance(stored, str) and stored and await asyncio.to_thread(verify_password, stored, secret):
            return Identity(account, "password")
        return None

    async def _exists(self, account: str) -> bool:
        async with self._db.sessions() as session:
            return await session.get(Account, account) is not None


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class FailureThrottle:
    """Per-client-address delay before each AUTH attempt, doubling per recent failure.

    In memory, per process: enough to make online guessing slow (0.5 s, 1 s, 2 s ...
    up to ``cap``) without a shared store.  A success from the address clears it;
    failures are forgotten ``window`` seconds after the last one.
    """

    def __init__(self, base: float = 0.5, cap: float = 30.0, window: float = 900.0,
                 max_entries: int = 10_000) -> None:
        self.base = base
        self.cap = cap
        self.window = window
        self.max_entries = max_entries
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def delay(self, address: str) -> float:
        entry = self._failures.get(address)
        if entry is None:
            return 0.0
        count, last = entry
        if time.monotonic() - last > self.window:
            del self._failures[address]
            return 0.0
        return float(min(self.cap, self.base * 2 ** (count - 1)))

    def failed(self, address: str) -> None:
        count = self._failures.pop(address, (0, 0.0))[0]
        self._failures[address] = (count + 1, time.monotonic())
        while len(self._failures) > self.max_entries:
            # Bounded memory under a spray from many addresses: forget the oldest.
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)
