"""One HTTP client for every outgoing request memmon makes (alert receivers, action hooks, the Kubernetes API).

:class:`HttpClient` sends one request and gives back an :class:`HttpAnswer` (any status) or raises an
:class:`HttpFailure` (no usable answer). What every caller gets the same way:

* one ``aiohttp.ClientSession`` per client, created lazily inside the running loop (an aiohttp session is bound
  to its loop), no cookie jar (servers are stateless to us, and cookies must not travel between them), a
  ``User-Agent``, and optionally a CA bundle that verifies the server (the Kubernetes service-account ``ca.crt``);
* ``timeout`` bounds the whole exchange: connect, send, read the answer, and every redirect hop;
* redirects, when followed, by :mod:`memmon.kits.redirects` (307/308 only, never to another origin with
  credentials, never from https to http);
* failure reasons that never hold more of the URL than ``scheme://host:port``, and answer excerpts scrubbed of
  the URL's secrets, the credential headers sent and the generic credential forms (:mod:`memmon.kits.redaction`);
* ``Retry-After`` read as delay-seconds or an HTTP-date (:func:`memmon.kits.retryafter.parse_retry_after`).

Connection refused, DNS failures, resets and timeouts are ``retryable``; a failed TLS handshake says ``tls``
(callers decide: a certificate the CA bundle refuses will be refused a second later too).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field

import aiohttp

from memmon.kits.redaction import Redactor, redact_url, url_secrets
from memmon.kits.redirects import FOLLOWED, NOT_FOLLOWED, RedirectRefused, next_hop
from memmon.kits.retryafter import parse_retry_after

ANSWER_BYTES = 64 * 1024
"""How much of an answer's body is read by default: only its start is ever quoted."""

_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization"})

# aiohttp >= 3.10 raises ClientConnectorDNSError for failed lookups; older versions a ClientConnectorError
# whose os_error is a socket.gaierror.
_DNS_ERRORS: tuple[type[Exception], ...] = tuple(
    error for error in (getattr(aiohttp, "ClientConnectorDNSError", None),) if isinstance(error, type)
)


