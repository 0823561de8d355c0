"""A strict stand-in for the Kubernetes API server, on 127.0.0.1: one pod, its annotations, Events, evictions.

It answers like kube-apiserver does and refuses what kube-apiserver would refuse, each time with a ``Status``
object (kind Status, apiVersion v1, status Failure, message, reason, code): a missing or wrong bearer token
(401 Unauthorized), an unknown path (404 NotFound) or method (405 MethodNotAllowed), an unknown pod (404,
``pods "x" not found``), a PATCH that is not a JSON merge patch or strategic merge patch (415
UnsupportedMediaType; JSON patch is not served here), a POST body that is not ``application/json`` (415), a
body that is not JSON (400 BadRequest), an Eviction whose apiVersion/kind/name/namespace do not match the URL
(400), an Event whose involvedObject is not this pod (kind Pod, apiVersion v1, its namespace and name, its uid
when one is sent) or that lacks a reason, a name, a source.component or a Normal/Warning type (422 Invalid), an
Event name used twice (409 AlreadyExists).

Switches: ``pdb_blocks`` answers that many evictions with 429 TooManyRequests (a PodDisruptionBudget allows no
disruption), with a ``Retry-After`` header; ``fail_next`` answers the next requests (after authentication) with
these statuses. ``requests`` records each accepted request; ``answers`` every (method, path, status).
"""

from __future__ import annotations

import json
import re
import ssl
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

NAMESPACE = "shop"
POD = "app-7d9f"
POD_UID = "5d2c3a4e-9f1b-4c8e-a1d7-3b6f0e2c9a81"
TOKEN = "standin-token-aaaa"

MERGE_PATCH_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "AlreadyExists",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_POD_PATH = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/]+)$")
_EVICTION_PATH = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/]+)/eviction$")
_EVENTS_PATH = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/events$")


