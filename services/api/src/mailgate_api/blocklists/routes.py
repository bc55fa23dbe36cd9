from __future__ import annotations

from litestar import Controller


class BlocklistController(Controller):
    tags = ["blocklists"]