class HttpFailure(Exception):
    """No usable answer: ``reason`` names the server as ``scheme://host:port`` only; ``status`` is set for a
    refused redirect, None when no answer came; ``tls`` when the TLS handshake failed."""

    def __init__(
        self, reason: str, *, retryable: bool = True, status: int | None = None, tls: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.status = status
        self.tls = tls


@dataclass(frozen=True)
class HttpAnswer:
    """A server's answer: its status, the start of its body (``text``, unscrubbed) and its headers."""

    status: int
    text: str
    headers: Mapping[str, str]
    where: str
    """``scheme://host:port`` of the server that was asked first."""
    redact: Redactor = field(repr=False, compare=False)
    """Scrubs the request's secrets (URL and credential headers) from text about this answer."""

    @property
    def ok(self) -> bool:
        """A 2xx answer."""
        return 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        """408, 429 and 5xx: a later attempt may get another answer; any other status will come again."""
        return self.status in (408, 429) or self.status >= 500

    @property
    def retry_after(self) -> float | None:
        """The ``Retry-After`` header in seconds (None when absent or unreadable)."""
        return parse_retry_after(self.headers.get("Retry-After"))

    def excerpt(self, text: str | None = None, limit: int = 200) -> str:
        """``text`` (default: the body) on one line, scrubbed, at most ``limit`` characters (cut with ``…``)."""
        return one_line(self.redact(self.text if text is None else text), limit)


@dataclass(frozen=True)
class HttpStream:
    """An answer whose body is read as it arrives (a Kubernetes watch): its status, headers and body chunks."""

    status: int
    headers: Mapping[str, str]
    where: str
    """``scheme://host:port`` of the server."""
    content: aiohttp.StreamReader = field(repr=False, compare=False)
    read_timeout: float | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they come, until the server ends it; :class:`HttpFailure` when the connection
        drops before the end (``dropped``) or no byte came for ``read_timeout`` seconds."""
        try:
            async for chunk in self.content.iter_any():
                yield chunk
        except TimeoutError:
            raise HttpFailure(f"{self.where}: no data for {self.read_timeout:g}s") from None
        except (aiohttp.ClientError, OSError) as exc:
            # ClientPayloadError: the chunked body ended without its last chunk (the connection dropped).
            raise HttpFailure(f"{self.where}: connection dropped ({type(exc).__name__})") from None

    async def text(self, limit: int = ANSWER_BYTES) -> str:
        """The start of the body (an error answer's Status object); "" when it cannot be read."""
        try:
            return _decode(await self.content.read(limit), None)
        except (TimeoutError, aiohttp.ClientError, OSError):
            return ""


def one_line(text: str, limit: int) -> str:
    """``text`` with its whitespace runs made single spaces, cut to ``limit`` characters ending in ``…``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class HttpClient:
    """Sends requests through one lazily created session; whoever created the client closes it (or uses it as
    ``async with``). Used from a new event loop (tests, a restarted monitor) it opens a new session there."""

    def __init__(
        self, *, user_agent: str, headers: Mapping[str, str] | None = None, ca_file: str | None = None
    ):
        self.user_agent = user_agent
        self.headers = dict(headers or {})
        self.ca_file = ca_file
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def _session_for_loop(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = None
            if self.ca_file is not None:
                connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=self.ca_file))
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": self.user_agent, **self.headers},
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._loop = loop
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float,  # noqa: ASYNC109 - the per-request limit is part of the contract
        follow_redirects: bool = True,
        answer_bytes: int | None = ANSWER_BYTES,
        secrets: Iterable[str] | None = None,
    ) -> HttpAnswer:
        """Send one request (and its 307/308 hops when ``follow_redirects``); the answer, or :class:`HttpFailure`.

        ``secrets`` are what excerpts must not show besides the credential headers sent (default: every part of
        ``url`` that may be secret, :func:`~memmon.kits.redaction.url_secrets`). ``answer_bytes`` caps how much
        of the body is read (None: all of it). Without ``follow_redirects`` a 3xx comes back as an answer.
        """
        where = redact_url(url)
        sent = dict(headers or {})
        known = set(url_secrets(url) if secrets is None else secrets)
        known |= {value for name, value in sent.items() if name.lower() in _CREDENTIAL_HEADERS}
        known |= {
            value.partition(" ")[2] for name, value in sent.items() if name.lower() in _CREDENTIAL_HEADERS
        }
        deadline = asyncio.get_running_loop().time() + timeout
        current = url
        for hops in itertools.count():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise HttpFailure(f"{where}: timed out after {timeout:g}s")
            status, text, answer_headers = await self._once(method, current, body, sent, remaining, answer_bytes,
                                                            where, timeout)  # fmt: skip
            if follow_redirects and (status in FOLLOWED or status in NOT_FOLLOWED):
                hop_secrets = known | url_secrets(current) if secrets is None else known
                try:
                    current, sent = next_hop(
                        current, status, answer_headers.get("Location"), sent,
                        where=where, hops=hops, redact=Redactor(hop_secrets), method=method,
                    )  # fmt: skip
                except RedirectRefused as refused:
                    raise HttpFailure(refused.reason, retryable=False, status=refused.status) from None
                continue
            return HttpAnswer(status, text, answer_headers, where, Redactor(known))
        raise AssertionError("unreachable")  # pragma: no cover - itertools.count() never ends

    async def _once(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
        limit: float,
        answer_bytes: int | None,
        where: str,
        configured: float,
    ) -> tuple[int, str, Mapping[str, str]]:
        """One request within ``limit`` seconds (a timeout names the ``configured`` limit of the whole call)."""
        session = self._session_for_loop()
        try:
            async with session.request(
                method,
                url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=limit),
                allow_redirects=False,  # followed by request() itself, where RFC 9110 allows it
            ) as response:
                raw = await (response.read() if answer_bytes is None else response.content.read(answer_bytes))
                return response.status, _decode(raw, response.charset), response.headers
        except TimeoutError:
            # aiohttp's ServerTimeoutError/ConnectionTimeoutError subclass asyncio.TimeoutError (= TimeoutError).
            raise HttpFailure(f"{where}: timed out after {configured:g}s") from None
        except aiohttp.ClientConnectorError as exc:
            tls = isinstance(exc, aiohttp.ClientSSLError)
            raise HttpFailure(f"{where}: {_connect_reason(exc)}", tls=tls) from None
        except aiohttp.InvalidURL:
            raise HttpFailure(f"invalid URL {where}", retryable=False) from None
        except (aiohttp.ClientError, OSError) as exc:
            # Disconnects, resets, malformed answers: the next attempt may well succeed.
            raise HttpFailure(f"{where}: {type(exc).__name__}") from None

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        connect_timeout: float,
        read_timeout: float | None,
    ) -> AsyncIterator[HttpStream]:
        """One request whose answer is read as it arrives (no redirects followed, no overall time limit).

        ``connect_timeout`` bounds connecting and ``read_timeout`` every wait for data (headers or body); the
        connection is closed on leaving the block unless the body was read to its end. A failure to connect or
        to get the headers raises :class:`HttpFailure`, like :meth:`request`.
        """
        where = redact_url(url)
        session = self._session_for_loop()
        timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        try:
            response = await session.request(
                method, url, headers=dict(headers or {}), timeout=timeout, allow_redirects=False
            )
        except TimeoutError:
            raise HttpFailure(f"{where}: timed out") from None
        except aiohttp.ClientConnectorError as exc:
            tls = isinstance(exc, aiohttp.ClientSSLError)
            raise HttpFailure(f"{where}: {_connect_reason(exc)}", tls=tls) from None
        except aiohttp.InvalidURL:
            raise HttpFailure(f"invalid URL {where}", retryable=False) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise HttpFailure(f"{where}: {type(exc).__name__}") from None
        try:
            yield HttpStream(response.status, response.headers, where, response.content, read_timeout)
        finally:
            if response.content.at_eof():
                response.release()
            else:
                response.close()  # a half-read stream cannot go back to the pool

    async def close(self) -> None:
        """Close the session (idempotent; a later request opens a new one)."""
        session, self._session, self._loop = self._session, None, None
        if session is not None and not session.closed:
            await session.close()


def _decode(raw: bytes, charset: str | None) -> str:
    try:
        return raw.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return raw.decode("utf-8", errors="replace")


def _connect_reason(exc: aiohttp.ClientConnectorError) -> str:
    """A short reason for a failed connect, without the exception's text (which repeats the URL's host line)."""
    if isinstance(exc, _DNS_ERRORS) or isinstance(exc.os_error, socket.gaierror):
        return "DNS lookup failed for the host"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS handshake failed ({type(exc).__name__})"
    error = exc.os_error
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError):
        return "connect timed out"
    return f"cannot connect ({error.strerror or type(error).__name__})"
