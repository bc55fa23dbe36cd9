from __future__ import annotations

from litestar import Controller


class UnsubscribeController(Controller):
    tags = ["unsubscribe"]
