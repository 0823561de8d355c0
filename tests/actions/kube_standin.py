"""A strict stand-in for the Kubernetes API server, on 127.0.0.1: pods (listed and watched), their annotations,
Events, evictions.

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

Pods are kept by (namespace, name); the default pod shop/app-7d9f is always there at first. ``add_pod``,
``update_pod`` and ``delete_pod`` bump one global resourceVersion (as etcd's revision) and record a watch event.
``GET /api/v1/pods`` and ``/api/v1/namespaces/{ns}/pods`` list (a PodList whose ``metadata.resourceVersion`` is
the current one) or, with ``watch=1``, watch as kube-apiserver does
(https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes): a chunked 200
stream of one JSON event per line after the given resourceVersion (with none or "0": ADDED for every current pod
first); BOOKMARK events every ``bookmark_interval`` seconds when ``allowWatchBookmarks=true`` (an object with only
``metadata.resourceVersion``); the stream ends after ``timeoutSeconds``. A resourceVersion older than
``compacted_before`` (``compact()`` moves it to now) gets, like the watch cache does once a request is authorised,
a 200 stream holding one ERROR event whose object is a Status with code 410, reason Expired, ``too old resource
version: <rv> (<oldest>)`` (k8s.io/apiserver/pkg/storage/cacher: the error watcher), or HTTP 410 with
``expired_as_http``. ``drop_after_events`` cuts every watch connection (no final chunk) after that many events.
The only field selector served is ``spec.nodeName=<node>``; any other is refused with 400. ``watch_requests`` and
``list_requests`` record the query strings.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

NAMESPACE = "shop"
POD = "app-7d9f"
POD_UID = "5d2c3a4e-9f1b-4c8e-a1d7-3b6f0e2c9a81"
TOKEN = "standin-token-aaaa"
NODE = "node-a"

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
_PODS_PATH = re.compile(r"^/api/v1(/namespaces/(?P<ns>[^/]+))?/pods$")
_POD_FIELD_LABELS = (
    "metadata.name", "metadata.namespace", "spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
    "spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP", "status.podIPs",
    "status.nominatedNodeName",
)  # fmt: skip
"""The field labels kube-apiserver accepts for pods (pkg/registry/core/pod/strategy.go, PodToSelectableFields)."""


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


def make_pod(
    namespace: str,
    name: str,
    uid: str,
    node: str,
    containers: list[tuple[str, str | None, str | None]],
    annotations: dict[str, str] | None = None,
    owner: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A pod object as kube-apiserver serves it: ``containers`` are (name, containerID such as
    ``containerd://<64 hex>`` or None before it started, memory limit quantity or None); ``owner`` is
    ``<Kind>/<name>`` of the controller (a ReplicaSet, StatefulSet, DaemonSet, Job or Node)."""
    started = [container_id for _, container_id, _ in containers if container_id]
    spec_containers = []
    statuses = []
    for container_name, container_id, limit in containers:
        spec: dict[str, Any] = {
            "name": container_name,
            "image": f"registry.example/{container_name}:1",
            "resources": {},
            "terminationMessagePath": "/dev/termination-log",
            "imagePullPolicy": "IfNotPresent",
        }
        if limit is not None:
            spec["resources"] = {"limits": {"memory": limit}, "requests": {"memory": limit}}
        spec_containers.append(spec)
        status: dict[str, Any] = {
            "name": container_name,
            "image": f"registry.example/{container_name}:1",
            "imageID": "",
            "ready": container_id is not None,
            "restartCount": 0,
            "started": container_id is not None,
        }
        if container_id is not None:
            status["containerID"] = container_id
            status["imageID"] = f"registry.example/{container_name}@sha256:" + "ab" * 32
            status["state"] = {"running": {"startedAt": "2024-01-15T10:00:00Z"}}
        else:
            status["state"] = {"waiting": {"reason": "ContainerCreating"}}
        statuses.append(status)
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid,
        "resourceVersion": "1",
        "creationTimestamp": "2024-01-15T10:00:00Z",
        "labels": dict(labels or {"app": name.rsplit("-", 1)[0]}),
        "annotations": dict(annotations or {}),
    }
    if owner is not None:
        kind, _, owner_name = owner.partition("/")
        api_version = {"Node": "v1", "Job": "batch/v1"}.get(kind, "apps/v1")
        metadata["ownerReferences"] = [
            {
                "apiVersion": api_version,
                "kind": kind,
                "name": owner_name,
                "uid": f"owner-{owner_name}",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    all_limited = bool(containers) and all(limit is not None for _, _, limit in containers)
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": metadata,
        "spec": {
            "nodeName": node,
            "containers": spec_containers,
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 30,
        },
        "status": {
            "phase": "Running" if containers and len(started) == len(containers) else "Pending",
            "hostIP": "10.0.0.11",
            "podIP": "10.244.1.17",
            "qosClass": "Burstable" if all_limited else "BestEffort",
            "containerStatuses": statuses,
        },
    }


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
    port: int = 0
    """The port to listen on; 0 = a free one (``url`` tells which)."""
    node: str = NODE
    """The node the default pod is bound to."""
    bookmark_interval: float = 1.0
    """Seconds between BOOKMARK events on a watch that asked for them."""
    drop_after_events: int | None = None
    """Cut every watch connection (no final chunk) after this many events."""
    compacted_before: int = 0
    """Watches from an older resourceVersion are answered 410 Expired."""
    expired_as_http: bool = False
    """Answer an expired resourceVersion with HTTP 410 instead of an ERROR event in a 200 stream."""
    default_watch_timeout: float = 60.0
    """How long a watch without ``timeoutSeconds`` lasts (kube-apiserver picks 30-60 minutes)."""
    requests: list[Request] = field(default_factory=list)
    answers: list[tuple[str, str, int]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    evictions: list[dict[str, Any]] = field(default_factory=list)
    watch_requests: list[dict[str, str]] = field(default_factory=list)
    """The query of every watch request, first first."""
    list_requests: list[dict[str, str]] = field(default_factory=list)
    """The query of every list request, first first."""
    bookmarks_sent: int = 0
    watch_events_sent: int = 0
    pods: dict[tuple[str, str], dict[str, Any]] = field(init=False)
    """The pods by (namespace, name)."""
    pod: dict[str, Any] = field(init=False)
    """The default pod (the one the sidecar-mode client acts on)."""
    watch_log: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list, init=False)
    """(resourceVersion, type, pod copy) of every change, oldest first."""
    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)
    _port: int = field(default=0, init=False, repr=False)
    _resource_version: int = field(default=1000, init=False, repr=False)
    _wake: asyncio.Event | None = field(default=None, init=False, repr=False)
    _closing: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.pod = make_pod(
            self.namespace,
            self.pod_name,
            POD_UID,
            self.node,
            [("app", "containerd://" + "a1" * 32, None), ("memmon", "containerd://" + "b2" * 32, None)],
            annotations={"kubectl.kubernetes.io/default-container": "app"},
            owner="ReplicaSet/app-7d9f0",
            labels={"app": "shop"},
        )
        self.pod["metadata"]["resourceVersion"] = str(self._resource_version)
        self.pods = {(self.namespace, self.pod_name): self.pod}

    # -- lifecycle

    @property
    def url(self) -> str:
        scheme = "http" if self.ssl_context is None else "https"
        return f"{scheme}://127.0.0.1:{self._port}"

    async def start(self) -> KubeStandin:
        self._closing = False
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.ssl_context)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        self._closing = True
        self._notify()
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

    @property
    def resource_version(self) -> int:
        """The current (global) resourceVersion."""
        return self._resource_version

    def add_pod(self, pod: dict[str, Any]) -> str:
        """Create ``pod`` (see :func:`make_pod`); its new resourceVersion. A name taken raises ValueError."""
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        if key in self.pods:
            raise ValueError(f'pods "{key[1]}" already exists in namespace {key[0]}')
        self.pods[key] = pod
        return self._record("ADDED", pod)

    def update_pod(self, namespace: str, name: str, mutate: Callable[[dict[str, Any]], object]) -> str:
        """Change a pod in place with ``mutate(pod)``; its new resourceVersion (KeyError for an unknown pod)."""
        pod = self.pods[(namespace, name)]
        mutate(pod)
        return self._record("MODIFIED", pod)

    def delete_pod(self, namespace: str, name: str) -> str:
        """Remove a pod; the resourceVersion of its deletion (KeyError for an unknown pod)."""
        pod = self.pods.pop((namespace, name))
        return self._record("DELETED", pod)

    def compact(self) -> int:
        """Forget the history: every resourceVersion older than the current one expires (410 on a watch)."""
        self.compacted_before = self._resource_version
        return self.compacted_before

    def _record(self, kind: str, pod: dict[str, Any]) -> str:
        version = self._bump()
        pod["metadata"]["resourceVersion"] = version
        self.watch_log.append((int(version), kind, copy.deepcopy(pod)))
        self._notify()
        return version

    def _notify(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None:
            wake.set()

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
        if match := _PODS_PATH.match(path):
            self._allow(method, "GET")
            return await self._pods_collection(request, match["ns"])
        if match := _EVENTS_PATH.match(path):
            self._allow(method, "GET", "POST")
            if method == "GET":
                return web.json_response(
                    {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": self.events}
                )
            return await self._create_event(request, token, match["ns"])
        raise Refused(404, "the server could not find the requested resource")

    # -- list and watch

    @staticmethod
    def _node_selector(selector: str) -> str | None:
        """The node of ``spec.nodeName=<node>``; None for no selector; 400 for any other selector."""
        if not selector:
            return None
        label, operator, value = re.split(r"(==|!=|=)", selector, maxsplit=1) if "=" in selector else (
            selector, "", "")  # fmt: skip
        if label not in _POD_FIELD_LABELS:
            raise Refused(400, f"field label not supported: {label}")
        if label != "spec.nodeName" or operator not in ("=", "==") or "," in value:
            raise Refused(
                400, f"stand-in: only the field selector spec.nodeName=<node> is served, not {selector!r}"
            )
        return value

    def _matches(self, pod: dict[str, Any], namespace: str | None, node: str | None) -> bool:
        return (namespace is None or pod["metadata"]["namespace"] == namespace) and (
            node is None or pod["spec"].get("nodeName") == node
        )

    async def _pods_collection(self, request: web.Request, namespace: str | None) -> web.StreamResponse:
        query = dict(request.query)
        node = self._node_selector(query.get("fieldSelector", ""))
        if query.get("watch") in ("1", "true"):
            return await self._watch(request, query, namespace, node)
        self.list_requests.append(query)
        items = []
        for key in sorted(self.pods):
            pod = self.pods[key]
            if self._matches(pod, namespace, node):
                item = copy.deepcopy(pod)
                item.pop("kind", None)  # a list's items carry no kind/apiVersion of their own
                item.pop("apiVersion", None)
                items.append(item)
        return web.json_response(
            {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self._resource_version)},
                "items": items,
            }
        )

    async def _watch(
        self, request: web.Request, query: dict[str, str], namespace: str | None, node: str | None
    ) -> web.StreamResponse:
        self.watch_requests.append(query)
        try:
            timeout = (
                float(query["timeoutSeconds"]) if "timeoutSeconds" in query else self.default_watch_timeout
            )
        except ValueError:
            raise Refused(400, f"timeoutSeconds: Invalid value: {query['timeoutSeconds']!r}") from None
        text = query.get("resourceVersion", "")
        since: int | None = None
        if text not in ("", "0"):
            try:
                since = int(text)
            except ValueError:
                raise Refused(400, f"resourceVersion: Invalid value: {text!r}: must be an integer") from None
        expired = since is not None and since < self.compacted_before
        if expired and self.expired_as_http:
            raise Refused(410, f"too old resource version: {since} ({self.compacted_before - 1})")
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)

        async def send(kind: str, obj: dict[str, Any]) -> None:
            line = json.dumps({"type": kind, "object": obj}, separators=(",", ":")) + "\n"
            await response.write(line.encode())

        if expired:
            status = status_object(410, f"too old resource version: {since} ({self.compacted_before - 1})")
            await send("ERROR", status)
            await response.write_eof()
            return response
        if since is not None and since > self._resource_version:
            await send("ERROR", status_object(504, f"Too large resource version: {since}, current: "
                                                   f"{self._resource_version}"))  # fmt: skip
            await response.write_eof()
            return response
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        next_bookmark = loop.time() + self.bookmark_interval
        bookmarks = query.get("allowWatchBookmarks") == "true"
        sent = 0
        if since is None:  # no resourceVersion, or "0": the current state as ADDED events first
            since = self._resource_version
            for key in sorted(self.pods):
                if self._matches(self.pods[key], namespace, node):
                    await send("ADDED", copy.deepcopy(self.pods[key]))
        cursor = since
        while not self._closing:
            wake = self._wake = self._wake or asyncio.Event()
            for version, kind, pod in [entry for entry in self.watch_log if entry[0] > cursor]:
                cursor = version
                if not self._matches(pod, namespace, node):
                    continue
                await send(kind, pod)
                sent += 1
                self.watch_events_sent += 1
                if self.drop_after_events is not None and sent >= self.drop_after_events:
                    assert request.transport is not None
                    request.transport.close()  # a dropped connection: the chunked body never ends
                    return response
            now = loop.time()
            if now >= deadline:
                break
            if any(entry[0] > cursor for entry in self.watch_log):
                continue  # changes came while writing: send them before any bookmark
            if bookmarks and now >= next_bookmark:
                cursor = max(cursor, self._resource_version)
                await send("BOOKMARK", {"kind": "Pod", "apiVersion": "v1",
                                        "metadata": {"resourceVersion": str(cursor)}})  # fmt: skip
                self.bookmarks_sent += 1
                next_bookmark = now + self.bookmark_interval
            until = min(deadline, next_bookmark) if bookmarks else deadline
            try:
                async with asyncio.timeout(max(0.0, until - now)):
                    await wake.wait()
            except TimeoutError:
                pass
        await response.write_eof()
        return response

    @staticmethod
    def _allow(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise Refused(405, f"the server does not allow this method on the requested resource ({method})")

    def _find_pod(self, namespace: str, name: str) -> dict[str, Any]:
        pod = self.pods.get((namespace, name))
        if pod is None:
            raise Refused(404, f'pods "{name}" not found', details={"name": name, "kind": "pods"})
        return pod

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
                    422,
                    f'Pod "{pod["metadata"]["name"]}" is invalid: metadata.annotations: Invalid value: "{key}"',
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
        self._record("MODIFIED", pod)
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
        if "deletionTimestamp" not in pod["metadata"]:
            # The eviction deletes the pod gracefully: a MODIFIED event with deletionTimestamp (the DELETED one
            # comes when the kubelet has stopped it, which tests play with delete_pod).
            pod["metadata"]["deletionTimestamp"] = "2024-01-15T10:30:00Z"
            pod["metadata"]["deletionGracePeriodSeconds"] = 30
            self._record("MODIFIED", pod)
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
        expected = {"kind": "Pod", "apiVersion": "v1", "namespace": namespace}
        for key, value in expected.items():
            if involved.get(key) != value:
                problems.append(
                    f"involvedObject.{key}: Invalid value: {involved.get(key)!r} (expected {value!r})"
                )
        pod = self.pods.get((namespace, str(involved.get("name"))))
        if pod is None:
            problems.append(f"involvedObject.name: Invalid value: {involved.get('name')!r} is not a pod here")
        elif "uid" in involved and involved["uid"] != pod["metadata"]["uid"]:
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
