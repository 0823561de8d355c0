"""The guide's health API: ``/health``, ``/health/memory``, ``/health/alerts``, ``/health/metrics/history``,
``POST /health/actions/gc``, plus the Kubernetes probes ``/health/live`` and ``/health/ready``.

Timestamps are ISO 8601 UTC; sizes are MB and percents 0-100, as in the guide's examples.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

from memmon import __version__
from memmon.actions.gc import GcRateLimited
from memmon.actions.runner import action_outcome
from memmon.alerting.channel import DeliveryFailed
from memmon.alerting.payload import alert_payload
from memmon.exposition.admission import AdmissionGate, ClientGone, while_connected
from memmon.exposition.requests import (
    AUTH_THROTTLE,
    AuthThrottle,
    choice_param,
    json_error,
    number_param,
    require_token,
)
from memmon.exposition.source import MonitorView
from memmon.kits.isotime import iso_utc
from memmon.model import MB, ActionResult, HistoryPoint, Level, MemorySample, TargetState

STATUS_NAMES = {
    Level.OK: "healthy",
    Level.WARNING: "warning",
    Level.CRITICAL: "critical",
    Level.EMERGENCY: "emergency",
}
MAX_HISTORY_POINTS = 10_000


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / MB, 1)


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


_POINT_FIELDS = tuple(field.name for field in dataclasses.fields(HistoryPoint))


def point_payload(point: HistoryPoint) -> dict[str, Any]:
    """One history record as JSON."""
    payload = {name: getattr(point, name) for name in _POINT_FIELDS}  # scalars only: no deep copy needed
    payload["timestamp"] = iso_utc(point.timestamp)
    payload["level"] = point.level.label
    return payload


def history_body(hours: float, total: int, points: list[HistoryPoint], chunk: int = 500) -> list[bytes]:
    """The ``/health/metrics/history`` JSON body ``{"hours", "count", "total", "samples"}``, as consecutive parts.

    Built off the event loop (10,000 points are megabytes), ``chunk`` points at a time so that at most that many
    dicts exist at once besides the encoded parts.
    """
    head = json.dumps({"hours": hours, "count": len(points), "total": total})
    parts = [head[:-1].encode(), b', "samples": [']
    for start in range(0, len(points), chunk):
        encoded = json.dumps([point_payload(p) for p in points[start : start + chunk]])
        parts.append(b", " if start else b"")
        parts.append(encoded[1:-1].encode())
    parts.append(b"]}")
    return parts


def memory_payload(sample: MemorySample) -> dict[str, Any]:
    """The guide's ``/health/memory`` fields plus what memmon adds (limit used, sources, degradations)."""
    process, cgroup, host, pressure = sample.process, sample.cgroup, sample.host, sample.pressure
    return {
        "timestamp": iso_utc(sample.timestamp),
        "rss_mb": _mb(process.rss_bytes) if process else None,
        "vms_mb": _mb(process.vms_bytes) if process else None,
        "percent": _round(sample.percent_of_limit),
        "available_mb": _mb(sample.available_bytes),
        "swap_percent": _round(host.swap_percent) if host else None,
        "gc_collections": process.gc_collections if process else None,
        "gc_objects": process.gc_objects if process else None,
        "gc_objects_measured_at": iso_utc(process.gc_objects_at) if process else None,
        "target": sample.target,
        "target_kind": sample.target_kind.value,
        "target_state": sample.target_state.value,
        "target_problem": sample.target_problem,
        "memory_usage_mb": _mb(sample.target_bytes),
        "effective_limit_mb": _mb(sample.effective_limit_bytes),
        "limit_source": sample.limit_source,
        "processes": [
            {
                "pid": p.pid,
                "name": p.name,
                "role": p.role,
                "rss_mb": _mb(p.rss_bytes),
                "vms_mb": _mb(p.vms_bytes),
            }
            for p in (process.processes if process else ())
        ],
        "cgroup": None
        if cgroup is None
        else {
            "path": cgroup.path,
            "version": cgroup.version,
            "usage_mb": _mb(cgroup.usage_bytes),
            "working_set_mb": _mb(cgroup.working_set_bytes),
            "inactive_file_mb": _mb(cgroup.inactive_file_bytes),
            "limit_mb": _mb(cgroup.limit_bytes),
            "oom_kill_count": cgroup.oom_kill_count,
            "failcnt": cgroup.failcnt,
        },
        "host": None
        if host is None
        else {
            "total_mb": _mb(host.total_bytes),
            "available_mb": _mb(host.available_bytes),
            "used_percent": _round(host.used_percent),
            "swap_total_mb": _mb(host.swap_total_bytes),
            "swap_used_mb": _mb(host.swap_used_bytes),
            "swap_percent": _round(host.swap_percent),
        },
        "pressure": None
        if pressure is None
        else {
            "source": pressure.source,
            "some_avg10": pressure.some_avg10,
            "full_avg10": pressure.full_avg10,
        },
    }


