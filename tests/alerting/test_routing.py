"""Routing from settings: which channels exist and which levels go where (the guide's alert_levels)."""

from __future__ import annotations

from pathlib import Path

from memmon.alerting.routing import build_channels, build_routing
from memmon.config import load_settings
from memmon.model import Level

GUIDE_CONFIG = Path(__file__).resolve().parent.parent / "fixtures" / "config" / "guide-full.json"


def test_guide_example_routes_and_warns_about_the_unconfigured_email() -> None:
    """With the guide's config, critical goes to Slack, emergency to Slack (email is named but has no mail
    server: a warning says so), and the unlisted warning level to every configured channel."""
    settings = load_settings(GUIDE_CONFIG, environ={})
    routing = build_routing(settings.alerting, build_channels(settings.alerting))
    assert sorted(routing.channels) == ["slack", "webhook"]
    assert routing.routes[Level.CRITICAL] == ("slack",)
    assert routing.routes[Level.EMERGENCY] == ("slack",)
    assert routing.routes[Level.WARNING] == ("slack", "webhook")
    (warning,) = routing.warnings
    assert warning.startswith("alerting.alert_levels.emergency.channels: 'email' is not configured")


def test_channels_exist_only_when_configured() -> None:
    """No URL, no channel: by default only the log channel (always on, not listed here) exists."""
    assert build_channels(load_settings(environ={}).alerting) == {}
    settings = load_settings(
        environ={
            "ALERT_EMAIL": "ops@example.invalid",
            "MEMMON_ALERTING__SMTP__HOST": "127.0.0.1",
            "MEMMON_ALERTING__ALERTMANAGER_URL": "http://127.0.0.1:9093",
            "MEMMON_ALERTING__SEND_RESOLVED": '{"email": false}',
        }
    )
    routing = build_routing(settings.alerting, build_channels(settings.alerting))
    assert sorted(routing.channels) == ["alertmanager", "email"]
    assert routing.send_resolved == {"email": False, "alertmanager": True}
