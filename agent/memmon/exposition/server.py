"""The HTTP side: the health API (with ``/metrics``) on the health port and ``/metrics`` alone on the
Prometheus port. The guide's ``MemoryHealthServer(monitor, port=8080)`` + ``await server.start_server()``.

aiohttp ``AppRunner(handle_signals=False)`` + ``TCPSite``: the process's signal handling stays with the caller
(the daemon or the host application), as kopf's probing server does.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from memmon.exposition.health import HealthRoutes
from memmon.exposition.metrics import build_registry, render
from memmon.exposition.protocol import JsonErrorRunner
from memmon.exposition.requests import is_loopback
from memmon.exposition.source import MonitorView
from memmon.exposition.targets import TargetRoutes

log = logging.getLogger("memmon.server")


class ServerStartError(Exception):
    """A port could not be bound; the message names the setting, the address and why."""


def _json_body(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error is JSON: unknown paths 404, wrong methods 405, crashes 500 (logged, no traceback sent)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json":
            raise
        if exc.status == 404:
            return _json_body(404, "not found", f"no such endpoint: {request.path}")
        if exc.status == 405:
            allowed = sorted(getattr(exc, "allowed_methods", ()) or ())
            response = _json_body(
                405, "method not allowed", f"{request.method} is not allowed on {request.path}"
            )
            response.headers["Allow"] = ", ".join(allowed)
            return response
        return _json_body(exc.status, exc.reason.lower(), exc.text or exc.reason)
    except Exception:
        log.exception("error serving %s %s", request.method, request.path)
        return _json_body(500, "internal error", "the request failed; see the agent's log")


class MemoryHealthServer:
    """Serves a monitor over HTTP. ``port=0`` binds a free port (see :attr:`port` after start)."""

    def __init__(
        self,
        monitor: MonitorView,
        port: int | None = None,
        *,
        host: str | None = None,
        prometheus_port: int | None = None,
    ) -> None:
        settings = monitor.settings
        self.monitor = monitor
        self.host = host if host is not None else settings.server.bind
        self.requested_port = settings.server.health_port if port is None else port
        self.requested_metrics_port = (
            settings.monitoring.prometheus_port if prometheus_port is None else prometheus_port
        )
        self.registry = build_registry(monitor)
        self._runners: list[web.AppRunner] = []
        self.port: int | None = None
        """The bound health port, once started."""
        self.metrics_port: int | None = None
        """The bound Prometheus port, once started (None when disabled with 0)."""

    def health_app(self) -> web.Application:
        """The health API application (also serves ``/metrics``)."""
        app = web.Application(middlewares=[json_errors])
        HealthRoutes(self.monitor).add_to(app)
        TargetRoutes(self.monitor).add_to(app)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/", self.page)
        return app

    async def page(self, request: web.Request) -> web.Response:
        """The live page: one self-contained HTML file polling the JSON endpoints, served with the current
        ``/health`` and ``/health/memory`` answers embedded so that its first paint shows the real level."""
        # imported on the first page request: an agent only scraped and probed never loads the page
        from memmon.exposition.livepage import EMBEDDED, current_answer, live_page

        state = {key: await current_answer(request, path) for key, path in EMBEDDED.items()}
        page = live_page()
        return web.Response(
            body=page.render(state),
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-store", "Content-Security-Policy": page.policy},
        )

    def metrics_app(self) -> web.Application:
        """The application of the separate Prometheus port: ``/metrics`` only."""
        app = web.Application(middlewares=[json_errors])
        app.router.add_get("/metrics", self.metrics)
        return app

    async def metrics(self, request: web.Request) -> web.Response:
        """Both metric families in the Prometheus text format, gzipped when the scraper accepts it (Prometheus
        asks for gzip on every scrape)."""
        # Off the event loop: at hundreds of targets a scrape takes a tenth of a second or more (bench/multi_target.py),
        # which the checks of every target would otherwise wait for. The collector only reads the monitor's state.
        body, headers = await asyncio.to_thread(
            render, self.registry, request.headers.get("Accept-Encoding", "")
        )
        return web.Response(body=body, headers=headers)

    async def start_server(self) -> None:
        """Bind and serve; :class:`ServerStartError` when a port is taken or the address is wrong."""
        try:
            self.port = await self._serve(self.health_app(), self.requested_port, "server.health_port")
            if self.requested_metrics_port:
                self.metrics_port = await self._serve(
                    self.metrics_app(), self.requested_metrics_port, "monitoring.prometheus_port"
                )
        except ServerStartError:
            await self.stop_server()
            raise
        log.info(
            "health API on http://%s:%s/health%s",
            self.host,
            self.port,
            f", metrics on http://{self.host}:{self.metrics_port}/metrics" if self.metrics_port else "",
        )
        self._warn_if_exposed()

    def _warn_if_exposed(self) -> None:
        """One warning line when a bound address is not loopback and no API token is set."""
        exposed = sorted(
            {str(a[0]) for r in self._runners for a in r.addresses if not is_loopback(str(a[0]))}
        )
        if exposed and self.monitor.settings.server.api_token is None:
            log.warning(
                "server.bind %s listens on %s without an API token: anyone who can reach it reads every GET "
                "endpoint (/health, /health/memory, /health/alerts, history, /metrics, and /health/leaks with "
                "allocation sites as file:line); actions stay loopback-only. Set MEMMON_API_TOKEN or bind "
                "127.0.0.1",
                self.host,
                ", ".join(exposed),
                extra={"bind": self.host, "exposed": exposed},
            )

    async def _serve(self, app: web.Application, port: int, setting: str) -> int:
        runner = JsonErrorRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, self.host, port)
        try:
            await site.start()
        except OSError as exc:
            why = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise ServerStartError(f"{setting}: cannot listen on {self.host}:{port}: {why}") from exc
        return int(runner.addresses[-1][1])

    async def stop_server(self) -> None:
        """Stop serving (idempotent)."""
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()
