"""Reusable test receivers on 127.0.0.1: an HTTP receiver with scripted answers and an SMTP server.

:class:`Receiver` (aiohttp) records every request and answers from a script, one entry per request::

    async with Receiver() as receiver:
        receiver.script = ["500", "429:2", "hang:5", "400 invalid_payload", "200"]
        ...  # POST to receiver.url + "/any/path"

Script entries (strings or :class:`Answer`): ``"500"`` a status, ``"400 invalid_payload"`` a status and body,
``"429:2"`` / ``"429:<HTTP-date>"`` a 429 with that ``Retry-After``, ``"hang:5"`` wait 5 s and then answer 200
(the wait ends early when the receiver closes). An empty script answers ``default`` (200 ``ok``). Every answer
closes its connection, so :meth:`Receiver.down` really gives "connection refused" until :meth:`Receiver.up`.

``accepted`` counts deliveries the way a deduplicating receiver would: distinct ``dedupe_by`` header values
(``Idempotency-Key`` by default) that were answered 2xx.

:class:`SmtpServer` (aiosmtpd's threaded Controller) records messages; modes ``plain``, ``starttls``, ``ssl``
(implicit TLS), optional AUTH with one user, and recipients it refuses with ``550 no such user``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email
import email.policy
import json
import socket
import ssl
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

from memmon.model import Alert, Level, frozen_mapping

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# -- HTTP ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One scripted answer."""

    status: int = 200
    body: str = "ok"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0

    @classmethod
    def parse(cls, spec: str | int | Answer) -> Answer:
        """``"200"``, ``"400 invalid_payload"``, ``"429:2"``, ``"429:<HTTP-date>"``, ``"hang:5"`` or an Answer."""
        if isinstance(spec, Answer):
            return spec
        text = str(spec).strip()
        if text.startswith("hang:"):
            return cls(delay=float(text.removeprefix("hang:")))
        code, _, rest = text.partition(" ")
        if ":" in code:
            code, _, retry_after = text.partition(":")
            return cls(status=int(code), body="rate_limited", headers={"Retry-After": retry_after.strip()})
        status = int(code)
        return cls(status=status, body=rest or ("ok" if 200 <= status < 300 else f"error {status}"))


@dataclass(frozen=True)
class Recorded:
    """One request as the receiver saw it."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    json: Any
    at: float
    status: int | None = None
    """The status it was answered with (None while hanging or when the client went away)."""


class Receiver:
    """An aiohttp server on 127.0.0.1 (port chosen at first start, kept across down()/up())."""

    def __init__(self, *, dedupe_by: str = "Idempotency-Key", default: str | Answer = "200") -> None:
        self.dedupe_by = dedupe_by
        self.default = Answer.parse(default)
        self.script: list[str | int | Answer] = []
        self.requests: list[Recorded] = []
        self.accepted_keys: set[str] = set()
        self.duplicates = 0
        """2xx answers for a key already accepted (what a deduplicating receiver drops)."""
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._closing = asyncio.Event()
        self._arrived = asyncio.Condition()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{HOST}:{self.port}"

    @property
    def accepted(self) -> int:
        """Distinct ``dedupe_by`` keys answered 2xx."""
        return len(self.accepted_keys)

    @property
    def bodies(self) -> list[Any]:
        """The JSON bodies received, in order."""
        return [request.json for request in self.requests]

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Start serving (a fresh port the first time)."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        await self.up()

    async def up(self) -> None:
        """Listen (again) on the same port."""
        assert self._runner is not None, "start() first"
        if self._site is not None:
            return
        site = web.TCPSite(self._runner, HOST, self.port, reuse_address=True)
        await site.start()
        self._site = site
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])

    async def down(self) -> None:
        """Stop listening: new connections are refused until :meth:`up`."""
        if self._site is not None:
            site, self._site = self._site, None
            await site.stop()

    async def close(self) -> None:
        """Stop, cutting short any hanging answer."""
        self._closing.set()
        await self.down()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for_requests(self, count: int, within: float = 5.0) -> list[Recorded]:
        """Wait until ``count`` requests have arrived; the requests so far."""
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return list(self.requests)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        index = len(self.requests)
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                dict(request.query),
                dict(request.headers),
                raw,
                parsed,
                time.time(),
            )
        )
        async with self._arrived:
            self._arrived.notify_all()
        answer = Answer.parse(self.script.pop(0)) if self.script else self.default
        if answer.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), answer.delay)
        key = request.headers.get(self.dedupe_by)
        if 200 <= answer.status < 300 and key is not None:
            if key in self.accepted_keys:
                self.duplicates += 1
            self.accepted_keys.add(key)
        self.requests[index] = dataclasses.replace(self.requests[index], status=answer.status)
        response = web.Response(status=answer.status, text=answer.body, headers=dict(answer.headers))
        response.force_close()  # no keep-alive: down() must refuse the very next request
        return response


# -- SMTP ------------------------------------------------------------------------------------------------------

SmtpMode = Literal["plain", "starttls", "ssl"]


def make_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """``(cert.pem, key.pem)`` for CN=localhost, valid for localhost and 127.0.0.1, made by ``openssl``."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


