"""A small client of the Kubernetes API for the pod it runs in: annotate it, emit Events on it, evict it.

Three calls of the API server, made directly over HTTP with the pod's service-account token (no client library),
through the shared :class:`~memmon.kits.http_client.HttpClient` (redirects are not followed: the API server does
not send them, and a bearer token must not travel):

* ``PATCH /api/v1/namespaces/{ns}/pods/{pod}`` with ``Content-Type: application/merge-patch+json`` and
  ``{"metadata": {"annotations": {...}}}``; a ``null`` value removes a key (JSON merge patch, RFC 7386). The API
  server picks the patch flavour from the Content-Type; ``application/strategic-merge-patch+json`` behaves the same
  for the annotations map, and a plain ``application/json`` body is refused with 415 UnsupportedMediaType.
  https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/
* ``POST /api/v1/namespaces/{ns}/events``: a core/v1 Event whose ``involvedObject`` is the pod (kind Pod,
  apiVersion v1, namespace, name, uid), with ``reason``, ``message``, ``type`` (Normal or Warning),
  ``source.component``, ``firstTimestamp``/``lastTimestamp`` (RFC 3339, whole seconds), ``count`` and a
  ``metadata.name`` (``<pod>.<hex nanoseconds>``, as client-go's recorder names them).
  https://docs.okd.io/3.9/rest_api/api/v1.Event.html (v1.Event schema and "Create an Event")
  https://kubernetes.io/docs/reference/kubernetes-api/definitions/event-source-v1/ (source.component)
* ``POST /api/v1/namespaces/{ns}/pods/{pod}/eviction`` with
  ``{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": ns}}``: the API server
  answers 200/201 when the pod may go, 429 Too Many Requests while a PodDisruptionBudget forbids it (retry
  later), 500 when the budgets are misconfigured (several select the pod).
  https://kubernetes.io/docs/concepts/scheduling-eviction/api-eviction/

Failures come back as a ``Status`` object (kind Status, status Failure, message, reason, code, details.
retryAfterSeconds): https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/status . The token is
re-read every minute, as client-go does, and at once when the API server answers 401.

The pod needs RBAC for ``patch`` on pods, ``create`` on events and ``create`` on pods/eviction in its namespace.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from memmon.kits.http_client import HttpAnswer, HttpClient, HttpFailure, one_line
from memmon.kits.kubeconfig import TOKEN_REFRESH_SECONDS, BearerToken, KubeConfig

log = logging.getLogger("memmon.kubernetes")

EVENT_TYPES = ("Normal", "Warning")
EVENT_MESSAGE_CHARS = 1024
"""Longer Event messages are cut (events.k8s.io caps its ``note`` at 1 kB)."""
MERGE_PATCH = "application/merge-patch+json"
_ANSWER_EXCERPT = 200


class KubeError(Exception):
    """A call that failed: ``status`` is the HTTP status (None when no answer came), ``reason`` the Status
    object's reason (``TooManyRequests``, ``Forbidden``...), ``retry_after`` in seconds when the server said."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.reason = reason


def rfc3339(timestamp: float) -> str:
    """``2024-01-15T10:30:00Z``: RFC 3339 in UTC, whole seconds (the form of a Kubernetes ``Time``)."""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def product_user_agent(product: str) -> str:
    """``<product>/<version>`` of an installed distribution; just ``product`` when it is not installed."""
    try:
        return f"{product}/{importlib.metadata.version(product)}"
    except importlib.metadata.PackageNotFoundError:
        return product


