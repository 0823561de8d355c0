"""The ``slack`` channel: one readable, coloured message per alert transition through an incoming webhook.

Message shape (Slack incoming webhooks accept the same JSON as ``chat.postMessage``):

* top-level ``text``: the whole alert in one line. Slack shows it as the message and uses it for notifications
  and clients that cannot render blocks.
* one attachment with ``color`` (the bar on the left) holding Block Kit ``blocks``: a section of ``fields``
  (target, component, usage vs threshold in MiB, percent of the limit and its source, host, pod, times) and a
  context line. Slack's reference calls attachments "a legacy part of messaging functionality" and recommends
  layout blocks, yet only an attachment has a colour bar; an attachment's ``blocks`` field bridges the two
  (https://api.slack.com/reference/messaging/attachments, "blocks" and "color" fields).

Emoji and colour per level: warning 🟡 #F2C744, critical 🔴 #E01E5A, emergency 🚨 #8B0000, resolved ✅ #2EB67D.
A test delivery (``memmon test-alert``) is marked ``TEST`` in the text and in the context line.

Slack answers 200 ``ok``; 429 with ``Retry-After``; 400 ``invalid_payload``, 403 ``action_prohibited``,
404 ``no_service``/``channel_not_found``, 410 ``channel_is_archived`` (final). :class:`JsonPoster` maps them onto
the channel contract and never quotes the webhook URL's path, which is the credential.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from memmon.alerting.channel import Delivery, Receipt
from memmon.alerting.http import JsonPoster
from memmon.alerting.kinds import is_notice
from memmon.kits.isotime import iso_utc
from memmon.kits.redaction import redact_url, url_secrets
from memmon.model import Alert, Level

_EMOJI = {Level.OK: "✅", Level.WARNING: "🟡", Level.CRITICAL: "🔴", Level.EMERGENCY: "🚨"}
_COLOUR = {
    Level.OK: "#2EB67D",
    Level.WARNING: "#F2C744",
    Level.CRITICAL: "#E01E5A",
    Level.EMERGENCY: "#8B0000",
}
RESOLVED_EMOJI = _EMOJI[Level.OK]
RESOLVED_COLOUR = _COLOUR[Level.OK]

# Block Kit limits (https://api.slack.com/reference/block-kit/blocks#section): a section's text up to
# 3000 characters, at most 10 fields of up to 2000 characters each.
_TEXT_LIMIT = 3000
_FIELD_LIMIT = 2000
_MAX_FIELDS = 10


def mrkdwn_escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn gives meaning to (``&``, ``<``, ``>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def alert_host(alert: Alert, default: str) -> str:
    """The host the alert is about: ``metadata["host"]`` as the evaluator sets it, else ``default``."""
    host = alert.metadata.get("host")
    return str(host) if host else default


def usage_line(alert: Alert) -> tuple[str, str]:
    """("2048.5 MiB", "2048.0 MiB (critical)"): usage and the threshold it was judged against."""
    return f"{alert.memory_usage:.1f} MiB", f"{alert.threshold:.1f} MiB ({alert.severity.label})"


def percent_line(alert: Alert) -> str | None:
    """ "85.2% of the host limit (4096.0 MiB)", from the metadata the evaluator records; None when unknown."""
    percent = _number(alert.metadata.get("percent"))
    if percent is None:
        return None
    source = alert.metadata.get("limit_source")
    limit_mb = _number(alert.metadata.get("limit_mb"))
    text = f"{percent:.1f}%"
    if source:
        text += f" of the {source} limit"
    if limit_mb is not None:
        text += f" ({limit_mb:.1f} MiB)"
    return text


class SlackChannel:
    """Posts each delivery to a Slack incoming-webhook ``url`` (the guide's ``alerting.slack_webhook``)."""

    name = "slack"

    def __init__(self, url: str, *, timeout: float = 10.0, poster: JsonPoster | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self._owns_poster = poster is None
        self._poster = poster or JsonPoster()
        # Read once: the pod a container runs in does not change (Kubernetes downward API sets POD_NAME).
        self.pod = os.environ.get("POD_NAME") or None
        self._hostname = socket.gethostname()

    def secrets(self) -> set[str]:
        """What error texts must never show: the URL's credentials, token-like path, query (see redaction)."""
        return url_secrets(self.url)

    def __repr__(self) -> str:
        return f"SlackChannel({redact_url(self.url)!r})"

    def message(self, delivery: Delivery) -> dict[str, Any]:
        """The JSON body for ``delivery`` (public so that tests and ``memmon test-alert --dry-run`` can show it)."""
        alert = delivery.alert
        resolved = alert.state != "firing"
        emoji = RESOLVED_EMOJI if resolved else _EMOJI[alert.severity]
        colour = RESOLVED_COLOUR if resolved else _COLOUR[alert.severity]
        host = alert_host(alert, self._hostname)
        status = f"RESOLVED {alert.severity.label}" if resolved else alert.severity.label.upper()
        test = "TEST " if delivery.test else ""
        headline = f"{emoji} {test}[memmon] {status}: {alert.component} on {host}"
        text = _clip(f"{headline} — {alert.message}", _TEXT_LIMIT)

        fields: list[tuple[str, str]] = [("Target", f"`{alert.target}`"), ("Component", alert.component)]
        if not is_notice(alert):  # a notice (an action and its result) is judged against no threshold
            usage, threshold = usage_line(alert)
            fields += [("Usage", usage), ("Threshold", threshold)]
        percent = percent_line(alert)
        if percent is not None:
            fields.append(("Percent", percent))
        fields.append(("Host", host))
        if self.pod:
            fields.append(("Pod", self.pod))
        fields.append(("Started", iso_utc(alert.started_at) or "?"))
        if alert.resolved_at is not None:
            fields.append(("Resolved", iso_utc(alert.resolved_at) or "?"))

        context = f"memmon · alert `{alert.id}` · fingerprint `{alert.fingerprint}`"
        if delivery.test:
            context = "*TEST* alert from `memmon test-alert` · " + context
        blocks: list[dict[str, Any]] = [
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": _clip(f"*{title}*\n{mrkdwn_escape(value)}", _FIELD_LIMIT)}
                    for title, value in fields[:_MAX_FIELDS]
                ],
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn_escape(context)}]},
        ]
        return {
            "text": mrkdwn_escape(text),
            "attachments": [{"color": colour, "fallback": text, "blocks": blocks}],
        }

    async def send(self, delivery: Delivery) -> Receipt:
        """POST the message once; :class:`~memmon.alerting.channel.DeliveryFailed` when Slack does not accept it."""
        # Slack's incoming webhooks have no idempotency key: a retry after a lost "ok" can post twice.
        return await self._poster.post_json(self.url, self.message(delivery), timeout=self.timeout)

    async def close(self) -> None:
        """Close the HTTP session if this channel created it."""
        if self._owns_poster:
            await self._poster.close()
