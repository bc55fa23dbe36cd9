"""Open and click tracking, added to the bytes that go out, never to the stored body.

A message is tracked when its submit said so (outbox options ``trackOpens`` /
``trackClicks``) or, where it did not, when the runtime settings of the same
names say so at send time.  The settings (with ``serviceUrl``, a candidate
for the links' base URL) are read at most every ``SETTINGS_TTL`` seconds, one
read shared by all deliveries: never a database round trip per message.  A
message whose submit set both flags false never looks at them.

The Sent-folder copy is the stored, untracked body (imap-sync appends what the
outbox holds): the sender opening its own Sent folder then counts no open.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from mailgate_common import service_settings
from mailgate_common.db import Database
from mailgate_common.settings import Settings
from mailgate_common.tracking.rewrite import Tracking, add_trackers
from mailgate_common.tracking.tokens import base_url, signer_for
from mailgate_sender.claims import Claim

log = logging.getLogger(__name__)

SETTINGS_TTL = 2.0
SETTING_KEYS = ["trackOpens", "trackClicks", "serviceUrl"]
# Larger bodies are rewritten off the event loop (other exchanges keep going meanwhile).
IN_THREAD = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Defaults:
    opens: bool = False
    clicks: bool = False
    service_url: str | None = None


class Trackers:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.signer = signer_for(settings)
        # The API's own address: where the links point when nothing else is configured.
        self.fallback = f"http://{settings.api_host}:{settings.api_port}"
        self._defaults: Defaults | None = None
        self._read_at = 0.0
        self._reading: asyncio.Task[None] | None = None

    async def defaults(self) -> Defaults:
        """The runtime settings, at most ``SETTINGS_TTL`` old: one read at a time,
        shared by every delivery that needs it meanwhile."""
        if self._defaults is None or time.monotonic() - self._read_at > SETTINGS_TTL:
            if self._reading is None:
                self._reading = asyncio.create_task(self._read())
                self._reading.add_done_callback(lambda _: setattr(self, "_reading", None))
            await asyncio.shield(self._reading)
        return self._defaults or Defaults()

    async def _read(self) -> None:
        try:
            async with self.db.sessions() as session:
                values = await service_settings.read(session, SETTING_KEYS)
        except Exception as exc:  # the database away: the last known values stay
            log.warning("cannot read the tracking settings: %r", exc)
            self._read_at = time.monotonic()
            return
        url = values.get("serviceUrl")
        self._defaults = Defaults(opens=values.get("trackOpens") is True, clicks=values.get("trackClicks") is True,
                                  service_url=url if isinstance(url, str) and url else None)
        self._read_at = time.monotonic()

    async def tracking(self, claim: Claim) -> Tracking | None:
        """What to add to this message, or None when it is not tracked."""
        options = claim.options or {}
        opens, clicks = options.get("trackOpens"), options.get("trackClicks")
        if opens is False and clicks is False:
            return None
        defaults = await self.defaults()
        opens = opens if isinstance(opens, bool) else defaults.opens
        clicks = clicks if isinstance(clicks, bool) else defaults.clicks
        if not (opens or clicks):
            return None
        per_message = options.get("baseUrl")
        base = base_url(per_message if isinstance(per_message, str) else None, self.settings.tracking_base_url,
                        defaults.service_url, self.settings.service_url, fallback=self.fallback)
        return Tracking(opens=opens, clicks=clicks, base_url=base, signer=self.signer, account=claim.account_id,
                        queue_id=claim.queue_id, message_id=claim.message_id,
                        recipient=claim.envelope_to[0] if len(claim.envelope_to) == 1 else None)

    async def add(self, claim: Claim, raw: bytes) -> bytes:
        """``raw`` as it goes out: tracked when the message asks for it, else the very same bytes."""
        tracking = await self.tracking(claim)
        if tracking is None:
            return raw
        try:
            if len(raw) > IN_THREAD:
                return await asyncio.to_thread(add_trackers, raw, tracking)
            return add_trackers(raw, tracking)
        except Exception as exc:  # a message we cannot rewrite still goes out, untracked
            log.warning("%s: not tracked, its html could not be rewritten: %r", claim.queue_id, exc)
            return raw
