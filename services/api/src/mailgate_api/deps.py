"""Process-wide resources the routes use, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.datastructures import State

from mailgate_common.bus import Bus
from mailgate_common.crypto import Sealer
from mailgate_common.db import Database
from mailgate_common.event_relay import EventRelay
from mailgate_common.outbox import Outbox
from mailgate_common.settings import Settings

# What a handler asks for to see who is calling (``request.scope["auth"]``).
ApiRequest = Request[Any, Any, State]


@dataclass
class Resources:
    settings: Settings
    db: Database
    bus: Bus
    relay: EventRelay
    outbox: Outbox
    sealer: Sealer