def action_payload(result: ActionResult) -> dict[str, Any]:
    """One action result as JSON (``target`` only from a multi-target agent)."""
    target = {"target": result.target} if result.target is not None else {}
    return {
        **target,
        "action": result.action,
        "success": result.success,
        "outcome": action_outcome(result),
        "timestamp": iso_utc(result.started_at),
        "duration_seconds": round(result.duration_seconds, 6),
        "detail": dict(result.detail),
        "error": result.error,
    }


class HealthRoutes:
    """aiohttp handlers over a :class:`MonitorView`."""

    def __init__(self, monitor: MonitorView, *, clock: Callable[[], float] = time.time) -> None:
        self.monitor = monitor
        self.clock = clock
        self.history_gate = AdmissionGate("history queries")
        """Two history queries at a time, eight more waiting: memory per query is bounded, so this bounds all."""

    def add_to(self, app: web.Application) -> None:
        """Register every route on ``app``."""
        app.router.add_get("/health", self.health)
        app.router.add_get("/health/live", self.live)
        app.router.add_get("/health/ready", self.ready)
        app.router.add_get("/health/memory", self.memory)
        app.router.add_get("/health/alerts", self.alerts)
        app.router.add_get("/health/metrics/history", self.history)
        app.on_shutdown.append(self.history_gate.close)
        app[AUTH_THROTTLE] = AuthThrottle()
        app.router.add_post("/health/actions/gc", self.gc)
        app.router.add_post("/health/actions/test-alert", self.test_alert)
        app.router.add_get("/health/leaks", self.leaks)
        app.router.add_post("/health/actions/leak-snapshot", self.leak_snapshot)

    def _status(self) -> str:
        """``starting`` before the first check, ``unknown`` while the target is missing or unreadable (the
        ``level`` then judges what is left: the host, swap), else the level's name."""
        latest = self.monitor.latest
        if latest is None:
            return "starting"
        if latest.sample.target_state is not TargetState.PRESENT:
            return "unknown"
        return STATUS_NAMES[self.monitor.level]

    async def health(self, _request: web.Request) -> web.Response:
        """Always 200; ``status`` is ``healthy``/``warning``/``critical``/``emergency``, ``starting`` before the
        first check, ``unknown`` while the target is missing or unreadable (``target_state``, ``target_problem``
        say which and why)."""
        latest = self.monitor.latest
        sample = latest.sample if latest else None
        return web.json_response(
            {
                "status": self._status(),
                "level": self.monitor.level.label,
                "timestamp": iso_utc(self.clock()),
                "uptime_seconds": round(self.monitor.uptime_seconds, 1),
                "monitoring_active": self.monitor.monitoring_active,
                "memory_usage_mb": _mb(sample.target_bytes) if sample else None,
                "memory_percentage": _round(sample.percent_of_limit) if sample else None,
                "active_alerts": len(self.monitor.active_alerts()),
                "target": sample.target if sample else None,
                "target_state": sample.target_state.value if sample else None,
                "target_problem": sample.target_problem if sample else None,
                "live": self.monitor.is_live(),
                "ready": self.monitor.is_ready(),
                "degraded": sorted({d.source for d in self.monitor.degraded}),
                "alert_channels": {
                    name: {
                        "state": report.state,
                        "pending": report.pending,
                        "in_memory": report.in_memory,
                        "consecutive_failures": report.consecutive_failures,
                        "last_error": report.last_error,
                        "last_success": iso_utc(report.last_success_at),
                    }
                    for name, report in self.monitor.alert_channels().items()
                },
                "recent_actions": [action_payload(a) for a in self.monitor.recent_actions()[-10:]],
                "version": __version__,
            }
        )

    async def live(self, request: web.Request) -> web.Response:
        """200 while the check loop runs and is fresh; 503 when it is stopped or stuck, and (``scope=app``, the
        default) while the kubernetes-liveness strategy asks the kubelet to restart the app container.
        memmon's own container probes ``?scope=agent``."""
        scope = choice_param(request, "scope", ("app", "agent"), "app")
        live = self.monitor.is_live(scope)
        return web.json_response(
            {"live": live, "status": self._status(), "scope": scope}, status=200 if live else 503
        )

    async def ready(self, _request: web.Request) -> web.Response:
        """503 before the first sample and at the levels configured to shed load."""
        ready = self.monitor.is_ready()
        return web.json_response(
            {"ready": ready, "status": self._status(), "level": self.monitor.level.label},
            status=200 if ready else 503,
        )

    async def memory(self, request: web.Request) -> web.Response:
        """The latest sample in detail; ``?gc_objects=now`` counts gc objects now instead of the cached count."""
        fresh = choice_param(request, "gc_objects", ("cached", "now"), "cached") == "now"
        latest = self.monitor.latest
        if latest is None:
            raise json_error(503, "no sample yet", "monitoring has not completed its first check")
        payload = memory_payload(latest.sample)
        if fresh:  # at most one count per few seconds, shared by concurrent requests (O(heap), holds the GIL)
            counted = await self.monitor.count_gc_objects()
            if counted is not None:
                payload["gc_objects"], measured_at = counted
                payload["gc_objects_measured_at"] = iso_utc(measured_at)
        payload["level"] = latest.level.label
        payload["components"] = [
            {
                "component": c.component,
                "level": c.level.label,
                "memory_usage_mb": c.value_mb,
                "percent": _round(c.percent),
                "threshold_mb": c.threshold_mb,
                "reason": c.reason,
            }
            for c in latest.components
        ]
        payload["degraded"] = [{"source": d.source, "reason": d.reason} for d in self.monitor.degraded]
        prediction = self.monitor.prediction
        payload["prediction"] = None if prediction is None else dataclasses.asdict(prediction)
        payload["server"] = self.monitor.server_report()
        return web.json_response(payload)

    def _hours(self, request: web.Request, default: float, retention_hours: float) -> float:
        return number_param(
            request, "hours", default=min(default, retention_hours), minimum=0, maximum=retention_hours
        )

    async def alerts(self, request: web.Request) -> web.Response:
        """Alert summary over ``hours`` (default 24, at most the alert retention) and the alert records."""
        hours = self._hours(request, 24, self.monitor.settings.storage.alert_retention_hours)
        records = await self.monitor.alerts_since(self.clock() - hours * 3600)
        return web.json_response(
            {
                "hours": hours,
                "total_alerts": len(records),
                "active_alerts": sum(1 for a in records if a.state == "firing"),
                "resolved_alerts": sum(1 for a in records if a.state == "resolved"),
                "by_severity": dict(Counter(a.severity.label for a in records)),
                "by_component": dict(Counter(a.component for a in records)),
                "alerts": [alert_payload(a) for a in records],
            }
        )

    async def history(self, request: web.Request) -> web.StreamResponse:
        """Samples of the last ``hours`` (default 1, at most the retention), at most ``max_points`` (peaks kept),
        of ``target`` (default: the worst target now, the only one of a single-target agent; 404 for an unknown one).

        Two run at a time and eight wait (then ``503 busy`` with ``Retry-After``); the query is downsampled in
        SQLite and the body built off the event loop, so checks never wait on it; it stops when the client leaves.
        """
        hours = self._hours(request, 1, self.monitor.settings.storage.retention_hours)
        max_points = int(
            number_param(request, "max_points", default=1000, minimum=1, maximum=MAX_HISTORY_POINTS)
        )
        since = self.clock() - hours * 3600
        target = request.query.get("target")
        known = [view.name for view in self.monitor.ordered_watches()]
        if target is not None and target not in known:
            raise json_error(404, "unknown target", f"no target {target!r}", targets=sorted(known))

        async def answer() -> list[bytes]:
            async with self.history_gate.admit():
                total, points = await self.monitor.history_window(since, max_points, target)
                return await asyncio.to_thread(history_body, hours, total, points)

        try:
            parts = await while_connected(request, answer())
        except ClientGone:
            return web.json_response({"error": "client closed request"}, status=499)
        # Streamed rather than web.Response(body=...): aiohttp keeps a connection's last response object alive
        # while the connection idles, and with it a body of megabytes per keep-alive connection.
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = sum(len(part) for part in parts)
        await response.prepare(request)
        while parts:
            await response.write(parts.pop(0))
        await response.write_eof()
        return response

    async def gc(self, request: web.Request) -> web.Response:
        """The guide's manual garbage collection; needs the API token (or a loopback client without one)."""
        token = self.monitor.settings.server.api_token
        require_token(request, None if token is None else token.get_secret_value())
        try:
            result = self.monitor.run_gc()
        except GcRateLimited as exc:
            error = json_error(429, "rate limited", str(exc), retry_after_seconds=round(exc.retry_after, 2))
            error.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
            raise error from None
        return web.json_response(
            {
                "success": result.success,
                **result.detail,
                "duration_seconds": round(result.duration_seconds, 6),
                "timestamp": iso_utc(result.started_at),
            }
        )

    async def test_alert(self, request: web.Request) -> web.Response:
        """Send a test alert through ``?channel=NAME`` (``&severity=``) and report the receiver's answer: 200 when
        it accepted, 502 when it refused or was unreachable; needs the API token like the other actions."""
        token = self.monitor.settings.server.api_token
        require_token(request, None if token is None else token.get_secret_value())
        name = request.query.get("channel", "")
        severity = Level.parse(
            choice_param(request, "severity", ("warning", "critical", "emergency"), "warning")
        )
        try:
            receipt = await self.monitor.send_test_alert(name, severity)
        except KeyError as exc:
            raise json_error(400, "invalid parameter", str(exc.args[0]), parameter="channel") from None
        except DeliveryFailed as exc:
            return web.json_response(
                {"channel": name, "accepted": False, "reason": exc.reason, "status": exc.status,
                 "retryable": exc.retryable},
                status=502,
            )  # fmt: skip
        except TimeoutError:
            return web.json_response(
                {"channel": name, "accepted": False, "reason": "no answer in time"}, status=502
            )
        return web.json_response(
            {"channel": name, "accepted": True, "status": receipt.status, "detail": receipt.detail}
        )

    async def leaks(self, _request: web.Request) -> web.Response:
        """Leak detection's verdict, the last allocation profile (library mode) or mappings (agent mode), and the
        time-to-limit prediction."""
        return web.json_response(self.monitor.leaks())

    async def leak_snapshot(self, request: web.Request) -> web.Response:
        """Trace allocations for ``?seconds=N`` (library mode; default 10, at most 600) or read the target's
        biggest mappings (agent mode) now; needs the API token like the other actions."""
        token = self.monitor.settings.server.api_token
        require_token(request, None if token is None else token.get_secret_value())
        seconds = number_param(request, "seconds", default=10, minimum=0, maximum=600)
        try:
            return web.json_response(await self.monitor.leak_snapshot(seconds))
        except RuntimeError as exc:
            raise json_error(409, "busy", str(exc)) from None
