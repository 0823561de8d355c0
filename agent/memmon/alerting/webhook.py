"""The ``webhook`` channel: the guide's alert payload, POSTed as JSON to one URL.

The body is exactly :func:`memmon.alerting.payload.alert_payload` (the guide's "Sample alert payload" fields
plus memmon's identity and state fields) with one more top-level field, ``idempotency_key``; the same key is sent
as the ``Idempotency-Key`` header. It is identical for every attempt of one transition, across restarts, so a
receiver that sees it twice (a retry after a lost answer) can drop the copy. Nothing else is added, not even
for a test delivery: the test alert's own message says what it is.

Answers are classified by :class:`~memmon.alerting.http.JsonPoster` (2xx accepted, 408/429/5xx and network
errors retryable, other 4xx final); reasons never contain the URL beyond ``scheme://host:port``.
"""

from __future__ import annotations

from memmon.alerting.channel import Delivery, Receipt
from memmon.alerting.http import JsonPoster
from memmon.alerting.payload import alert_payload
from memmon.kits.redaction import redact_url, url_secrets


class WebhookChannel:
    """POSTs each delivery to ``url`` (the guide's ``alerting.webhook_url``)."""

    name = "webhook"

    def __init__(self, url: str, *, timeout: float = 10.0, poster: JsonPoster | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self._owns_poster = poster is None
        self._poster = poster or JsonPoster()

    def secrets(self) -> set[str]:
        """What error texts must never show: the URL's credentials, token-like path, query (see redaction)."""
        return url_secrets(self.url)

    def __repr__(self) -> str:
        return f"WebhookChannel({redact_url(self.url)!r})"

    async def send(self, delivery: Delivery) -> Receipt:
        """POST the payload once; :class:`~memmon.alerting.channel.DeliveryFailed` when not accepted."""
        payload = alert_payload(delivery.alert)
        payload["idempotency_key"] = delivery.idempotency_key
        return await self._poster.post_json(
            self.url,
            payload,
            headers={"Idempotency-Key": delivery.idempotency_key},
            timeout=self.timeout,
        )

    async def close(self) -> None:
        """Close the HTTP session if this channel created it (a shared poster is its creator's to close)."""
        if self._owns_poster:
            await self._poster.close()
