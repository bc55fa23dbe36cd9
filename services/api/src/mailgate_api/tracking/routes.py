from __future__ import annotations

from litestar import Controller


class TrackingController(Controller):
    tags = ["tracking"]
