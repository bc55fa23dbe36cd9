"""The reference SMTP server: aiosmtpd accepting and dropping every message."""

from __future__ import annotations

import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class Drop:
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 2.0.0 Ok: dropped"


if __name__ == "__main__":
    controller = Controller(Drop(), hostname="127.0.0.1", port=int(sys.argv[1]), server_hostname="bare.sink")
    controller.start()
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()