class _RecordingHandler:
    """aiosmtpd handler: refuses the listed recipients, records every message."""

    def __init__(self, refuse: Iterable[str]) -> None:
        self.refuse = {address.lower() for address in refuse}
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_RCPT(  # aiosmtpd's hook names
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address.lower() in self.refuse:
            return "550 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


class SmtpServer:
    """An aiosmtpd server on 127.0.0.1 in its own thread; ``messages`` are the mails it accepted."""

    def __init__(
        self,
        *,
        mode: SmtpMode = "plain",
        cert: tuple[Path, Path] | None = None,
        auth: tuple[str, str] | None = None,
        refuse: Iterable[str] = (),
    ) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.mode = mode
        self.host = HOST
        self.port = free_port()
        self.cert_file = None if cert is None else cert[0]
        self.handler = _RecordingHandler(refuse)
        self.auth_attempts: list[tuple[str, bool]] = []
        context: ssl.SSLContext | None = None
        if mode != "plain":
            assert cert is not None, f"{mode} needs a certificate"
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(cert[0]), str(cert[1]))
        kwargs: dict[str, Any] = {}
        if mode == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        if mode == "ssl":
            kwargs.update(ssl_context=context)
        if auth is not None:

            def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
                ok = (
                    isinstance(data, LoginPassword)
                    and data.login.decode() == auth[0]
                    and data.password.decode() == auth[1]
                )
                self.auth_attempts.append((mechanism, ok))
                return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

            # aiosmtpd offers AUTH only after STARTTLS unless auth_require_tls=False; it does not count implicit
            # TLS as TLS, and on the plain variant AUTH in clear text is fine on 127.0.0.1 in a test.
            kwargs.update(
                authenticator=authenticator, auth_required=True, auth_require_tls=mode == "starttls"
            )
        self._controller = Controller(self.handler, hostname=HOST, port=self.port, **kwargs)

    @property
    def messages(self) -> list[EmailMessage]:
        """Accepted mails, parsed."""
        return self.handler.messages

    def start(self) -> SmtpServer:
        """Start the server thread; returns self."""
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop the server thread (idempotent)."""
        with contextlib.suppress(AssertionError, RuntimeError):
            self._controller.stop()


# -- alerts ----------------------------------------------------------------------------------------------------


def sample_alert(
    *,
    severity: Level = Level.CRITICAL,
    state: str = "firing",
    alert_id: str = "0123456789abcdef0123456789abcdef",
    component: str = "process_memory",
    target: str = "pid:4242",
    started_at: float | None = None,
    resolved_at: float | None = None,
    memory_usage: float = 2048.5,
    threshold: float = 2048.0,
    message: str | None = None,
    metadata: Mapping[str, object] | None = None,
) -> Alert:
    """An alert shaped like the evaluator's (the guide's sample numbers), firing unless ``state="resolved"``."""
    now = time.time()
    started = now - 30 if started_at is None else started_at
    if state == "resolved" and resolved_at is None:
        resolved_at = now
    label = severity.label
    default_message = (
        f"{label.upper()}: Memory usage {memory_usage:.1f} MiB exceeds {label} threshold"
        if state == "firing"
        else f"RESOLVED: {component} {label} cleared (usage {memory_usage:.1f} MiB, 52.0%)"
    )
    return Alert(
        id=alert_id,
        fingerprint=f"fp-{component}-{target}-{label}",
        severity=severity,
        component=component,
        target=target,
        state=state,
        started_at=started,
        resolved_at=resolved_at,
        memory_usage=memory_usage,
        threshold=threshold,
        message=message or default_message,
        metadata=frozen_mapping(
            {
                "percent": 85.2,
                "available_mb": 512.3,
                "limit_mb": 4096.0,
                "limit_source": "host",
                "host": "web-1",
            }
            if metadata is None
            else metadata
        ),
    )
