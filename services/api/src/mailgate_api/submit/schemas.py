from __future__ import annotations

import msgspec


class SubmitResponse(msgspec.Struct, rename="camel"):
    response: str
    message_id: str
    send_at: str
    queue_id: str
