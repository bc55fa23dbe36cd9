"""``verify`` (EmailEngine's ``POST /v1/verifyAccount``): try IMAP and SMTP
settings without saving them, and say for each whether it worked.

The settings arrive sealed with the shared secret (``args["sealed"]``), so the
passwords never cross the broker in clear.  Each side answers EmailEngine's
``{success, error?, code?, responseText?}``.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiosmtplib

from mailgate_common import urls
from mailgate_common.crypto import CredentialError, Sealer
from mailgate_imap_sync.client import AuthError, ConnectError, ImapError, RefusedHost, connect
from mailgate_imap_sync.commands import Commands
from mailgate_imap_sync.operations import HANDLERS, OperationError, Result

SMTP_STEPS = 4  # connect, EHLO, STARTTLS, AUTH: the whole within this many timeouts


def _failure(error: str, code: str, response: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"success": False, "error": error, "code": code}
    if response:
        found["responseText"] = response
    return found


async def _imap(settings: dict[str, Any], io_timeout: float, max_bytes: int, public_only: bool,
                mailboxes: bool) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    try:
        connection = await connect(settings, io_timeout, max_bytes, public_only=public_only)
    except AuthError as exc:
        return _failure(f"Authentication failed: {exc}", "AUTHENTICATIONFAILED", str(exc)), None
    except RefusedHost as exc:
        return _failure(str(exc), "EPRIVATEHOST"), None
    except ConnectError as exc:
        return _failure(str(exc), "ETIMEDOUT" if "no answer" in str(exc) else "ECONNECTION"), None
    except ImapError as exc:
        return _failure(str(exc), "EPROTOCOL"), None
    try:
        listed = None
        if mailboxes:
            folders = await connection.list_folders()
            listed = [{"path": f.path, "delimiter": f.delimiter,
                       "name": f.path.rsplit(f.delimiter, 1)[-1] if f.delimiter else f.path,
                       **({"specialUse": f.special_use} if f.special_use else {})} for f in folders]
        return {"success": True}, listed
    except ImapError as exc:
        return {"success": True}, [{"error": str(exc)}] if mailboxes else None
    finally:
        await connection.close()


def _smtp_tls(settings: dict[str, Any]) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if (settings.get("tls") or {}).get("rejectUnauthorized") is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def _smtp(settings: dict[str, Any], io_timeout: float, public_only: bool,
                ehlo_name: str | None) -> dict[str, Any]:
    host, port = str(settings["host"]), int(settings["port"])
    if public_only:
        # A gate only: aiosmtplib verifies TLS against the name it connects to.
        try:
            await urls.check_public_host(host)
        except urls.UnsafeUrl as exc:
            return _failure(str(exc), "EPRIVATEHOST")
    secure = bool(settings.get("secure"))
    auth = settings.get("auth") or {}
    client = aiosmtplib.SMTP(hostname=host, port=port, use_tls=secure, timeout=io_timeout,
                             tls_context=_smtp_tls(settings), local_hostname=ehlo_name,
                             start_tls=False if (settings.get("tls") or {}).get("disableStartTls") else None)
    try:
        async with asyncio.timeout(SMTP_STEPS * io_timeout):
            await client.connect()
            if auth.get("user"):
                await client.login(str(auth["user"]), str(auth.get("pass") or ""))
            elif settings.get("forceAuth"):
                return _failure("forceAuth is set but no username was given", "EAUTH")
    except aiosmtplib.SMTPAuthenticationError as exc:
        return _failure(f"Invalid login: {exc.code} {exc.message}", "EAUTH", f"{exc.code} {exc.message}")
    except aiosmtplib.SMTPException as exc:
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            code = "EAUTH" if "auth" in exc.message.lower() else "EPROTOCOL"
            return _failure(f"{exc.code} {exc.message}", code, f"{exc.code} {exc.message}")
        return _failure(str(exc) or type(exc).__name__, "ECONNECTION")
    except TimeoutError:
        return _failure(f"no answer from {host}:{port} within {io_timeout:.0f} s", "ETIMEDOUT")
    except (OSError, ssl.SSLError) as exc:
        return _failure(f"{type(exc).__name__}: {exc}", "ECONNECTION")
    finally:
        if client.is_connected:
            try:
                await asyncio.wait_for(client.quit(), 2)
            except (aiosmtplib.SMTPException, TimeoutError, OSError):
                client.close()
    return {"success": True}


async def verify(commands: Commands, _account: str, args: dict[str, Any], _raw: bytes | None) -> Result:
    settings = commands.settings
    try:
        sealed = Sealer.from_settings(settings.secret, settings.secret_previous).open(
            bytes.fromhex(str(args.get("sealed", ""))))
    except (CredentialError, ValueError) as exc:
        raise OperationError(400, "InvalidRequest", f"cannot open the settings to verify: {exc}") from None
    public_only = bool(sealed.get("publicOnly"))
    timeout = settings.imap_timeout
    answer: dict[str, Any] = {}
    jobs: dict[str, Any] = {}
    if sealed.get("imap"):
        jobs["imap"] = _imap(sealed["imap"], timeout, settings.imap_max_response_bytes, public_only,
                             bool(sealed.get("mailboxes")))
    if sealed.get("smtp"):
        jobs["smtp"] = _smtp(sealed["smtp"], timeout, public_only, sealed.get("smtpEhloName"))
    results = await asyncio.gather(*jobs.values())
    for name, result in zip(jobs, results, strict=True):
        if name == "imap":
            answer["imap"], listed = result
            if listed is not None:
                answer["mailboxes"] = listed
        else:
            answer["smtp"] = result
    return Result(answer)


HANDLERS["verify"] = verify
