"""Credentials never leave a channel: /health, the log and the test-alert answer are scrubbed of every form.

Receivers here echo the request line and headers (Authorization included) in their error body, as some proxies
and misconfigured receivers do; the agent is a real memmon process whose log file is read afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from memmon.alerting.channel import Delivery, DeliveryFailed
from memmon.alerting.webhook import WebhookChannel
from memmon.kits.redaction import Redactor, url_secrets
from tests.alerting.receivers import HOST, sample_alert
from tests.test_cli import WARNING_FROM_1_MB, clean_env, free_port, memmon, stop, wait_ready

AM_USER, AM_PASS = "am-operator", "Am-Pa55-w0rd-xyz"
WEBHOOK_TOKEN = "wh-T0ken-abcdef123456"
SLACK_PATH = "/services/T01SECRET/B02SECRET/sl4ckS3cretPathXYZ"
API_TOKEN = "api-token-for-actions"


class EchoReceiver:
    """Answers every request with ``status`` and a body quoting the request line and all its headers."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.requests: list[dict[str, str]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> EchoReceiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests.append(dict(request.headers))
        echoed = "\n".join(f"{name}: {value}" for name, value in request.headers.items())
        return web.Response(status=self.status, text=f"{request.method} {request.path_qs}\n{echoed}")


def forbidden() -> list[str]:
    """Every form of the configured secrets that must never be shown."""
    basic = base64.b64encode(f"{AM_USER}:{AM_PASS}".encode()).decode()
    return [
        AM_PASS,
        f"{AM_USER}:{AM_PASS}",
        basic,
        WEBHOOK_TOKEN,
        "sl4ckS3cretPathXYZ",
        "T01SECRET",
        "B02SECRET",
    ]


@pytest.fixture
async def echoes() -> AsyncIterator[tuple[EchoReceiver, EchoReceiver, EchoReceiver]]:
    """Three echoing receivers: Alertmanager (500), webhook (400), Slack (500)."""
    started = [
        await EchoReceiver(500).start(),
        await EchoReceiver(400).start(),
        await EchoReceiver(500).start(),
    ]
    try:
        yield started[0], started[1], started[2]
    finally:
        for each in started:
            await each.close()


def _post(url: str) -> tuple[int, str]:
    request = urllib.request.Request(url, method="POST", headers={"Authorization": f"Bearer {API_TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


async def test_echoed_credentials_never_reach_health_log_or_test_answer(
    tmp_path: Path, echoes: tuple[EchoReceiver, EchoReceiver, EchoReceiver]
) -> None:
    """URL userinfo, its Basic base64, a query token and a Slack path echoed back stay out of /health, the log
    file and the test-alert answers, while the errors still say what happened."""
    am, hook, slack = echoes
    port = free_port()
    log_file = tmp_path / "memmon.log"
    env = clean_env(
        **WARNING_FROM_1_MB,
        MEMMON_ALERTING__ALERTMANAGER_URL=f"http://{AM_USER}:{AM_PASS}@{HOST}:{am.port}",
        MEMMON_ALERTING__WEBHOOK_URL=f"http://{HOST}:{hook.port}/hook?token={WEBHOOK_TOKEN}",
        MEMMON_ALERTING__SLACK_WEBHOOK=f"http://{HOST}:{slack.port}{SLACK_PATH}",
        MEMMON_ALERTING__DELIVERY__BACKOFF_INITIAL_SECONDS="0.1",
        MEMMON_ALERTING__DELIVERY__BACKOFF_MAX_SECONDS="0.3",
        MEMMON_SERVER__API_TOKEN=API_TOKEN,
    )
    args = ["--health-port", str(port), "--prometheus-port", "0", "--state-dir", str(tmp_path / "state"),
            "--check-interval", "0.2", "--log-file", str(log_file), "--log-level", "DEBUG"]  # fmt: skip
    proc = memmon(*args, env=env)
    shown: list[str] = []
    try:
        await asyncio.to_thread(wait_ready, port, proc)
        base = f"http://{HOST}:{port}"

        def all_failed() -> bool:
            channels = _get(f"{base}/health")["alert_channels"]
            return all(channels[name]["last_error"] for name in ("alertmanager", "slack", "webhook"))

        for _ in range(300):
            if await asyncio.to_thread(all_failed):
                break
            await asyncio.sleep(0.1)
        health = await asyncio.to_thread(_get, f"{base}/health")
        shown.append(json.dumps(health))
        for name in ("alertmanager", "webhook", "slack"):
            status, answer = await asyncio.to_thread(
                _post, f"{base}/health/actions/test-alert?channel={name}"
            )
            assert status == 502, answer
            shown.append(answer)
    finally:
        returncode, _, stderr = await asyncio.to_thread(stop, proc)
    shown.append(stderr)
    shown.append(log_file.read_text())
    # The receivers did get the credentials (the test is meaningful) ...
    basic = base64.b64encode(f"{AM_USER}:{AM_PASS}".encode()).decode()
    assert any(h.get("Authorization") == f"Basic {basic}" for h in am.requests)
    assert hook.requests and slack.requests
    # ... and none of their forms is shown anywhere.
    everything = "\n".join(shown)
    for secret in forbidden():
        assert secret not in everything, f"{secret!r} leaked"
    channels = health["alert_channels"]
    assert "HTTP 500" in channels["alertmanager"]["last_error"]
    assert "HTTP 400" in channels["webhook"]["last_error"]
    assert "HTTP 500" in channels["slack"]["last_error"]
    assert returncode == 0


async def test_a_channel_error_is_scrubbed_at_the_boundary() -> None:
    """A webhook receiver echoing Authorization: Basic in its 401 body yields a reason without the base64."""
    receiver = await EchoReceiver(401).start()
    url = f"http://{AM_USER}:{AM_PASS}@{HOST}:{receiver.port}/hook"
    channel = WebhookChannel(url, timeout=5)
    try:
        with pytest.raises(DeliveryFailed) as caught:
            await channel.send(Delivery(sample_alert(), "k:firing"))
    finally:
        await channel.close()
        await receiver.close()
    reason = caught.value.reason
    assert "HTTP 401" in reason and "Authorization" in reason
    for secret in forbidden():
        assert secret not in reason, reason


def test_redactor_scrubs_every_credential_form() -> None:
    """Userinfo, Basic/Bearer tokens, base64(user:pass), query tokens and Slack paths become ***."""
    redact = Redactor(url_secrets(f"http://{AM_USER}:{AM_PASS}@am.example:9093"))
    basic = base64.b64encode(f"{AM_USER}:{AM_PASS}".encode()).decode()
    text = (
        f"Authorization: Basic {basic} proxy-authorization=Bearer eyJhbGciOi.J9.x "
        f"see https://bob:hunter22@hooks.example/x?api_key=k3y-123&x=1 "
        f"and https://hooks.slack.com/services/T000/B000/XXXXSECRET plus {AM_PASS}"
    )
    scrubbed = redact(text)
    for secret in (basic, "eyJhbGciOi", "hunter22", "k3y-123", "XXXXSECRET", AM_PASS):
        assert secret not in scrubbed, scrubbed
    assert "x=1" in scrubbed and "hooks.example" in scrubbed and "Authorization" in scrubbed
