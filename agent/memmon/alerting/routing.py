"""From settings to channels and per-level routes (the guide's ``alerting.alert_levels.<level>.channels``).

- A channel exists when it is configured: ``slack`` with ``slack_webhook``, ``webhook`` with ``webhook_url``,
  ``email`` with recipients (``email`` / ``ALERT_EMAIL``) and ``smtp.host``, ``alertmanager`` with
  ``alertmanager_url``; ``log`` always.
- A level listed in ``alert_levels`` goes to exactly its channels plus ``log``; a level not listed goes to every
  configured channel. A listed channel that is not configured is skipped with a warning at start-up (the guide's
  own example routes emergencies to ``email`` without configuring a mail server).

Each channel's module is imported only when that channel is configured: the email channel brings ``smtplib`` and
the ``email`` package, and an agent that only logs should not carry them (the README's footprint section).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from memmon.alerting.channel import Channel
from memmon.config.alerting import AlertingSettings
from memmon.model import ALERT_LEVELS, Level


@dataclass(frozen=True, slots=True)
class Routing:
    """The delivery channels (``log`` excluded: it is always on and not spooled) and who gets which level."""

    channels: dict[str, Channel]
    routes: dict[Level, tuple[str, ...]]
    send_resolved: dict[str, bool]
    warnings: tuple[str, ...]
    """Problems worth a start-up warning (a route naming a channel that is not configured)."""


def instance_name(alerting: AlertingSettings) -> str:
    """The ``instance`` label: ``alerting.instance``, else the pod name (POD_NAME), else the host name."""
    return alerting.instance or os.environ.get("POD_NAME") or socket.gethostname()


def build_channels(alerting: AlertingSettings) -> dict[str, Channel]:
    """Every configured delivery channel, by name."""
    timeout = alerting.delivery.timeout_seconds
    channels: dict[str, Channel] = {}
    if alerting.slack_webhook is not None:
        from memmon.alerting.slack import SlackChannel

        channels["slack"] = SlackChannel(alerting.slack_webhook.get_secret_value(), timeout=timeout)
    if alerting.webhook_url is not None:
        from memmon.alerting.webhook import WebhookChannel

        channels["webhook"] = WebhookChannel(alerting.webhook_url.get_secret_value(), timeout=timeout)
    smtp = alerting.smtp
    if alerting.email and smtp.host:
        from memmon.alerting.email import EmailChannel

        channels["email"] = EmailChannel(
            alerting.email,
            host=smtp.host,
            port=smtp.port,
            security=smtp.security,
            username=smtp.username,
            password=None if smtp.password is None else smtp.password.get_secret_value(),
            from_address=smtp.from_address,
            timeout=timeout,
            ca_file=smtp.ca_file,
            verify_tls=smtp.verify_tls,
        )
    if alerting.alertmanager_url is not None:
        from memmon.alerting.alertmanager import AlertmanagerChannel

        channels["alertmanager"] = AlertmanagerChannel(
            alerting.alertmanager_url.get_secret_value(),
            timeout=timeout,
            instance=instance_name(alerting),
            repush_seconds=alerting.alertmanager_repush_seconds,
        )
    return channels


def build_routing(alerting: AlertingSettings, channels: dict[str, Channel]) -> Routing:
    """Routes per level over the given channels, with the warnings about unconfigured ones."""
    warnings: list[str] = []
    routes: dict[Level, tuple[str, ...]] = {}
    for level in ALERT_LEVELS:
        listed = alerting.alert_levels.get(level.label)
        if listed is None:
            routes[level] = tuple(channels)
            continue
        names: list[str] = []
        for name in listed.channels:
            if name == "log" or name in names:
                continue
            if name in channels:
                names.append(name)
            else:
                warnings.append(
                    f"alerting.alert_levels.{level.label}.channels: {name!r} is not configured; "
                    f"{level.label} alerts will not go there"
                )
        routes[level] = tuple(names)
    send_resolved = {name: alerting.send_resolved.get(name, True) for name in channels}
    return Routing(channels, routes, send_resolved, tuple(warnings))
