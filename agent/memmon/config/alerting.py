"""The ``alerting`` section: the alert channels, where each level is sent, the mail server and delivery.

``CHANNELS`` names the channels a level can be routed to (``alert_levels``, ``send_resolved``, the pods'
annotations of node mode).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr
from pydantic_settings import NoDecode

from memmon.config.fields import Float, Int, LevelName, Seconds, Section, http_url, path_given, split_list
from memmon.config.rules import problem, problems_error

CHANNELS = ("log", "slack", "webhook", "email", "alertmanager")


def _email(value: str) -> str:
    local, at, domain = value.strip().partition("@")
    if not (at and local and domain) or "@" in domain or any(ch.isspace() for ch in value.strip()):
        raise problems_error(
            problem("not an email address", got=value, expected="one address like ops@example.com")
        )
    return value.strip()


def _channel(value: str) -> str:
    name = value.strip().lower()
    if name not in CHANNELS:
        raise problems_error(problem(f"unknown channel {value!r}", expected=f"one of {', '.join(CHANNELS)}"))
    return name


Email = Annotated[str, AfterValidator(_email)]
Channel = Annotated[str, AfterValidator(_channel)]


class AlertLevelSettings(Section):
    """Where alerts of one level are sent."""

    channels: Annotated[list[Channel], NoDecode, BeforeValidator(split_list)] = Field(default_factory=list)
    """Channel names: log, slack, webhook, email, alertmanager."""


class SmtpSettings(Section):
    """The mail server of the ``email`` channel (recipients are ``alerting.email`` / ``ALERT_EMAIL``)."""

    host: str | None = None
    """SMTP server host; null = the email channel is not configured."""
    port: Annotated[Int, Field(ge=1, le=65535)] = 587
    """SMTP port (587 submission with STARTTLS, 465 implicit TLS, 25 plain)."""
    security: Literal["starttls", "ssl", "none"] = "starttls"
    """``starttls`` (upgrade after connecting), ``ssl`` (implicit TLS) or ``none`` (plain text)."""
    username: str | None = None
    """Login user; null = no AUTH."""
    password: SecretStr | None = None
    """Login password (secret)."""
    from_address: Email | None = None
    """Sender address; null = memmon@<host name>."""
    ca_file: Annotated[str | None, BeforeValidator(path_given)] = None
    """CA bundle that signs the server's certificate (a private CA); null = the system's."""
    verify_tls: bool = True
    """Check the server certificate (switch off only for a throw-away test server)."""


class DeliverySettings(Section):
    """How alert deliveries are attempted and retried."""

    timeout_seconds: Seconds = 10
    """Seconds one delivery attempt may take."""
    backoff_initial_seconds: Seconds = 1
    """Wait before the first retry; doubled after each failure, with +-50 % jitter."""
    backoff_max_seconds: Seconds = 300
    """Longest wait between two retries (a receiver's Retry-After may ask for longer)."""
    degraded_after_failures: Annotated[Int, Field(ge=1)] = 3
    """Consecutive failed attempts after which a channel is reported degraded."""
    spool_max_entries: Annotated[Int, Field(ge=10)] = 10_000
    """Pending deliveries kept per channel; beyond it the oldest warnings go first, never an emergency."""


class AlertingSettings(Section):
    """Alert channels and how often the same alert may repeat."""

    webhook_url: Annotated[SecretStr | None, AfterValidator(http_url)] = None
    """Generic webhook receiving the alert payload as JSON (secret: may embed a token)."""
    slack_webhook: Annotated[SecretStr | None, AfterValidator(http_url)] = None
    """Slack incoming-webhook URL (secret)."""
    email: Annotated[list[Email], NoDecode, BeforeValidator(split_list)] = Field(default_factory=list)
    """Alert e-mail addresses (ALERT_EMAIL is a comma-separated list)."""
    rate_limit_seconds: Annotated[Float, Field(ge=0)] = 300
    """Minimum seconds between two notifications of the same alert."""
    alert_levels: dict[LevelName, AlertLevelSettings] = Field(default_factory=dict)
    """Channels per level name (warning, critical, emergency); a level not listed uses every configured channel."""
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    """Mail server of the email channel."""
    alertmanager_url: Annotated[SecretStr | None, AfterValidator(http_url)] = None
    """Alertmanager base URL, e.g. http://127.0.0.1:9093 (secret: may carry basic-auth credentials)."""
    alertmanager_repush_seconds: Seconds = 60
    """Firing alerts are pushed to Alertmanager again this often (it resolves alerts not re-pushed)."""
    instance: str | None = None
    """The ``instance`` label and the host shown in messages; null = the host name (or POD_NAME)."""
    send_resolved: dict[Channel, bool] = Field(default_factory=dict)
    """Per channel, whether a resolve notification is sent when the level clears (default true)."""
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    """Timeouts, retries and the spool bound."""
