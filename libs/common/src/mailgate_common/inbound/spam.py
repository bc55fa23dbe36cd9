"""Spam scoring of received mail by rspamd (optional: MAILGATE_RSPAMD_URL).

``SpamChecker.from_settings(settings).check(raw, ip=, helo=, mail_from=, recipients=)``
gives the payload's ``spam`` object (what ``inbound_messages.spam`` stores):
``{"checked": false}`` without rspamd, ``{"checked": false, "error": ...}`` when
rspamd could not answer (the message is still taken: scoring is advice), else
``{"checked": true, "score", "threshold", "isSpam", "action", "symbols"}``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import httpx

log = logging.getLogger(__name__)

# Seconds for rspamd's whole answer: the client is waiting for the DATA reply meanwhile.
TIMEOUT = 5.0
# rspamd's actions that mean "this is spam" (greylist and soft reject are about rate, not content).
SPAM_ACTIONS = frozenset({"reject", "add header", "rewrite subject"})


class SettingsLike(Protocol):
    @property
    def rspamd_url(self) -> str | None: ...


def not_checked() -> dict[str, Any]:
    return {"checked": False}


def from_rspamd(answer: Any) -> dict[str, Any]:
    """The ``spam`` object from rspamd's /checkv2 JSON answer."""
    if not isinstance(answer, dict) or not isinstance(answer.get("score"), int | float):
        return {"checked": False, "error": "rspamd answer has no score"}
    if answer.get("is_skipped"):
        return {"checked": False, "error": "rspamd skipped the message"}
    score = float(answer["score"])
    threshold = answer.get("required_score")
    threshold = float(threshold) if isinstance(threshold, int | float) else None
    action = str(answer.get("action") or "no action")
    spam: dict[str, Any] = {
        "checked": True,
        "score": round(score, 3),
        "threshold": threshold,
        "isSpam": action in SPAM_ACTIONS or (threshold is not None and score >= threshold),
        "action": action,
    }
    symbols = answer.get("symbols")
    if isinstance(symbols, dict) and symbols:
        spam["symbols"] = sorted((_symbol(name, value) for name, value in symbols.items()),
                                 key=lambda item: (-abs(item["score"]), item["name"]))
    return spam


def _symbol(name: str, value: Any) -> dict[str, Any]:
    value = value if isinstance(value, dict) else {}
    score = value.get("score")
    symbol: dict[str, Any] = {"name": str(value.get("name") or name),
                              "score": round(float(score), 3) if isinstance(score, int | float) else 0.0}
    if value.get("description"):
        symbol["description"] = str(value["description"])
    if isinstance(value.get("options"), list) and value["options"]:
        symbol["options"] = [str(option) for option in value["options"]]
    return symbol


class SpamChecker:
    def __init__(self, url: str | None, *, timeout: float = TIMEOUT) -> None:
        self.url = url.rstrip("/") if url else None
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: SettingsLike) -> SpamChecker:
        return cls(settings.rspamd_url)

    @property
    def enabled(self) -> bool:
        return self.url is not None

    async def check(self, raw: bytes, *, ip: str, helo: str | None = None, mail_from: str | None = None,
                    recipients: Sequence[str] = (), queue_id: str | None = None) -> dict[str, Any]:
        if self.url is None:
            return not_checked()
        # rspamd reads the SMTP envelope from these request headers (one Rcpt per recipient).
        headers: list[tuple[str, str]] = [("IP", ip), ("From", mail_from or "")]
        if helo:
            headers.append(("Helo", helo))
        if queue_id:
            headers.append(("Queue-Id", queue_id))
        headers += [("Rcpt", recipient) for recipient in recipients]
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(f"{self.url}/checkv2", content=raw, headers=headers)
            if response.status_code != 200:
                return {"checked": False, "error": f"rspamd answered HTTP {response.status_code}"}
            return from_rspamd(response.json())
        except httpx.TimeoutException:
            return {"checked": False, "error": "rspamd timed out"}
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("rspamd check failed: %r", exc)
            return {"checked": False, "error": f"rspamd unreachable: {type(exc).__name__}"}
