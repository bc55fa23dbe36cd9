"""Process settings, read once from ``MAILGATE_*`` environment variables.

Every service reads the same Settings so an operator configures one
ConfigMap; each service simply ignores the fields it does not use.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

PREFIX = "MAILGATE_"
# Public, so only ever acceptable on a developer's machine (``development``).
DEFAULT_SECRET = "mailgate-development-secret-change-me"

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/mailgate"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # Connections each process keeps to PostgreSQL (a burst waits for one: no overflow).
    db_pool_size: PositiveInt = 8
    # Key material for credentials at rest.  The services refuse to start with the
    # public default unless ``development`` is set (``make run`` generates a secret).
    secret: str = DEFAULT_SECRET
    # During a secret rotation: the old MAILGATE_SECRET, still accepted for reading.
    secret_previous: str | None = None
    admin_token: str | None = None
    # A developer's machine: the default secret is accepted (never in production).
    development: bool = False

    api_host: str = "127.0.0.1"
    api_port: Port = 3000
    # Worker processes serving the API (each a full event loop); on Kubernetes
    # prefer 1 per pod and more pods.
    api_workers: PositiveInt = 1
    # Public base URL used in webhook bodies (EmailEngine's serviceUrl).
    service_url: str | None = None
    # Where tracking pixels, click links and unsubscribe links point (default:
    # the serviceUrl setting, then MAILGATE_SERVICE_URL, then the API's address).
    tracking_base_url: str | None = None
    # Old MAILGATE_SECRETs (comma-separated) whose tracking and unsubscribe links
    # still verify, so mail delivered before a rotation keeps working.
    tracking_retired_secrets: str | None = None
    # Tracking routes (/open.gif, /redirect): the reverse proxies (comma-separated
    # addresses or CIDRs) whose X-Forwarded-For names the client; from any other
    # peer the header is ignored.  An open or click this many seconds or less
    # after the message was sent is flagged machine-made (prefetch_timing).
    trusted_proxies: str | None = None
    tracking_prefetch_seconds: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    smtp_host: str = "127.0.0.1"
    smtp_port: Port = 2525
    # Each non-HTTP service serves /health/live, /health/ready and /metrics here;
    # 0 means "the service's own default port".
    health_host: str = "127.0.0.1"
    health_port: Port = 0

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    # Sender
    sender_concurrency: PositiveInt = 32
    sender_poll_interval: PositiveFloat = 0.5
    # How long a claimed message may stay "sending" before another sender
    # assumes the claimant died and takes it over.  A live sender renews the
    # claims it holds (every third of this), so an exchange never outlives its claim.
    sender_claim_timeout: PositiveFloat = 120.0
    # A message whose claimant died this many times (the delivery crashed, hung or
    # killed the process each time) is failed instead of being taken over again.
    sender_max_takeovers: PositiveInt = 3
    # Bytes of message bodies a sender holds in memory at once (loaded right
    # before their exchange); one larger message goes alone.
    sender_body_budget: PositiveInt = 128 * 1024 * 1024
    # After the message was written, a timeout or a dropped connection leaves the
    # outcome unknown (the server may have delivered it): the message ends in
    # state "unknown" and is not retried, unless this (or the account's
    # ``retryUnknownOutcome``) opts in to a retry that may deliver it twice.
    sender_retry_unknown_outcome: bool = False
    # On SIGTERM, deliveries under way get this long to finish; then those that
    # have not started sending are handed back, and those waiting for the
    # server's answer to a whole message are recorded "unknown".  Keep it below
    # the pod's terminationGracePeriodSeconds.
    sender_stop_grace: PositiveFloat = 20.0
    # Days a finished message's body (raw MIME) is kept; its metadata, attempts
    # and timeline stay until outbox_retention_days.
    outbox_body_retention_days: PositiveFloat = 7.0
    # Days finished messages (with their attempts) are kept at all.
    outbox_retention_days: PositiveFloat = 90.0
    # Days bounce and complaint records are kept (suppressions stay).
    bounce_retention_days: PositiveFloat = 180.0
    # Days a message received at the MX door is kept; held ones stay until deleted or released.
    inbound_retention_days: PositiveFloat = 7.0
    smtp_timeout: PositiveFloat = 30.0
    # Wait for the server's answer to the end of a message (RFC 5321 4.5.3.2.6: 10 minutes).
    smtp_data_timeout: PositiveFloat = 600.0
    # Name the sender gives in EHLO; None: this host's FQDN, looked up once at start.
    smtp_helo_name: str | None = None
    # "ip1|ehlo-name1,ip2|ehlo-name2": new SMTP and IMAP connections bind to these
    # in turn (mailgate_common.local_addresses).
    local_addresses: str | None = None
    # JSON that POST /v1/settings takes, applied by the api at start (EmailEngine's prepared settings).
    settings: str | None = None
    delivery_attempts: PositiveInt = 10
    # First retry delay in seconds; later ones double (with jitter) up to retry_max.
    delivery_retry_base: PositiveFloat = 15.0
    delivery_retry_max: PositiveFloat = 3600.0
    # An account whose server says "slow down" rests this long, doubling per repeat.
    throttle_base: PositiveFloat = 30.0
    throttle_max: PositiveFloat = 900.0

    # Webhooks
    webhook_timeout: PositiveFloat = 10.0
    webhook_concurrency: PositiveInt = 32
    webhook_poll_interval: PositiveFloat = 0.5
    webhook_retry_base: PositiveFloat = 5.0
    webhook_retry_max: PositiveFloat = 3600.0
    webhooks_allow_private: bool = False
    # Retries go on for this many seconds after the first attempt (3 days),
    # however many attempts that takes; see docs/webhooks.md.
    webhook_retry_window: PositiveFloat = 259200.0
    # Delivered/failed webhook deliveries (and their attempts) older than this are pruned.
    webhook_retention_days: PositiveFloat = 30.0
    # Concurrent POSTs to one endpoint across all replicas (throughput limit per endpoint).
    webhook_endpoint_concurrency: PositiveInt = 8
    # An endpoint is backed off as a whole after this many consecutive failures
    # spanning at least webhook_failing_after seconds.
    webhook_failing_threshold: PositiveInt = 5
    webhook_failing_after: float = 600.0

    # Bus
    bus_prefetch: PositiveInt = 32
    # Retries of an event whose handler fails for a reason that will not pass
    # (a bug, bad data) before it goes to the dead-letter queue.  Outages
    # (database, broker, a mail server unreachable) are retried for as long as they last.
    bus_max_retries: PositiveInt = 5
    # Seconds a publish may wait for the broker's confirm (a resource alarm blocks
    # publishers); what times out is left to the event relay.
    bus_publish_timeout: PositiveFloat = 5.0

    # IMAP sync
    imap_timeout: PositiveFloat = 30.0
    # An account lease lives this long unless its holder renews it (every heartbeat),
    # so a dead replica's accounts move within lease_ttl + scan_interval seconds.
    imap_lease_ttl: PositiveFloat = 15.0
    imap_heartbeat: PositiveFloat = 5.0
    imap_scan_interval: PositiveFloat = 5.0
    # Accounts one replica takes per scan, so replicas started together share them.
    imap_lease_batch: PositiveInt = 10
    imap_retry_base: PositiveFloat = 2.0
    imap_retry_max: PositiveFloat = 300.0
    # Wait after a rejected login: retrying a wrong password only gets it locked.
    imap_auth_retry: PositiveFloat = 600.0
    # IDLE is re-issued this often (servers drop it after 30 minutes).
    imap_idle_restart: PositiveFloat = 600.0
    # NOOP polling interval for servers without IDLE.
    imap_poll_interval: PositiveFloat = 15.0
    # How often folders other than INBOX (account ``path``) are checked with STATUS;
    # INBOX stays on IDLE, so this is the latency of news in the other folders.
    imap_folder_poll: PositiveFloat = 60.0
    # The same where the server pushes new and expunged mail of every folder (NOTIFY):
    # then the round only catches flag changes outside INBOX.
    imap_folder_poll_notified: PositiveFloat = 600.0
    # How long the api waits for imap-sync to fetch a message's content (then 504).
    imap_fetch_timeout: PositiveFloat = 20.0
    # Largest message the api can read through imap-sync (RabbitMQ's message size
    # limit is 16 MiB by default); larger ones answer 413.
    imap_fetch_max_bytes: PositiveInt = 12 * 1024 * 1024
    # Most bytes one IMAP command may bring back (literals included) before the
    # connection is dropped: a hostile server cannot exhaust memory.
    imap_max_response_bytes: PositiveInt = 64 * 1024 * 1024

    # Submissions
    max_message_size: PositiveInt = 25 * 1024 * 1024
    # Bytes of request bodies the api holds at once (a submit makes several
    # copies: JSON, base64, MIME); a request that would go over waits, then 503.
    api_body_budget: PositiveInt = 256 * 1024 * 1024
    # false: account-scoped tokens may only point an account's SMTP/IMAP settings
    # at public addresses (checked when saved and again when connecting).
    account_hosts_allow_private: bool = True

    # SMTP ingress (smtp_host/smtp_port above are where it listens)
    # false: no AUTH needed, the X-EE-Account header picks the account (trusted networks only).
    smtp_auth: bool = True
    # AUTH without TLS is refused unless this is set or the client is on loopback.
    smtp_allow_plaintext_auth: bool = False
    # PEM files; STARTTLS is offered only when both are set.
    smtp_tls_cert: str | None = None
    smtp_tls_key: str | None = None
    # Expect a PROXY protocol v1/v2 header (HAProxy, cloud load balancers) on every connection.
    smtp_proxy_protocol: bool = False
    # Name in the 220 greeting and EHLO reply; None means this host's FQDN.
    smtp_hostname: str | None = None
    # Trusted networks without AUTH: the account for messages lacking X-EE-Account.
    smtp_default_account: str | None = None
    # Wait before each AUTH from an address with recent failures: this, doubled per failure.
    smtp_auth_failure_delay: PositiveFloat = 0.5
    # Concurrent SMTP connections; more are answered 421 and closed.
    smtp_max_connections: PositiveInt = 1000
    # Bytes of message data the ingress holds at once across sessions (a client's
    # SIZE= counts, else the size limit); DATA beyond it waits, then gets 451.
    smtp_data_budget: PositiveInt = 256 * 1024 * 1024
    # Share the SMTP port with other ingress processes on this host (SO_REUSEPORT):
    # one Python process uses one core, and the kernel spreads connections among
    # them.  Off by default, so a second copy started by mistake fails to bind.
    smtp_reuse_port: bool = False

    # MX door (smtp-ingress's second listener, for mail from the internet to inbound
    # routes): off unless MAILGATE_MX_PORT is set (25 in production).  No AUTH;
    # only recipients a route accepts; STARTTLS with the submission door's certificate.
    mx_host: str = "127.0.0.1"
    mx_port: Port = 0
    # The hostname in the MX door's greeting and in Authentication-Results (default: smtp_hostname).
    mx_hostname: str | None = None
    # Largest message when the route says nothing (Postal's default: 14 MB).
    mx_max_size: PositiveInt = 14 * 1024 * 1024
    # Per remote IP and per MAIL FROM: messages per minute the door accepts (0: unlimited).
    mx_rate_per_ip: NonNegativeInt = 120
    mx_rate_per_sender: NonNegativeInt = 60
    # Synchronous routes: how long the app may take to answer during the SMTP transaction.
    mx_sync_timeout: PositiveFloat = 10.0
    # Attachments up to this size ride in the inboundMessage body (base64); larger ones as an API URL.
    inbound_inline_attachment_max: NonNegativeInt = 256 * 1024
    # Nameservers for SPF, DKIM and DMARC lookups ("ip" or "ip:port", comma-separated); unset: the system's.
    dns_servers: str | None = None
    # rspamd's controller URL (e.g. http://127.0.0.1:11333): spam scoring; unset, payloads say "not checked".
    rspamd_url: str | None = None


class SettingsError(ValueError):
    """Raised when the environment holds a value the services cannot start with."""


def _env_name(field: str) -> str:
    return PREFIX + field.upper()


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from the environment, naming the variable on any bad value."""
    env = os.environ if environ is None else environ
    known = {f: _env_name(f) for f in Settings.__struct_fields__}
    raw: dict[str, str] = {}
    for field, name in known.items():
        if name in env and env[name] != "":
            raw[field] = env[name]
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        found = re.search(r"\$\.(\w+)", message)
        field = found.group(1) if found else ""
        name = known.get(field, "a MAILGATE_* variable")
        value = raw.get(field, "")
        raise SettingsError(f"invalid {name}={value!r}: {message.split(' - at ')[0]}") from exc


def load_settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise SystemExit(f"mailgate: configuration error: {exc}") from None


def check_secret_or_exit(settings: Settings) -> None:
    """A service sealing or opening credentials must not run on the public default secret."""
    if settings.secret == DEFAULT_SECRET and not settings.development:
        raise SystemExit(
            "mailgate: MAILGATE_SECRET is not set: credentials would be sealed with a public "
            "default key.  Set MAILGATE_SECRET to a long random value (openssl rand -hex 32), "
            "or MAILGATE_DEVELOPMENT=true on a developer's machine."
        )
