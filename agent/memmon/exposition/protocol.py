"""The HTTP connection handling under the health API: header timeout, and malformed requests answered in JSON.

aiohttp answers what its parser rejects (a bad request line, a header line over ``max_line_size``, too many
headers) from ``RequestHandler.handle_error``, before any middleware runs: a ``text/plain`` body and a traceback
logged on the ``aiohttp.server`` logger, which is outside memmon's logging (so ``--log-format json`` printed raw
traceback lines). :class:`JsonErrorRunner` serves the same application with a handler whose errors are one JSON
body and one log line on ``memmon.server``.

Header timeout: aiohttp (3.10+) arms its keep-alive timer when a connection is made and after every response, and
closes the connection when the timer fires while no complete request has arrived. With ``keepalive_timeout`` set
to :data:`HEADER_TIMEOUT_SECONDS` that timer is also the header timeout: a client that connects and sends nothing,
or only part of its headers, is disconnected after that long (the default, 3630 s, let them linger).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("memmon.server")

HEADER_TIMEOUT_SECONDS = 15.0
"""Longest a connection may stay without a complete request: from connect, or from the previous response (idle
keep-alive). Slowloris-style clients are cut off here; Prometheus (15 s scrapes) simply reconnects."""
MAX_REASON_CHARS = 200
"""Parser messages quote the offending bytes; a client's garbage is cut to this length in the log and the body."""


class JsonErrorProtocol(RequestHandler):
    """aiohttp's connection handler with JSON error answers and a one-line log for malformed requests."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A JSON ``{"error", "message"}`` answer (the connection is closed after it, as aiohttp does)."""
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "error"
        if isinstance(exc, HttpProcessingError):
            reason = (exc.message or message or phrase).replace("\n", " ")[:MAX_REASON_CHARS]
            log.info(
                "malformed request from %s: %s",
                request.remote,
                reason,
                extra={"remote": request.remote, "status": status},
            )
        elif exc is not None:  # a crash outside the application's middlewares: a bug worth its traceback
            log.error("error handling request from %s", request.remote, exc_info=exc)
            reason = "the request failed; see the agent's log"
        else:
            reason = phrase
        # Headers already sent: nothing more can be said on this connection.
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the error answer")
        response = web.json_response({"error": phrase.lower(), "message": reason}, status=status)
        response.force_close()
        return response


class JsonErrorServer(web.Server):
    """``web.Server`` building :class:`JsonErrorProtocol` handlers (with the same keyword arguments)."""

    def __call__(self) -> RequestHandler:
        """A handler for one new connection."""
        kwargs: dict[str, Any] = self._kwargs
        return JsonErrorProtocol(self, loop=self._loop, **kwargs)


class JsonErrorRunner(web.AppRunner):
    """``web.AppRunner`` whose connections use :class:`JsonErrorProtocol` and the header timeout."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", HEADER_TIMEOUT_SECONDS)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # Application._make_handler builds a plain web.Server; the subclass adds no state, only __call__.
        server.__class__ = JsonErrorServer
        return server
