"""Signing targets: an endpoint's sealed secrets opened, or the service secret.

An endpoint secret that opens with none of the configured keys (MAILGATE_SECRET
changed without MAILGATE_SECRET_PREVIOUS, or the rotation skipped it) makes that
one endpoint unusable: its deliveries are recorded as failed attempts with the
reason, without a POST, so retries, backoff and the endpoint's failing state
apply to it alone; other destinations of the same events go on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from mailgate_common.crypto import CredentialError, Sealer
from mailgate_webhooks.jobs import Target

log = logging.getLogger(__name__)

UNREADABLE_SECRET = (
    "endpoint secret cannot be opened: MAILGATE_SECRET changed without MAILGATE_SECRET_PREVIOUS? "
    "rotate the endpoint's secret"
)


def _headers(headers: Mapping[str, Any]) -> dict[str, str]:
    return {str(name): str(value) for name, value in headers.items()}


class Targets:
    def __init__(self, sealer: Sealer) -> None:
        self._sealer = sealer
        # Opening costs AES-GCM and JSON: once per sealed value, not once per POST.
        self._open = lru_cache(maxsize=1024)(self._open_uncached)
        # Said once per endpoint (and now and then after), not once per delivery.
        self._warn = lru_cache(maxsize=256)(self._warn_uncached)

    def _open_uncached(self, sealed: bytes) -> str | None:
        try:
            return str(self._sealer.open(sealed)["secret"])
        except (CredentialError, KeyError):
            return None

    @staticmethod
    def _warn_uncached(endpoint_id: str, problem: str) -> None:
        log.warning("webhook endpoint %s: %s", endpoint_id, problem)

    def for_endpoint(self, url: str, headers: Mapping[str, Any], secret: bytes,
                     previous_secret: bytes | None, endpoint_id: str) -> Target:
        opened = self._open(secret)
        if opened is None:
            self._warn(endpoint_id, UNREADABLE_SECRET)
            return Target(url, "", None, _headers(headers), unusable=UNREADABLE_SECRET)
        previous = self._open(previous_secret) if previous_secret is not None else None
        if previous_secret is not None and previous is None:
            # The overlap's old secret is lost: receivers still on it fail to verify,
            # those on the current one are fine; that beats not delivering at all.
            self._warn(endpoint_id, "its previous secret cannot be opened; signing with the current one only")
        return Target(url, opened, previous, _headers(headers))

    @staticmethod
    def for_url(url: str, service_secret: str) -> Target:
        """A settings/account URL, signed with the service secret."""
        return Target(url, service_secret, None, {})
