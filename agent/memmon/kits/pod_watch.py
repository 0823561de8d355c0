"""The pods bound to one node, kept current by a list + watch of the Kubernetes API server.

The protocol is the API's "efficient detection of changes"
(https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes):

* ``GET /api/v1/pods?fieldSelector=spec.nodeName=<node>`` answers a PodList whose ``metadata.resourceVersion``
  is the point in history the list shows;
* ``GET /api/v1/pods?watch=1&resourceVersion=<rv>&allowWatchBookmarks=true&timeoutSeconds=<n>&fieldSelector=…``
  then streams every change after that point, one JSON watch event ``{"type": ..., "object": ...}`` per line:
  ADDED, MODIFIED and DELETED carry the pod (its ``metadata.resourceVersion`` is the new point in history);
  a BOOKMARK (https://kubernetes.io/docs/reference/using-api/api-concepts/#watch-bookmarks) carries an object
  with only ``metadata.resourceVersion`` set, saying that nothing this watch selects changed up to there, so a
  re-watch starts from it instead of from an older, possibly compacted, point;
* the server ends a watch after ``timeoutSeconds``, and connections drop: the next watch starts from the last
  resourceVersion seen, and misses nothing;
* a resourceVersion older than the server's history window is answered ``410 Gone``
  (https://kubernetes.io/docs/reference/using-api/api-concepts/#410-gone-responses) — on a watch as an ERROR
  event in a 200 stream whose object is a Status with code 410 and reason Expired (kube-apiserver's watch cache
  returns such an "error watcher" rather than an HTTP error once the request is authorised, see
  k8s.io/apiserver/pkg/storage/cacher/cacher.go), or as HTTP 410: the client must clear its cache, list again
  and watch from the new list's resourceVersion.

The pods are kept by the uid the kubelet names their cgroup by (:attr:`~memmon.kits.pod_info.PodInfo.cgroup_uid`).
The bearer token, CA bundle and user agent are used as :class:`~memmon.kits.kubernetes_client.KubernetesClient`
uses them (the token file re-read every minute and on a 401).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode

from memmon.kits.http_client import HttpClient, HttpFailure, one_line
from memmon.kits.kubeconfig import BearerToken, KubeConfig
from memmon.kits.kubernetes_client import product_user_agent
from memmon.kits.pod_info import PodInfo, pod_info

log = logging.getLogger("memmon.kubernetes.watch")

WATCH_LINE_BYTES = 4 * 1024 * 1024
"""The longest watch event read. etcd refuses requests over 1.5 MiB (``--max-request-bytes``), so no pod is
larger; 4 MiB leaves room for JSON escaping and bounds what a broken server or proxy can make memmon hold."""
WATCH_GRACE_SECONDS = 30.0
"""How long past its ``timeoutSeconds`` a silent watch is waited for before the connection counts as dead."""
CONNECT_SECONDS = 10.0
LIST_SECONDS = 30.0
QUICK_END_SECONDS = 1.0
"""A watch that ends sooner than this without delivering a line counts as a failure (no hot re-watch loop)."""


class _Expired(Exception):
    """410 Gone: the resourceVersion left the server's history; list again."""


class _Failed(Exception):
    """A list or watch that failed; ``relist`` when events may have been lost."""

    def __init__(self, reason: str, *, relist: bool = False) -> None:
        super().__init__(reason)
        self.relist = relist


