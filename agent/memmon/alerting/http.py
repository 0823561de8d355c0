"""JSON over HTTP for the webhook, Slack and Alertmanager channels: one POST, classified into the channel contract.

:class:`JsonPoster` sends through the shared :class:`memmon.kits.http_client.HttpClient` and turns the answer
into a :class:`~memmon.alerting.channel.Receipt` or a :class:`~memmon.alerting.channel.DeliveryFailed`:

* 2xx -> ``Receipt(status, <first 200 characters of the body>)``;
* 429 -> retryable, ``retry_after`` from the ``Retry-After`` header (seconds or an HTTP-date, RFC 9110 §10.2.3);
* 307/308 -> the same POST is sent to the ``Location`` (RFC 9110 §15.4.8/9; see :mod:`memmon.kits.redirects`
  for the hop limit, the https downgrade refusal and why credentials never go to another origin);
  301/302/303 -> not followed, a final error naming the ``Location`` (a configuration to update);
* 408 and 5xx -> retryable; every other status (other 3xx, 4xx) -> not retryable;
* connection refused, DNS failures, TLS handshake failures, resets and timeouts -> retryable (a receiver's
  certificate may be renewed; the dispatcher's backoff and spool keep the alert meanwhile).

Webhook URLs carry their credentials (a Slack incoming-webhook URL's path *is* the secret), so no reason or
detail ever contains more of the URL than :func:`~memmon.kits.redaction.redact_url` keeps: ``scheme://host:port``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from memmon.alerting.channel import DeliveryFailed, Receipt
from memmon.kits.http_client import HttpClient, HttpFailure

EXCERPT_CHARS = 200
"""The contract's limit on ``Receipt.detail`` and on the answer quoted in a failure."""


def _user_agent() -> str:
    import memmon  # lazily: the package's __init__ is light, but keep this module importable on its own

    return f"memmon/{memmon.__version__}"


class JsonPoster:
    """POSTs JSON through one :class:`~memmon.kits.http_client.HttpClient`, its session opened on first use.

    Channels may share one poster; whoever created it closes it.
    """

    def __init__(self, *, user_agent: str | None = None) -> None:
        self._client = HttpClient(user_agent=user_agent or _user_agent())

    async def post_json(
        self,
        url: str,
        payload: object,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float,  # noqa: ASYNC109 - the per-request limit is part of the poster's contract
    ) -> Receipt:
        """POST ``payload`` as JSON to ``url`` once; the receiver's 2xx answer, or :class:`DeliveryFailed`.

        ``timeout`` bounds the whole exchange (connect, send, read the answer, follow redirects). Values that JSON
        cannot encode (in alert metadata, say) are sent as their ``str()``.
        """
        body = json.dumps(payload, default=str, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        sent_headers = {"Content-Type": "application/json", **(headers or {})}
        try:
            answer = await self._client.request("POST", url, body=body, headers=sent_headers, timeout=timeout)
        except HttpFailure as failure:
            raise DeliveryFailed(failure.reason, retryable=failure.retryable, status=failure.status) from None
        quoted = answer.excerpt(limit=EXCERPT_CHARS)
        if answer.ok:
            return Receipt(answer.status, quoted or f"HTTP {answer.status}")
        reason = f"{answer.where} answered HTTP {answer.status}" + (f": {quoted}" if quoted else "")
        retry_after = answer.retry_after if answer.status == 429 else None
        raise DeliveryFailed(
            reason, retryable=answer.retryable, retry_after=retry_after, status=answer.status
        )

    async def close(self) -> None:
        """Close the session (idempotent; a later post opens a new one)."""
        await self._client.close()
