"""memmon in a Kubernetes pod: annotate the own pod, emit Events on it, and evict it (``kubernetes-evict``).

Three calls of the API server, made directly over HTTP with the pod's service-account token (no client library):

* ``PATCH /api/v1/namespaces/{ns}/pods/{pod}`` with ``Content-Type: application/merge-patch+json`` and
  ``{"metadata": {"annotations": {...}}}``; a ``null`` value removes a key (JSON merge patch, RFC 7386). The API
  server picks the patch flavour from the Content-Type; ``application/strategic-merge-patch+json`` behaves the same
  for the annotations map, and a plain ``application/json`` body is refused with 415 UnsupportedMediaType.
  https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/
  https://support.huaweicloud.com/intl/en-us/api-cci/cci_02_0070.html (the patch Content-Types)
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
  https://kubernetes.io/docs/reference/kubernetes-api/definitions/eviction-v1-policy/

Failures come back as a ``Status`` object (kind Status, status Failure, message, reason, code, details.
retryAfterSeconds): https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/status

Where to find the API server and credentials inside a pod (``KUBERNETES_SERVICE_HOST``/``_PORT``, and
``token``, ``ca.crt``, ``namespace`` under /var/run/secrets/kubernetes.io/serviceaccount):
https://kubernetes.io/docs/tasks/run-application/access-api-from-pod/ . Projected service-account tokens expire
(an hour by default) and the kubelet rewrites the file before they do, so the token is re-read every minute, as
client-go does, and at once when the API server answers 401.

The pod needs RBAC for ``patch`` on pods, ``create`` on events and ``create`` on pods/eviction in its namespace.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from memmon.kits.retryafter import parse_retry_after
from memmon.model import ActionResult, Level, frozen_mapping

log = logging.getLogger("memmon.kubernetes")

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

COMPONENT = "memmon"
"""``source.component`` of the Events memmon emits."""

ANNOTATION_LEVEL = "memmon.io/level"
ANNOTATION_SINCE = "memmon.io/since"
ANNOTATION_REASON = "memmon.io/reason"
REASON_ANNOTATION_CHARS = 200

EVENT_REASONS: Mapping[Level, str] = {
    Level.OK: "MemoryRecovered",
    Level.WARNING: "MemoryWarning",
    Level.CRITICAL: "MemoryCritical",
    Level.EMERGENCY: "MemoryEmergency",
}
RESTART_EVENT_REASON = "GracefulRestart"
EVENT_TYPES = ("Normal", "Warning")
EVENT_MESSAGE_CHARS = 1024
"""Longer Event messages are cut (events.k8s.io caps its ``note`` at 1 kB)."""

TOKEN_REFRESH_SECONDS = 60.0
"""How often the token file is re-read (client-go's cached file token source does it every minute)."""

MERGE_PATCH = "application/merge-patch+json"
_ANSWER_EXCERPT = 200
_MAX_RETRY_AFTER = 60.0
"""A server's Retry-After is honoured up to this many seconds."""

Sleep = Callable[[float], Awaitable[None]]


# -- configuration ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KubeConfig:
    """Where the API server is and who memmon is there: its own pod."""

    host: str
    """``https://<KUBERNETES_SERVICE_HOST>:<KUBERNETES_SERVICE_PORT>`` in a cluster; may end in a path prefix."""
    token: str = field(repr=False)
    """The bearer token as first read; the client re-reads ``token_file`` (when set) as the kubelet rotates it."""
    ca_file: str | None
    """The CA bundle that signed the API server's certificate; None = the system CAs (or plain http)."""
    namespace: str
    pod: str
    token_file: str | None = None
    """Where ``token`` came from (re-read every minute and on a 401); None = ``token`` is fixed."""
    pod_uid: str | None = None
    """``POD_UID`` (downward API ``metadata.uid``) when exposed; else learnt from the first annotation patch."""

    @classmethod
    def in_cluster(
        cls,
        environ: Mapping[str, str] = os.environ,
        sa_dir: Path = SERVICE_ACCOUNT_DIR,
    ) -> KubeConfig | None:
        """The pod's own configuration, or None outside a cluster (:func:`why_not_in_cluster` says why).

        ``MEMMON_KUBE_API`` (an ``http(s)://host:port`` URL) replaces the service-host variables and
        ``MEMMON_KUBE_TOKEN_FILE``/``MEMMON_KUBE_CA_FILE`` the service-account files, for tests and for running
        outside the cluster. ``POD_NAME`` is required, ``POD_NAMESPACE`` falls back to the service-account
        ``namespace`` file, ``POD_UID`` is optional.
        """
        found = _resolve(environ, sa_dir)
        return found if isinstance(found, KubeConfig) else None


def why_not_in_cluster(environ: Mapping[str, str] = os.environ, sa_dir: Path = SERVICE_ACCOUNT_DIR) -> str:
    """Why :meth:`KubeConfig.in_cluster` gives None for these arguments; ``""`` when it gives a config."""
    found = _resolve(environ, sa_dir)
    return "" if isinstance(found, KubeConfig) else found


def _env(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip()


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _resolve(environ: Mapping[str, str], sa_dir: Path) -> KubeConfig | str:
    override = _env(environ, "MEMMON_KUBE_API")
    if override:
        parts = urlsplit(override)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return f"MEMMON_KUBE_API={override!r} is not an http(s)://host[:port] URL"
        host = override.rstrip("/")
    else:
        service_host = _env(environ, "KUBERNETES_SERVICE_HOST")
        if not service_host:
            return (
                "not in a Kubernetes pod: KUBERNETES_SERVICE_HOST is not set "
                "(set MEMMON_KUBE_API and MEMMON_KUBE_TOKEN_FILE to reach an API server from outside)"
            )
        port = (
            _env(environ, "KUBERNETES_SERVICE_PORT_HTTPS")
            or _env(environ, "KUBERNETES_SERVICE_PORT")
            or "443"
        )
        if ":" in service_host and not service_host.startswith("["):  # an IPv6 address
            service_host = f"[{service_host}]"
        host = f"https://{service_host}:{port}"

    token_file = Path(_env(environ, "MEMMON_KUBE_TOKEN_FILE") or sa_dir / "token")
    token = _read_text(token_file)
    if token is None:
        return f"no service-account token: cannot read {token_file} (is automountServiceAccountToken false?)"
    if not token:
        return f"the service-account token file {token_file} is empty"

    ca_setting = _env(environ, "MEMMON_KUBE_CA_FILE")
    if ca_setting:
        if not Path(ca_setting).is_file():
            return f"MEMMON_KUBE_CA_FILE={ca_setting} is not a file"
        ca_file: str | None = ca_setting
    elif not override and (sa_dir / "ca.crt").is_file():
        ca_file = str(sa_dir / "ca.crt")
    else:
        ca_file = None

    namespace = _env(environ, "POD_NAMESPACE") or _read_text(sa_dir / "namespace") or ""
    if not namespace:
        return f"the pod's namespace is unknown: POD_NAMESPACE is not set and {sa_dir / 'namespace'} is unreadable"
    pod = _env(environ, "POD_NAME")
    if not pod:
        return "POD_NAME is not set: expose it with the downward API (env valueFrom fieldRef metadata.name)"
    return KubeConfig(
        host=host,
        token=token,
        ca_file=ca_file,
        namespace=namespace,
        pod=pod,
        token_file=str(token_file),
        pod_uid=_env(environ, "POD_UID") or None,
    )


# -- the client ------------------------------------------------------------------------------------------------


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


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class KubernetesClient:
    """The three calls memmon makes about its own pod, through one lazily created ``aiohttp`` session.

    Every failure raises :class:`KubeError`: HTTP 429, 408 and 5xx, connection errors and timeouts are
    ``retryable``; other statuses (401, 403, 404, 415, 422...) are not. The caller decides whether to retry.
    """

    def __init__(
        self,
        config: KubeConfig,
        *,
        timeout: float = 5.0,
        token_refresh: float = TOKEN_REFRESH_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.timeout = timeout
        self.token_refresh = token_refresh
        self.monotonic = monotonic
        self.wall_clock = wall_clock
        self.pod_uid: str | None = config.pod_uid
        self.last_status: int | None = None
        """The HTTP status of the latest answer (None when the latest call got none)."""
        self._token = config.token
        self._token_read_at: float | None = None
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event_serial = 0

    # -- paths

    @property
    def pod_path(self) -> str:
        return f"/api/v1/namespaces/{quote(self.config.namespace, safe='')}/pods/{quote(self.config.pod, safe='')}"

    @property
    def events_path(self) -> str:
        return f"/api/v1/namespaces/{quote(self.config.namespace, safe='')}/events"

    # -- the calls

    async def get_pod(self) -> dict[str, Any]:
        """The own pod object (needs ``get`` on pods; memmon itself does not call this)."""
        _, answer = await self._request("GET", self.pod_path)
        self._learn_uid(answer)
        return answer

    async def annotate_pod(self, annotations: Mapping[str, str | None]) -> None:
        """Merge ``annotations`` into the own pod's (a None value removes that key)."""
        body = {"metadata": {"annotations": dict(annotations)}}
        _, answer = await self._request("PATCH", self.pod_path, body=body, content_type=MERGE_PATCH)
        self._learn_uid(answer)

    def new_event_name(self) -> str:
        """A fresh Event name, ``<pod>.<hex nanoseconds>``; pass it to every retry of one Event."""
        self._event_serial += 1
        return f"{self.config.pod}.{time.time_ns() + self._event_serial:x}"

    async def create_event(
        self, reason: str, message: str, *, type: str = "Normal", name: str | None = None
    ) -> None:
        """A core/v1 Event about the own pod, from ``source.component`` memmon.

        ``name`` makes retries idempotent: an Event of that name already there (409 AlreadyExists, an earlier
        attempt that landed although its answer was lost) counts as created.
        """
        if type not in EVENT_TYPES:
            raise ValueError(f"an Event's type is Normal or Warning, not {type!r}")
        now = rfc3339(self.wall_clock())
        involved: dict[str, str] = {
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
            "message": _one_line(message, EVENT_MESSAGE_CHARS),
            "type": type,
            "source": {"component": COMPONENT},
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
        session, self._session, self._loop = self._session, None, None
        if session is not None and not session.closed:
            await session.close()

    # -- machinery

    def _learn_uid(self, answer: Mapping[str, Any]) -> None:
        metadata = answer.get("metadata")
        if isinstance(metadata, dict) and isinstance(metadata.get("uid"), str) and metadata["uid"]:
            self.pod_uid = metadata["uid"]

    def _reload_token(self) -> bool:
        """Re-read the token file; True when the token changed. An unreadable or empty file keeps the old one."""
        self._token_read_at = self.monotonic()
        if self.config.token_file is None:
            return False
        text = _read_text(Path(self.config.token_file))
        if not text or text == self._token:
            return False
        self._token = text
        log.debug("service-account token reloaded from %s", self.config.token_file)
        return True

    def _current_token(self) -> str:
        if self.config.token_file is not None and (
            self._token_read_at is None or self.monotonic() - self._token_read_at >= self.token_refresh
        ):
            self._reload_token()
        return self._token

    def _session_for_loop(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            ssl_setting: ssl.SSLContext | bool = True
            if self.config.host.lower().startswith("https://"):
                ssl_setting = ssl.create_default_context(cafile=self.config.ca_file)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl_setting),
                headers={"User-Agent": _user_agent(), "Accept": "application/json"},
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._loop = loop
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: object | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, dict[str, Any]]:
        """One call (two when a 401 reveals a rotated token); the decoded JSON object answered, or KubeError."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode("utf-8")
        status, text, retry_after_header = await self._send(method, path, data, content_type)
        if status == 401 and self._reload_token():
            status, text, retry_after_header = await self._send(method, path, data, content_type)
        answer = _decode_object(text)
        if 200 <= status < 300:
            return status, answer
        raise _failure(method, path, status, answer, text, retry_after_header)

    async def _send(
        self, method: str, path: str, data: bytes | None, content_type: str
    ) -> tuple[int, str, str | None]:
        headers = {"Authorization": f"Bearer {self._current_token()}"}
        if data is not None:
            headers["Content-Type"] = content_type
        url = self.config.host.rstrip("/") + path
        self.last_status = None
        session = self._session_for_loop()
        try:
            async with session.request(
                method,
                url,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,
            ) as response:
                raw = await response.read()
                self.last_status = response.status
                return (
                    response.status,
                    raw.decode("utf-8", errors="replace"),
                    response.headers.get("Retry-After"),
                )
        except TimeoutError:
            raise KubeError(
                f"{method} {path}: no answer from {self.config.host} within {self.timeout:g}s", retryable=True
            ) from None
        except aiohttp.ClientConnectorError as exc:
            # A certificate the CA bundle does not accept will not be accepted a second later either.
            raise KubeError(
                f"{method} {path}: cannot connect to {self.config.host} ({_connect_reason(exc)})",
                retryable=not isinstance(exc, aiohttp.ClientSSLError),
            ) from None
        except aiohttp.InvalidURL:
            raise KubeError(f"invalid API server URL {self.config.host!r}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise KubeError(
                f"{method} {path}: {type(exc).__name__} from {self.config.host}", retryable=True
            ) from None


def _user_agent() -> str:
    import memmon

    return f"memmon/{memmon.__version__}"


def _decode_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _failure(
    method: str, path: str, status: int, answer: Mapping[str, Any], text: str, retry_after_header: str | None
) -> KubeError:
    """A non-2xx answer as a KubeError, with the Status object's reason and message when there is one."""
    reason = answer.get("reason") if answer.get("kind") == "Status" else None
    message = answer.get("message") if answer.get("kind") == "Status" else None
    said = _one_line(str(message) if message else text, _ANSWER_EXCERPT)
    summary = (
        f"{method} {path} answered HTTP {status}"
        + (f" {reason}" if reason else "")
        + (f": {said}" if said else "")
    )
    retry_after = parse_retry_after(retry_after_header)
    details = answer.get("details")
    if retry_after is None and isinstance(details, dict):
        seconds = details.get("retryAfterSeconds")
        if isinstance(seconds, int | float) and seconds > 0:
            retry_after = float(seconds)
    retryable = status in (408, 429) or status >= 500
    return KubeError(
        summary,
        status=status,
        retryable=retryable,
        retry_after=retry_after if retryable else None,
        reason=str(reason) if reason else None,
    )


def _connect_reason(exc: aiohttp.ClientConnectorError) -> str:
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS: {type(exc).__name__}"
    error = exc.os_error
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError):
        return "connect timed out"
    return error.strerror or type(error).__name__


# -- reporting level changes on the pod ------------------------------------------------------------------------


class PodReporter:
    """On each level change: annotate the own pod (memmon.io/level, memmon.io/since (RFC 3339), memmon.io/reason
    (<= 200 chars)) and emit an Event with reason MemoryWarning / MemoryCritical / MemoryEmergency / MemoryRecovered
    (type Warning for warning and above, Normal for recovered). API failures never raise: they are retried
    (3 attempts, exponential backoff 0.5 s doubling), counted in ``self.failures`` (int) with
    ``self.last_error: str | None``, and logged once per failure streak."""

    attempts = 3
    backoff = 0.5
    max_retry_after = 5.0
    """A server's Retry-After is honoured up to this long: reporting must not hold the monitor up."""

    def __init__(
        self,
        client: KubernetesClient,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.client = client
        self.clock = clock
        self.sleep = sleep
        self.failures = 0
        """Calls (annotation or Event) that failed after their attempts, since start."""
        self.last_error: str | None = None
        self.streak = 0
        """Failures since the last success; the first of a streak is logged as a warning, the rest at debug."""

    async def level_changed(self, level: Level, previous: Level, reason: str) -> bool:
        """Annotate the pod and emit the level's Event; True when both calls succeeded.

        ``level == previous`` (a refresh, at start say) only sets the annotations.
        """
        since = rfc3339(self.clock())
        annotations: dict[str, str | None] = {
            ANNOTATION_LEVEL: level.label,
            ANNOTATION_SINCE: since,
            ANNOTATION_REASON: _one_line(reason, REASON_ANNOTATION_CHARS),
        }
        annotated = await self._call("annotate the pod", lambda: self.client.annotate_pod(annotations))
        if level == previous:
            return annotated
        if level == Level.OK:
            message = f"Memory recovered: {previous.label} -> ok. {reason}"
        else:
            message = f"Memory level {previous.label} -> {level.label}. {reason}"
        event_type = "Normal" if level == Level.OK else "Warning"
        name = self.client.new_event_name()
        emitted = await self._call(
            f"emit the {EVENT_REASONS[level]} event",
            lambda: self.client.create_event(EVENT_REASONS[level], message, type=event_type, name=name),
        )
        return annotated and emitted

    async def restart_event(self, message: str) -> bool:
        """A Warning Event with reason GracefulRestart on the own pod; True when it was created."""
        name = self.client.new_event_name()
        return await self._call(
            "emit the GracefulRestart event",
            lambda: self.client.create_event(RESTART_EVENT_REASON, message, type="Warning", name=name),
        )

    async def _call(self, what: str, call: Callable[[], Awaitable[None]]) -> bool:
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                await call()
            except KubeError as exc:
                error: Exception = exc
                retryable = exc.retryable
                wait = max(delay, min(exc.retry_after or 0.0, self.max_retry_after))
            except Exception as exc:  # the contract: reporting never raises into the monitor
                error, retryable, wait = exc, False, delay
            else:
                if self.streak:
                    log.info(
                        "Kubernetes API reachable again: %s succeeded after %d failed call(s)",
                        what,
                        self.streak,
                    )
                self.streak = 0
                return True
            if not retryable or attempt == self.attempts:
                break
            await self.sleep(wait)
            delay *= 2
        self.failures += 1
        self.streak += 1
        self.last_error = f"{what}: {error}"
        if self.streak == 1:
            log.warning(
                "cannot %s (%d attempt(s)): %s; further failures are logged at debug", what, attempt, error
            )
        else:
            log.debug("cannot %s (%d attempt(s)): %s", what, attempt, error)
        return False


# -- the kubernetes-evict graceful restart ---------------------------------------------------------------------


class EvictRestart:
    """The `kubernetes-evict` graceful-restart strategy: ask the API server to evict the own pod (respects PDBs).

    429 (a PodDisruptionBudget allows no disruption now) and 5xx are retried with exponential backoff
    (``backoff``, doubling, at least the server's Retry-After) up to ``attempts`` in all. When they run out the
    result has ``success=False`` and says why, so the caller can fall back to another strategy.
    """

    name = "restart:kubernetes-evict"

    def __init__(
        self,
        client: KubernetesClient,
        *,
        attempts: int = 5,
        backoff: float = 1.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.client = client
        self.attempts = attempts
        self.backoff = backoff
        self.sleep = sleep
        self.clock = clock
        self.monotonic = monotonic

    async def restart(self, reason: str) -> ActionResult:
        """Evict the own pod; the result's detail carries ``attempts`` and the last HTTP ``status``."""
        started_at, start = self.clock(), self.monotonic()
        config = self.client.config
        detail: dict[str, object] = {"pod": config.pod, "namespace": config.namespace, "reason": reason}
        delay = self.backoff
        failure: KubeError | None = None
        attempt = 0
        for attempt in range(1, self.attempts + 1):
            try:
                await self.client.evict_pod()
            except KubeError as exc:
                failure = exc
                if not exc.retryable or attempt == self.attempts:
                    break
                wait = max(delay, min(exc.retry_after or 0.0, _MAX_RETRY_AFTER))
                log.info(
                    "eviction attempt %d/%d refused (%s); retrying in %.1fs",
                    attempt,
                    self.attempts,
                    exc,
                    wait,
                )
                await self.sleep(wait)
                delay *= 2
            else:
                detail.update(attempts=attempt, status=self.client.last_status)
                log.warning("eviction of pod %s/%s accepted: %s", config.namespace, config.pod, reason)
                return ActionResult(
                    action=self.name,
                    success=True,
                    started_at=started_at,
                    duration_seconds=self.monotonic() - start,
                    detail=frozen_mapping(detail),
                )
        assert failure is not None  # the loop ran at least once and did not return
        detail.update(attempts=attempt, status=failure.status, last_error=str(failure))
        plural = "attempt" if attempt == 1 else "attempts"
        if failure.status == 429:
            error = f"eviction blocked by a PodDisruptionBudget (429) after {attempt} {plural}"
        else:
            error = f"eviction failed after {attempt} {plural}: {failure}"
        log.warning("%s", error)
        return ActionResult(
            action=self.name,
            success=False,
            started_at=started_at,
            duration_seconds=self.monotonic() - start,
            detail=frozen_mapping(detail),
            error=error,
        )