class Refused(Exception):
    """Answer ``code`` with a Status object."""

    def __init__(self, code: int, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


@dataclass(frozen=True)
class Request:
    """An accepted request."""

    method: str
    path: str
    content_type: str | None
    body: Any
    token: str


def status_object(code: int, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``Status`` as kube-apiserver writes it for a failure."""
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": _REASONS.get(code, "Unknown"),
        "code": code,
    }
    if details is not None:
        status["details"] = details
    return status


def valid_annotation_key(key: str) -> bool:
    """``[prefix/]name``: a DNS-subdomain prefix (<= 253) and a qualified name (<= 63)."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_QUALIFIED_NAME.match(name))


@dataclass
class KubeStandin:
    """The stand-in server; ``async with KubeStandin() as api`` starts it on 127.0.0.1 at a free port."""

    token: str = TOKEN
    namespace: str = NAMESPACE
    pod_name: str = POD
    pdb_blocks: int = 0
    """Answer this many evictions with 429 TooManyRequests."""
    retry_after: int = 1
    """Seconds in the Retry-After header (and details.retryAfterSeconds) of those 429s."""
    fail_next: list[int] = field(default_factory=list)
    """Statuses to answer the next authenticated requests with, first first."""
    ssl_context: ssl.SSLContext | None = None
    """Serve HTTPS with this context (a server-side context holding a certificate) instead of plain HTTP."""
    requests: list[Request] = field(default_factory=list)
    answers: list[tuple[str, str, int]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    evictions: list[dict[str, Any]] = field(default_factory=list)
    pod: dict[str, Any] = field(init=False)
    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)
    _port: int = field(default=0, init=False, repr=False)
    _resource_version: int = field(default=1000, init=False, repr=False)

    def __post_init__(self) -> None:
        self.pod = {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": self.pod_name,
                "namespace": self.namespace,
                "uid": POD_UID,
                "resourceVersion": str(self._resource_version),
                "labels": {"app": "shop"},
                "annotations": {"kubectl.kubernetes.io/default-container": "app"},
            },
            "spec": {
                "containers": [{"name": "app", "image": "shop:1"}, {"name": "memmon", "image": "memmon:0.1"}]
            },
            "status": {"phase": "Running"},
        }

    # -- lifecycle

    @property
    def url(self) -> str:
        scheme = "http" if self.ssl_context is None else "https"
        return f"{scheme}://127.0.0.1:{self._port}"

    async def start(self) -> KubeStandin:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> KubeStandin:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- conveniences for tests

    @property
    def annotations(self) -> dict[str, str]:
        annotations: dict[str, str] = self.pod["metadata"].get("annotations", {})
        return annotations

    def statuses(self) -> list[int]:
        return [status for _, _, status in self.answers]

    # -- the server

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        try:
            token = self._authenticate(request)
            if self.fail_next:
                code = self.fail_next.pop(0)
                raise Refused(code, f"stand-in: scripted failure {code}")
            response = await self._route(request, token)
        except Refused as refused:
            headers = {}
            if refused.code == 429 and refused.details and "retryAfterSeconds" in refused.details:
                headers["Retry-After"] = str(refused.details["retryAfterSeconds"])
            self.answers.append((request.method, path, refused.code))
            return web.json_response(
                status_object(refused.code, refused.message, refused.details),
                status=refused.code,
                headers=headers,
            )
        self.answers.append((request.method, path, response.status))
        return response

    def _authenticate(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or token != self.token:
            raise Refused(401, "Unauthorized")
        return token

    async def _route(self, request: web.Request, token: str) -> web.StreamResponse:
        path, method = request.path, request.method
        if match := _EVICTION_PATH.match(path):
            self._allow(method, "POST")
            return await self._evict(request, token, match["ns"], match["name"])
        if match := _POD_PATH.match(path):
            self._allow(method, "GET", "PATCH")
            pod = self._find_pod(match["ns"], match["name"])
            if method == "GET":
                self.requests.append(Request(method, path, None, None, token))
                return web.json_response(pod)
            return await self._patch(request, token, pod)
        if match := _EVENTS_PATH.match(path):
            self._allow(method, "GET", "POST")
            if method == "GET":
                return web.json_response(
                    {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": self.events}
                )
            return await self._create_event(request, token, match["ns"])
        raise Refused(404, "the server could not find the requested resource")

    @staticmethod
    def _allow(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise Refused(405, f"the server does not allow this method on the requested resource ({method})")

    def _find_pod(self, namespace: str, name: str) -> dict[str, Any]:
        if namespace != self.namespace or name != self.pod_name:
            raise Refused(404, f'pods "{name}" not found', details={"name": name, "kind": "pods"})
        return self.pod

    @staticmethod
    async def _json_body(request: web.Request, accepted: tuple[str, ...]) -> Any:
        if request.content_type not in accepted:
            raise Refused(
                415,
                "the body of the request was in an unknown format - accepted media types include: "
                + ", ".join(accepted),
            )
        raw = await request.read()
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise Refused(400, f"the body of the request could not be decoded as JSON: {exc}") from None

    def _bump(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    async def _patch(self, request: web.Request, token: str, pod: dict[str, Any]) -> web.StreamResponse:
        body = await self._json_body(request, MERGE_PATCH_TYPES)
        if not isinstance(body, dict):
            raise Refused(400, "a merge patch must be a JSON object")
        if set(body) - {"metadata"} or not isinstance(body.get("metadata"), dict):
            raise Refused(422, "stand-in: only metadata.annotations may be patched")
        metadata = body["metadata"]
        if set(metadata) - {"annotations"} or not isinstance(metadata.get("annotations"), dict):
            raise Refused(422, "stand-in: only metadata.annotations may be patched")
        changes = metadata["annotations"]
        for key, value in changes.items():
            if not valid_annotation_key(key):
                raise Refused(
                    422, f'Pod "{self.pod_name}" is invalid: metadata.annotations: Invalid value: "{key}"'
                )
            if value is not None and not isinstance(value, str):
                raise Refused(
                    400, f"annotation {key!r}: cannot unmarshal {type(value).__name__} into a string"
                )
        annotations = pod["metadata"].setdefault("annotations", {})
        for key, value in changes.items():
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = value
        pod["metadata"]["resourceVersion"] = self._bump()
        self.requests.append(Request(request.method, request.path, request.content_type, body, token))
        return web.json_response(pod)

    async def _evict(self, request: web.Request, token: str, namespace: str, name: str) -> web.StreamResponse:
        pod = self._find_pod(namespace, name)
        body = await self._json_body(request, ("application/json",))
        if not isinstance(body, dict):
            raise Refused(400, "the body of an eviction must be an Eviction object")
        if body.get("apiVersion") != "policy/v1" or body.get("kind") != "Eviction":
            raise Refused(
                400, f"expected policy/v1 Eviction, got {body.get('apiVersion')} {body.get('kind')}"
            )
        metadata = body.get("metadata")
        if not isinstance(metadata, dict) or metadata.get("name") != name:
            raise Refused(400, "name in URL does not match name in Eviction object")
        if metadata.get("namespace") != namespace:
            raise Refused(
                400, "the namespace of the provided object does not match the namespace sent on the request"
            )
        if self.pdb_blocks > 0:
            self.pdb_blocks -= 1
            raise Refused(
                429,
                "Cannot evict pod as it would violate the pod's disruption budget.",
                details={
                    "causes": [
                        {
                            "reason": "DisruptionBudget",
                            "message": "The disruption budget shop-pdb needs 1 healthy pods and has 1 currently",
                        }
                    ],
                    "retryAfterSeconds": self.retry_after,
                },
            )
        pod["metadata"].setdefault("deletionTimestamp", "2024-01-15T10:30:00Z")
        self.evictions.append(body)
        self.requests.append(Request(request.method, request.path, request.content_type, body, token))
        return web.json_response(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201},
            status=201,
        )

    async def _create_event(self, request: web.Request, token: str, namespace: str) -> web.StreamResponse:
        body = await self._json_body(request, ("application/json",))
        if not isinstance(body, dict) or body.get("kind") != "Event" or body.get("apiVersion") != "v1":
            raise Refused(400, "expected a v1 Event")
        metadata = body.get("metadata")
        if not isinstance(metadata, dict):
            raise Refused(422, "Event is invalid: metadata: Required value")
        if metadata.get("namespace", namespace) != namespace:
            raise Refused(
                400, "the namespace of the provided object does not match the namespace sent on the request"
            )
        name = metadata.get("name") or ""
        if not name and not metadata.get("generateName"):
            raise Refused(
                422, "Event is invalid: metadata.name: Required value: name or generateName is required"
            )
        if name and (len(name) > 253 or not _DNS_SUBDOMAIN.match(name)):
            raise Refused(
                422, f'Event "{name}" is invalid: metadata.name: Invalid value: a DNS-1123 subdomain'
            )
        problems = self._event_problems(body, namespace)
        if problems:
            raise Refused(422, f'Event "{name}" is invalid: ' + "; ".join(problems))
        if name and any(event["metadata"].get("name") == name for event in self.events):
            raise Refused(409, f'events "{name}" already exists', details={"name": name, "kind": "events"})
        stored = json.loads(json.dumps(body))
        stored["metadata"].setdefault("name", f"{metadata.get('generateName', '')}x7k2q")
        stored["metadata"]["namespace"] = namespace
        stored["metadata"]["uid"] = f"event-{len(self.events) + 1}"
        stored["metadata"]["resourceVersion"] = self._bump()
        self.events.append(stored)
        self.requests.append(Request(request.method, request.path, request.content_type, body, token))
        return web.json_response(stored, status=201)

    def _event_problems(self, body: dict[str, Any], namespace: str) -> list[str]:
        problems: list[str] = []
        involved = body.get("involvedObject")
        if not isinstance(involved, dict):
            return ["involvedObject: Required value"]
        expected = {"kind": "Pod", "apiVersion": "v1", "namespace": namespace, "name": self.pod_name}
        for key, value in expected.items():
            if involved.get(key) != value:
                problems.append(
                    f"involvedObject.{key}: Invalid value: {involved.get(key)!r} (expected {value!r})"
                )
        if "uid" in involved and involved["uid"] != self.pod["metadata"]["uid"]:
            problems.append(f"involvedObject.uid: Invalid value: {involved['uid']!r} is not the pod's uid")
        if not isinstance(body.get("reason"), str) or not body["reason"]:
            problems.append("reason: Required value")
        elif len(body["reason"]) > 128:
            problems.append("reason: Too long: may not be more than 128 bytes")
        if body.get("type") not in ("Normal", "Warning"):
            problems.append(
                f"type: Unsupported value: {body.get('type')!r}: supported values: Normal, Warning"
            )
        source = body.get("source")
        if not isinstance(source, dict) or not source.get("component"):
            problems.append("source.component: Required value")
        if not isinstance(body.get("message"), str):
            problems.append("message: Required value")
        for key in ("firstTimestamp", "lastTimestamp"):
            stamp = body.get(key)
            if stamp is not None and not (
                isinstance(stamp, str) and _RFC3339.match(stamp) and _parses(stamp)
            ):
                problems.append(f"{key}: Invalid value: {stamp!r} is not RFC 3339")
        count = body.get("count")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
            problems.append(f"count: Invalid value: {count!r}")
        return problems


def _parses(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True