class PodWatch:
    """List + watch of the pods bound to one node (``fieldSelector=spec.nodeName=<node>``)."""

    def __init__(
        self,
        config: KubeConfig,
        node_name: str,
        *,
        timeout_seconds: int = 300,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        on_change: Callable[[], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``timeout_seconds`` is each watch's server-side ``timeoutSeconds``; ``on_change`` is called after
        every change of :meth:`pods`; failures wait ``backoff`` seconds, doubling up to ``max_backoff``."""
        self.config = config
        self.node_name = node_name
        self.timeout_seconds = timeout_seconds
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.on_change = on_change
        self.sleep = sleep
        self.monotonic = monotonic
        self.last_error: str | None = None
        """Why the latest attempt failed; None once a list or watch succeeds again."""
        self.lists = self.watches = self.events = self.bookmarks = 0
        self.relists = self.failures = self.bytes_received = 0
        self.resource_version: str | None = None
        """Where the next watch starts; None = list first."""
        self._pods: dict[str, PodInfo] = {}
        self._synced = False
        self._streak = 0
        self._closed = False
        self._inner: asyncio.Task[None] | None = None
        self._token = BearerToken(config, monotonic=monotonic)
        self._http = HttpClient(
            user_agent=product_user_agent("memmon"),
            headers={"Accept": "application/json"},
            ca_file=config.ca_file if config.host.lower().startswith("https://") else None,
        )

    # -- what callers read

    def pods(self) -> Mapping[str, PodInfo]:
        """The node's pods by :attr:`PodInfo.cgroup_uid`, a snapshot."""
        return MappingProxyType(dict(self._pods))

    @property
    def synced(self) -> bool:
        """A list has succeeded at least once."""
        return self._synced

    # -- lifecycle

    async def run(self) -> None:
        """List, then watch, forever, until :meth:`close`; never raises (but passes on its own cancellation)."""
        self._inner = asyncio.ensure_future(self._forever())
        try:
            await self._inner
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self._closed or (task is not None and task.cancelling()):
                raise

    async def close(self) -> None:
        """Stop :meth:`run` and close the connection (idempotent)."""
        self._closed = True
        inner, self._inner = self._inner, None
        if inner is not None and not inner.done():
            inner.cancel()
            await asyncio.gather(inner, return_exceptions=True)
        await self._http.close()

    async def _forever(self) -> None:
        delay = self.backoff
        expired_in_a_row = 0
        while not self._closed:
            try:
                if self.resource_version is None:
                    await self._list()
                await self._watch()
                delay = self.backoff
                expired_in_a_row = 0
            except _Expired as expired:
                self.relists += 1
                self.resource_version = None
                expired_in_a_row += 1
                log.info("pod watch: %s; listing again", expired)
                if expired_in_a_row > 1:  # expired again right after a list: do not hammer the API server
                    await self.sleep(delay)
                    delay = min(delay * 2, self.max_backoff)
            except _Failed as failed:
                if failed.relist:
                    self.resource_version = None
                self._failed(str(failed))
                await self.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
            except Exception as exc:  # the watch must outlive any surprise; it is logged
                self._failed(f"unexpected {type(exc).__name__}: {exc}")
                await self.sleep(delay)
                delay = min(delay * 2, self.max_backoff)

    def _failed(self, reason: str) -> None:
        self.failures += 1
        self.last_error = reason
        self._streak += 1
        if self._streak == 1:
            log.warning("pod watch of node %s failed: %s (retrying with backoff)", self.node_name, reason)
        else:
            log.debug("pod watch still failing: %s", reason)

    def _succeeded(self) -> None:
        if self._streak:
            log.info("pod watch of node %s works again after %d failures", self.node_name, self._streak)
        self._streak = 0
        self.last_error = None

    # -- list

    @property
    def _selector(self) -> str:
        return f"spec.nodeName={self.node_name}"

    async def _list(self) -> None:
        path = "/api/v1/pods?" + urlencode({"fieldSelector": self._selector})
        answer = None
        for attempt in range(2):
            try:
                answer = await self._http.request(
                    "GET", self._url(path), headers=self._headers(), timeout=LIST_SECONDS,
                    follow_redirects=False, answer_bytes=None, secrets=(),
                )  # fmt: skip
            except HttpFailure as failure:
                raise _Failed(f"GET {path}: {failure.reason}") from None
            if answer.status == 401 and attempt == 0 and self._token.reload():
                continue
            break
        assert answer is not None
        self.bytes_received += len(answer.text)
        if not answer.ok:
            raise _Failed(_status_reason("GET", path, answer.status, answer.text))
        try:
            body = json.loads(answer.text)
            items = body["items"] or []
            version = body["metadata"]["resourceVersion"]
            pods = {info.cgroup_uid: info for info in map(pod_info, items)}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise _Failed(f"GET {path}: not a PodList ({type(exc).__name__}: {exc})") from None
        if not isinstance(version, str) or not version:
            raise _Failed(f"GET {path}: the PodList has no metadata.resourceVersion")
        changed = pods != self._pods
        self._pods = pods
        self.resource_version = version
        self.lists += 1
        self._synced = True
        self._succeeded()
        if changed:
            self._changed()

    # -- watch

    async def _watch(self) -> None:
        """One watch from :attr:`resource_version`; returns when the server ends it or the connection drops
        after it delivered something (the caller re-watches); raises _Expired or _Failed."""
        query = {
            "watch": "1",
            "resourceVersion": self.resource_version or "",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.timeout_seconds),
            "fieldSelector": self._selector,
        }
        path = "/api/v1/pods?" + urlencode(query)
        started = self.monotonic()
        lines = 0
        try:
            for attempt in range(2):
                async with self._http.stream(
                    "GET", self._url(path), headers=self._headers(), connect_timeout=CONNECT_SECONDS,
                    read_timeout=self.timeout_seconds + WATCH_GRACE_SECONDS,
                ) as stream:  # fmt: skip
                    if stream.status == 401 and attempt == 0 and self._token.reload():
                        continue
                    if stream.status == 410:
                        raise _Expired(f"watch from resourceVersion {self.resource_version}: HTTP 410 Gone")
                    if stream.status != 200:
                        raise _Failed(_status_reason("GET", path, stream.status, await stream.text()))
                    self.watches += 1
                    self._succeeded()
                    buffer = bytearray()
                    async for chunk in stream.chunks():
                        self.bytes_received += len(chunk)
                        buffer += chunk
                        while (end := buffer.find(b"\n")) >= 0:
                            line = bytes(buffer[:end])
                            del buffer[: end + 1]
                            if line.strip():
                                lines += 1
                                self._event(line)
                        if len(buffer) > WATCH_LINE_BYTES:
                            raise _Failed(
                                f"a watch event longer than {WATCH_LINE_BYTES} bytes from {stream.where}",
                                relist=True,
                            )
                    if buffer.strip():
                        lines += 1
                        self._event(bytes(buffer))
                break
        except HttpFailure as failure:
            if lines == 0 and self.monotonic() - started < QUICK_END_SECONDS:
                raise _Failed(f"watch: {failure.reason}") from None
            log.debug("pod watch ended (%s); watching again from %s", failure.reason, self.resource_version)
            return
        if lines == 0 and self.monotonic() - started < QUICK_END_SECONDS:
            raise _Failed("the watch ended at once without an event")

    def _event(self, line: bytes) -> None:
        try:
            event = json.loads(line)
            kind, obj = event["type"], event["object"]
            if not isinstance(obj, dict):
                raise TypeError("object is not a JSON object")
        except (ValueError, KeyError, TypeError) as exc:
            raise _Failed(f"a malformed watch event ({type(exc).__name__}: {exc})", relist=True) from None
        if kind == "ERROR":
            code = obj.get("code")
            message = one_line(str(obj.get("message") or obj.get("reason") or obj), 200)
            if code == 410:
                raise _Expired(f"watch from resourceVersion {self.resource_version}: 410 {message}")
            raise _Failed(f"the watch answered ERROR {code}: {message}")
        metadata = obj.get("metadata")
        version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
        if kind == "BOOKMARK":
            self.bookmarks += 1
        elif kind in ("ADDED", "MODIFIED", "DELETED"):
            self.events += 1
            self._apply(kind, obj)
        else:
            log.debug("pod watch: event type %r ignored", kind)
        if isinstance(version, str) and version:
            self.resource_version = version

    def _apply(self, kind: str, obj: Mapping[str, Any]) -> None:
        try:
            info = pod_info(obj)
        except ValueError as exc:
            log.debug("pod watch: %s event ignored: %s", kind, exc)
            return
        if kind == "DELETED":
            if self._pods.pop(info.cgroup_uid, None) is not None:
                self._changed()
        elif self._pods.get(info.cgroup_uid) != info:
            self._pods[info.cgroup_uid] = info
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:
                log.exception("pod watch: the on_change callback failed")

    # -- the API server

    def _url(self, path: str) -> str:
        return self.config.host.rstrip("/") + path

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token.current()}"}


def _status_reason(method: str, path: str, status: int, text: str) -> str:
    """``GET <path> answered HTTP 403 Forbidden: <message>`` from a Status object (or the body's start)."""
    try:
        decoded = json.loads(text) if text else {}
    except ValueError:
        decoded = {}
    decoded = decoded if isinstance(decoded, dict) else {}
    reason = decoded.get("reason") if decoded.get("kind") == "Status" else None
    message = decoded.get("message") if decoded.get("kind") == "Status" else text
    return (
        f"{method} {path} answered HTTP {status}"
        + (f" {reason}" if reason else "")
        + (f": {one_line(str(message), 200)}" if message else "")
    )
