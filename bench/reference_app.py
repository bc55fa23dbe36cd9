"""The framework ceiling for REST submit: the same server stack (uvicorn + litestar +
msgspec decoding of the same body) answering without storing anything."""

from __future__ import annotations

import os

import uvicorn
from litestar import Litestar, post

from mailgate_common.submission import SubmitRequest


@post("/v1/account/{account:str}/submit", status_code=200)
async def submit(account: str, data: SubmitRequest) -> dict[str, str]:
    return {"response": "Queued for delivery", "messageId": "<x@y>", "sendAt": "", "queueId": "0"}


app = Litestar([submit], request_max_body_size=50 * 1024 * 1024)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), loop="uvloop", http="httptools",
                log_level="warning", access_log=False)
