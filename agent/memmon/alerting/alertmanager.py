"""The ``alertmanager`` channel: alerts pushed to a Prometheus Alertmanager through its v2 API.

API facts this relies on (https://prometheus.io/docs/alerting/latest/clients/ and the v2 OpenAPI spec's
``postableAlert``):

* ``POST <base>/api/v2/alerts`` takes a JSON *list* of ``{labels, annotations, startsAt, endsAt, generatorURL}``;
  ``labels`` (with ``alertname``) is required, the rest optional; all label and annotation values are strings;
  timestamps are RFC 3339; ``generatorURL`` must be a URI. A 200 answer has an empty body; a 400 names the
  invalid alert.
* Labels identify an alert (deduplication); annotations are replaced by the most recently received ones.
* Clients must keep re-sending active alerts ("on the order of 30 seconds to 3 minutes"). An alert whose
  ``endsAt`` has passed is resolved; ``endsAt`` in the future is when Alertmanager resolves it by itself if it
  hears nothing more.

So a firing alert is sent with ``endsAt = now + 4 * repush_seconds``: while memmon re-pushes it every
``repush_seconds`` (the dispatcher calls :meth:`AlertmanagerChannel.repush`) it stays active, and if memmon dies
Alertmanager resolves it within four periods. A resolved alert is sent with ``endsAt = resolved_at``.

Labels: ``alertname="MemmonMemoryLevel"`` (or the alert's ``metadata["alertname"]``: ``MemmonOomKill``,
``MemmonAction``), ``severity``, ``component``, ``target``, ``instance`` — the same identity as memmon's own
fingerprint (a severity of a component of a target), plus the reporting instance.

Alertmanager keeps state, so it is sent the resolutions that are no message for people (``tracks_state``; see
:mod:`memmon.alerting.kinds`): the alert of a level replaced by another ends here when the new one fires.
Annotations: ``summary`` (the alert's message), ``description``, ``memory_usage_mb``, ``threshold_mb``,
``percent``, ``limit_source``, ``host``, ``alert_id``, ``idempotency_key`` (``test`` for a test delivery).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from memmon.alerting.channel import Delivery, Receipt
from memmon.alerting.http import JsonPoster
from memmon.alerting.kinds import is_notice
from memmon.kits.isotime import iso_utc
from memmon.kits.redaction import redact_url, url_secrets
from memmon.model import Alert

ALERTNAME = "MemmonMemoryLevel"
ALERTS_PATH = "/api/v2/alerts"
_KEYS_KEPT = 10_000
"""At most this many idempotency keys of firing alerts are remembered for re-pushes."""


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class AlertmanagerChannel:
    """Pushes alert transitions (and periodic re-pushes of the firing ones) to one Alertmanager; a
    :class:`~memmon.alerting.channel.StatefulChannel`: it gets the silent resolutions too (an alert replaced by
    another level must end in Alertmanager)."""

    name = "alertmanager"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        instance: str,
        repush_seconds: float = 60.0,
        poster: JsonPoster | None = None,
        generator_url: str | None = None,
    ) -> None:
        """``url`` is the Alertmanager base URL (``http://127.0.0.1:9093``); ``instance`` the ``instance`` label."""
        if repush_seconds <= 0:
            raise ValueError("repush_seconds must be positive")
        self.url = url.rstrip("/")
        self.endpoint = self.url + ALERTS_PATH
        self.timeout = timeout
        self.instance = instance
        self.repush_seconds = repush_seconds
        self.generator_url = generator_url
        self._owns_poster = poster is None
        self._poster = poster or JsonPoster()
        self._keys: dict[str, str] = {}
        """fingerprint -> idempotency key of the firing transition, so that re-pushes keep the annotation."""

    def secrets(self) -> set[str]:
        """What error texts must never show: the URL's credentials, token-like path, query (see redaction)."""
        return url_secrets(self.url)

    def __repr__(self) -> str:
        return f"AlertmanagerChannel({redact_url(self.url)!r})"

    def labels(self, alert: Alert) -> dict[str, str]:
        """The identifying labels of ``alert``."""
        alertname = alert.metadata.get("alertname")
        labels = {
            "alertname": alertname if isinstance(alertname, str) and alertname else ALERTNAME,
            "severity": alert.severity.label,
            "component": alert.component,
            "target": alert.target,
            "instance": self.instance,
        }
        # Node mode: the Kubernetes identity of the target (namespace, pod, container), as Prometheus' own rules
        # label pod alerts, so one Alertmanager route serves both.
        extra = alert.metadata.get("labels")
        if isinstance(extra, Mapping):
            labels.update({str(k): str(v) for k, v in extra.items() if k not in labels})
        return labels

    def postable(
        self,
        alert: Alert,
        *,
        idempotency_key: str | None = None,
        test: bool = False,
        now: float | None = None,
    ) -> dict[str, Any]:
        """One ``postableAlert`` for ``alert`` as of ``now``."""
        current = time.time() if now is None else now
        if alert.state == "firing":
            ends_at = current + 4 * self.repush_seconds
        else:
            # Alertmanager rejects an endsAt before startsAt ("start time must be before end time").
            ends_at = max(alert.resolved_at if alert.resolved_at is not None else current, alert.started_at)
        annotations = {
            "summary": ("[TEST] " if test else "") + alert.message,
            "description": self._description(alert),
            "memory_usage_mb": f"{alert.memory_usage:.1f}",
            "threshold_mb": f"{alert.threshold:.1f}",
            "alert_id": alert.id,
        }
        percent = _number(alert.metadata.get("percent"))
        if percent is not None:
            annotations["percent"] = f"{percent:.1f}"
        for key in ("limit_source", "host"):
            value = alert.metadata.get(key)
            if value:
                annotations[key] = str(value)
        if idempotency_key is not None:
            annotations["idempotency_key"] = idempotency_key
        if test:
            annotations["test"] = "true"
        postable: dict[str, Any] = {
            "labels": self.labels(alert),
            "annotations": annotations,
            "startsAt": iso_utc(alert.started_at),
            "endsAt": iso_utc(ends_at),
        }
        if self.generator_url:
            postable["generatorURL"] = self.generator_url
        return postable

    @staticmethod
    def _description(alert: Alert) -> str:
        if is_notice(alert):  # an action and its result: no usage against a threshold
            return alert.message
        text = (
            f"{alert.component} of {alert.target}: {alert.memory_usage:.1f} MiB "
            f"against the {alert.severity.label} threshold {alert.threshold:.1f} MiB"
        )
        percent = _number(alert.metadata.get("percent"))
        if percent is not None:
            source = alert.metadata.get("limit_source")
            text += f" ({percent:.1f}% of the {source or 'effective'} limit)"
        host = alert.metadata.get("host")
        if host:
            text += f" on {host}"
        return text + ("." if alert.state == "firing" else "; resolved.")

    async def send(self, delivery: Delivery) -> Receipt:
        """Push one transition; :class:`~memmon.alerting.channel.DeliveryFailed` when Alertmanager refuses it."""
        alert = delivery.alert
        if alert.state == "firing" and not delivery.test:
            self._remember(alert.fingerprint, delivery.idempotency_key)
        else:
            self._keys.pop(alert.fingerprint, None)
        body = [self.postable(alert, idempotency_key=delivery.idempotency_key, test=delivery.test)]
        return await self._post(body)

    async def repush(self, alerts: Sequence[Alert]) -> Receipt:
        """Re-send ``alerts`` (the firing ones, every ``repush_seconds``) in one request, extending their endsAt.

        Each alert is rendered by its own state, so a resolved alert passed here stays resolved. An empty
        sequence sends nothing and returns ``Receipt(None, "nothing to re-push")``.
        """
        if not alerts:
            return Receipt(None, "nothing to re-push")
        now = time.time()
        body = [
            self.postable(alert, idempotency_key=self._keys.get(alert.fingerprint), now=now)
            for alert in alerts
        ]
        return await self._post(body)

    async def _post(self, body: list[dict[str, Any]]) -> Receipt:
        receipt = await self._poster.post_json(self.endpoint, body, timeout=self.timeout)
        # Alertmanager answers 200 with an empty body: say what was accepted instead.
        return Receipt(receipt.status, f"{len(body)} alert(s) accepted")

    def _remember(self, fingerprint: str, key: str) -> None:
        self._keys.pop(fingerprint, None)
        self._keys[fingerprint] = key
        while len(self._keys) > _KEYS_KEPT:
            del self._keys[next(iter(self._keys))]

    async def close(self) -> None:
        """Close the HTTP session if this channel created it."""
        if self._owns_poster:
            await self._poster.close()