class KubernetesClient:
    """The calls made about the own pod. Every failure raises :class:`KubeError`: HTTP 429, 408 and 5xx,
    connection errors and timeouts are ``retryable``; other statuses (401, 403, 404, 415, 422...) and a TLS
    handshake the CA bundle refuses are not. The caller decides whether to retry."""

    def __init__(
        self,
        config: KubeConfig,
        *,
        timeout: float = 5.0,
        token_refresh: float = TOKEN_REFRESH_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        component: str = "memmon",
        user_agent: str | None = None,
    ) -> None:
        """``component`` is the Events' ``source.component``; ``user_agent`` defaults to ``<component>/<version>``."""
        self.config = config
        self.timeout = timeout
        self.token_refresh = token_refresh
        self.monotonic = monotonic
        self.wall_clock = wall_clock
        self.component = component
        self.pod_uid: str | None = config.pod_uid
        self.last_status: int | None = None
        """The HTTP status of the latest answer (None when the latest call got none)."""
        self._token = BearerToken(config, refresh=token_refresh, monotonic=monotonic)
        self._http = HttpClient(
            user_agent=user_agent or product_user_agent(component),
            headers={"Accept": "application/json"},
            ca_file=config.ca_file if config.host.lower().startswith("https://") else None,
        )
        self._event_serial = 0

    @property
    def pod_path(self) -> str:
        return f"/api/v1/namespaces/{quote(self.config.namespace, safe='')}/pods/{quote(self.config.pod, safe='')}"

    @property
    def events_path(self) -> str:
        return f"/api/v1/namespaces/{quote(self.config.namespace, safe='')}/events"

    async def get_pod(self) -> dict[str, Any]:
        """The own pod object (needs ``get`` on pods)."""
        answer = await self._request("GET", self.pod_path)
        self._learn_uid(answer)
        return answer

    async def annotate_pod(self, annotations: Mapping[str, str | None]) -> None:
        """Merge ``annotations`` into the own pod's (a None value removes that key)."""
        body = {"metadata": {"annotations": dict(annotations)}}
        self._learn_uid(await self._request("PATCH", self.pod_path, body=body, content_type=MERGE_PATCH))

    def new_event_name(self) -> str:
        """A fresh Event name, ``<pod>.<hex nanoseconds>``; pass it to every retry of one Event."""
        self._event_serial += 1
        return f"{self.config.pod}.{time.time_ns() + self._event_serial:x}"

    async def create_event(
        self, reason: str, message: str, *, type: str = "Normal", name: str | None = None
    ) -> None:
        """A core/v1 Event about the own pod, from ``source.component``.

        ``name`` makes retries idempotent: an Event of that name already there (409 AlreadyExists, an earlier
        attempt that landed although its answer was lost) counts as created.
        """
        if type not in EVENT_TYPES:
            raise ValueError(f"an Event's type is Normal or Warning, not {type!r}")
        now = rfc3339(self.wall_clock())
        involved = {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": self.config.namespace,
            "name": self.config.pod,
        }
        if self.pod_uid:
            involved["uid"] = self.pod_uid
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name or self.new_event_name(), "namespace": self.config.namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": one_line(message, EVENT_MESSAGE_CHARS),
            "type": type,
            "source": {"component": self.component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._request("POST", self.events_path, body=body)
        except KubeError as exc:
            if exc.status == 409 and name is not None:
                return
            raise

    async def evict_pod(self) -> None:
        """Ask for the own pod's eviction; ``KubeError(status=429, retryable=True)`` while a PDB forbids it."""
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": self.config.pod, "namespace": self.config.namespace},
        }
        await self._request("POST", self.pod_path + "/eviction", body=body)

    async def close(self) -> None:
        """Close the session (idempotent; a later call opens a new one)."""
        await self._http.close()

    def _learn_uid(self, answer: Mapping[str, Any]) -> None:
        metadata = answer.get("metadata")
        if isinstance(metadata, dict) and isinstance(metadata.get("uid"), str) and metadata["uid"]:
            self.pod_uid = metadata["uid"]

    async def _request(
        self, method: str, path: str, *, body: object | None = None, content_type: str = "application/json"
    ) -> dict[str, Any]:
        """One call (two when a 401 reveals a rotated token); the decoded JSON object answered, or KubeError."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode("utf-8")
        answer = await self._send(method, path, data, content_type)
        if answer.status == 401 and self._token.reload():
            answer = await self._send(method, path, data, content_type)
        decoded = _decode_object(answer.text)
        if answer.ok:
            return decoded
        raise _failure(method, path, answer, decoded)

    async def _send(self, method: str, path: str, data: bytes | None, content_type: str) -> HttpAnswer:
        headers = {"Authorization": f"Bearer {self._token.current()}"}
        if data is not None:
            headers["Content-Type"] = content_type
        self.last_status = None
        try:
            answer = await self._http.request(
                method,
                self.config.host.rstrip("/") + path,
                body=data,
                headers=headers,
                timeout=self.timeout,
                follow_redirects=False,
                answer_bytes=None,  # a whole pod object, to decode
                secrets=(),  # API paths name namespaces and pods, no secrets; the bearer token is scrubbed anyway
            )
        except HttpFailure as failure:
            # A certificate the CA bundle does not accept will not be accepted a second later either.
            raise KubeError(
                f"{method} {path}: {failure.reason}", retryable=failure.retryable and not failure.tls
            ) from None
        self.last_status = answer.status
        return answer


def _decode_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _failure(method: str, path: str, answer: HttpAnswer, decoded: Mapping[str, Any]) -> KubeError:
    """A non-2xx answer as a KubeError, with the Status object's reason and message when there is one."""
    status_object = decoded.get("kind") == "Status"
    reason = decoded.get("reason") if status_object else None
    message = decoded.get("message") if status_object else None
    said = answer.excerpt(str(message) if message else None, _ANSWER_EXCERPT)
    summary = (
        f"{method} {path} answered HTTP {answer.status}"
        + (f" {reason}" if reason else "")
        + (f": {said}" if said else "")
    )
    retry_after = answer.retry_after
    details = decoded.get("details")
    if retry_after is None and isinstance(details, dict):
        seconds = details.get("retryAfterSeconds")
        if isinstance(seconds, int | float) and seconds > 0:
            retry_after = float(seconds)
    return KubeError(
        summary,
        status=answer.status,
        retryable=answer.retryable,
        retry_after=retry_after if answer.retryable else None,
        reason=str(reason) if reason else None,
    )
