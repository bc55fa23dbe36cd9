"""The operator's hold on the submit queue (``PUT /v1/settings/queue/submit``).

The API stores ``{"paused": bool, "concurrency": int | null}`` in the setting
``queue:submit``.  While paused the sender claims nothing new (deliveries under
way finish); ``concurrency`` caps the messages this sender has in flight.  The
row is read at most every ``REFRESH`` seconds, never per message.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from prometheus_client import Gauge

from mailgate_common.db import Database

log = logging.getLogger(__name__)
PAUSED = Gauge("mailgate_sender_queue_paused", "1 while the operator has paused the submit queue")

SETTING_KEY = "queue:submit"
REFRESH = 2.0
_READ = "SELECT value FROM settings WHERE key = $1"


@dataclass(frozen=True, slots=True)
class QueueState:
    paused: bool = False
    concurrency: int | None = None

    @classmethod
    def from_value(cls, value: object) -> QueueState:
        if not isinstance(value, dict):
            return cls()
        concurrency = value.get("concurrency")
        valid = isinstance(concurrency, int) and not isinstance(concurrency, bool) and concurrency > 0
        return cls(bool(value.get("paused")), concurrency if valid else None)


class QueueControl:
    def __init__(self, db: Database, refresh: float = REFRESH) -> None:
        self._db = db
        self.refresh = refresh
        self._state = QueueState()
        self._next_read = 0.0

    async def state(self) -> QueueState:
        """The queue's state, as last read (a failed read keeps the last one)."""
        now = time.monotonic()
        if now < self._next_read:
            return self._state
        self._next_read = now + self.refresh
        try:
            async with self._db.statement_connection() as conn:
                value = await conn.fetchval(_READ, SETTING_KEY)
        except Exception as exc:
            log.warning("reading %s failed, keeping %s: %r", SETTING_KEY, self._state, exc)
            return self._state
        state = QueueState.from_value(value)
        if state.paused != self._state.paused:
            log.warning("submit queue %s", "paused: nothing new is sent" if state.paused else "resumed")
        self._state = state
        PAUSED.set(int(state.paused))
        return state
