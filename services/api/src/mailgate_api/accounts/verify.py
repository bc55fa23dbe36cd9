"""EmailEngine's ``POST /v1/verifyAccount``: imap-sync tries the settings, nothing is saved.

The api never opens IMAP itself; the settings travel to imap-sync sealed with
the shared secret, and its answer is EmailEngine's body as it is.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import msgspec
from litestar import Controller, post

from mailgate_api.accounts.schemas import ImapSettings, SmtpSettings
from mailgate_api.accounts.service import check_public_hosts
from mailgate_api.auth.policy import is_admin
from mailgate_api.deps import ApiRequest, Resources
from mailgate_api.errors import ApiError, invalid
from mailgate_common import events


class VerifyAccount(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    mailboxes: bool = False
    imap: ImapSettings | Literal[False] | None = None
    smtp: SmtpSettings | Literal[False] | None = None
    smtp_ehlo_name: str | None = msgspec.field(name="smtpEhloName", default=None)
    proxy: Any = msgspec.UNSET


def _settings(server: ImapSettings | SmtpSettings | Literal[False] | None, name: str) -> dict[str, Any] | None:
    if not server:
        return None
    if server.use_auth_server is not msgspec.UNSET:
        raise invalid(f"{name}.useAuthServer", "not supported by mailgate")
    if server.auth and server.auth.access_token:
        raise invalid(f"{name}.auth.accessToken", "not supported by mailgate: OAuth2 logins are not supported yet")
    found: dict[str, Any] = msgspec.to_builtins(server)
    return found


class VerifyController(Controller):
    tags = ["Account"]

    @post("/v1/verifyAccount", status_code=200, summary="Test IMAP and SMTP settings without saving them")
    async def verify(self, data: VerifyAccount, res: Resources, request: ApiRequest) -> dict[str, Any]:
        if data.proxy is not msgspec.UNSET and data.proxy:
            raise invalid("proxy", "not supported by mailgate: outbound proxies are not supported")
        imap, smtp = _settings(data.imap, "imap"), _settings(data.smtp, "smtp")
        if imap is None and smtp is None:
            raise invalid("imap", "give imap or smtp settings to verify")
        public_only = await check_public_hosts(data.smtp or None, data.imap or None, res.settings,
                                               not is_admin(request.scope))
        sealed = res.sealer.seal({"imap": imap, "smtp": smtp, "mailboxes": data.mailboxes,
                                  "smtpEhloName": data.smtp_ehlo_name, "publicOnly": public_only})
        command = events.ImapCommand(account="", op="verify", args={"sealed": sealed.hex()})
        # Connecting, TLS and login on both sides: give it the time a slow server needs.
        wait = res.settings.imap_timeout * 5 + 5
        try:
            reply = await res.bus.request(command, wait)
        except TimeoutError as exc:
            raise ApiError(504, "imap-sync did not answer in time", code="Timeout") from exc
        body = json.loads(reply.body)
        if reply.status != 200:
            raise ApiError(reply.status, str(body.get("error", "verification failed")),
                           code=body.get("code"))
        if not isinstance(body, dict):
            raise ApiError(502, "unexpected answer from imap-sync")
        return body
