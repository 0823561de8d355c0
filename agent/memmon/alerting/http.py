"""JSON over HTTP for the webhook, Slack and Alertmanager channels: one POST, classified into the channel contract.

:class:`JsonPoster` turns a receiver's answer into a :class:`~memmon.alerting.channel.Receipt` or a
:class:`~memmon.alerting.channel.DeliveryFailed`:

* 2xx -> ``Receipt(status, <first 200 characters of the body>)``;
* 429 -> retryable, ``retry_after`` from the ``Retry-After`` header (seconds or an HTTP-date, RFC 9110 §10.2.3);
* 307/308 -> the same POST is sent to the ``Location`` (RFC 9110 §15.4.8/9; see :mod:`memmon.alerting.redirects`
  for the hop limit, the https downgrade refusal and why credentials never go to another origin);
  301/302/303 -> not followed, a final error naming the ``Location`` (a configuration to update);
* 408 and 5xx -> retryable; every other status (other 3xx, 4xx) -> not retryable;
* connection refused, DNS failures, resets and timeouts -> retryable.

Webhook URLs carry their credentials (a Slack incoming-webhook URL's path *is* the secret), so no reason or
detail ever contains more of the URL than :func:`redact_url` keeps: ``scheme://host:port``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import Mapping
from urllib.parse import urlsplit

import aiohttp

from memmon.alerting.channel import DeliveryFailed, Receipt
from memmon.alerting.redaction import Redactor, url_secrets
from memmon.alerting.redirects import FOLLOWED, NOT_FOLLOWED, next_hop
from memmon.kits.retryafter import parse_retry_after

EXCERPT_CHARS = 200
"""The contract's limit on ``Receipt.detail`` and on the answer quoted in a failure."""

_ANSWER_BYTES = 64 * 1024
"""How much of an answer's body is read."""

_DEFAULT_PORTS = {"http": 80, "https": 443}

# aiohttp >= 3.10 raises ClientConnectorDNSError for failed lookups; older versions a ClientConnectorError
# whose os_error is a socket.gaierror.
_DNS_ERRORS: tuple[type[Exception], ...] = tuple(
    error for error in (getattr(aiohttp, "ClientConnectorDNSError", None),) if isinstance(error, type)
)


def redact_url(url: str) -> str:
    """``scheme://host:port`` of ``url`` (the default port filled in): no user, password, path, query or fragment.

    Safe to log and to put in failure reasons; ``<invalid url>`` when ``url`` cannot be parsed.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return "<invalid url>"
    if not parts.scheme or not host:
        return "<invalid url>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port else "")


def scrub(text: str, url: str) -> str:
    """``text`` with every secret-looking part of ``url`` and every generic credential form replaced by ``***``
    (receivers may echo the path or the Authorization header)."""
    return Redactor(url_secrets(url))(text)


def excerpt(text: str, url: str) -> str:
    """A one-line excerpt of a receiver's answer, at most 200 characters, scrubbed of ``url``'s secrets."""
    flat = " ".join(scrub(text, url).split())
    return flat[:EXCERPT_CHARS]


def _user_agent() -> str:
    import memmon  # lazily: the package's __init__ is light, but keep this module importable on its own

    return f"memmon/{memmon.__version__}"


class JsonPoster:
    """POSTs JSON through one ``aiohttp.ClientSession``, created lazily inside the running loop on first use.

    Channels may share one poster; whoever created it closes it. A poster used from a new event loop (tests,
    a restarted monitor) opens a new session there, since an aiohttp session is bound to its loop.
    """

    def __init__(self, *, user_agent: str | None = None) -> None:
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _session_for_loop(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": self._user_agent or _user_agent()},
                # No cookie jar: receivers are stateless, and cookies must not travel between them.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._loop = loop
        return self._session

    async def post_json(
        self,
        url: str,
        payload: object,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float,  # noqa: ASYNC109 - the per-request limit is part of the poster's contract
    ) -> Receipt:
        """POST ``payload`` as JSON to ``url`` once; the receiver's 2xx answer, or :class:`DeliveryFailed`.

        ``timeout`` bounds the whole exchange (connect, send, read the answer). Values that JSON cannot encode
        (in alert metadata, say) are sent as their ``str()``.
        """
        where = redact_url(url)
        body = json.dumps(payload, default=str, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        sent_headers = {"Content-Type": "application/json"}
        sent_headers.update(headers or {})
        redact = Redactor(url_secrets(url))
        deadline = asyncio.get_running_loop().time() + timeout
        current = url
        for hops in itertools.count():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise DeliveryFailed(f"{where}: timed out after {timeout:g}s")
            status, text, answer_headers = await self._post_once(current, body, sent_headers, remaining, where,
                                                                 timeout)  # fmt: skip
            if status in FOLLOWED or status in NOT_FOLLOWED:
                current, sent_headers = next_hop(
                    current, status, answer_headers.get("Location"), sent_headers,
                    where=where, hops=hops, redact=Redactor(url_secrets(url) | url_secrets(current)),
                )  # fmt: skip
                continue
            return self._classify(url, where, status, redact(text), answer_headers.get("Retry-After"))
        raise AssertionError("unreachable")  # pragma: no cover - itertools.count() never ends

    async def _post_once(
        self, url: str, body: bytes, headers: Mapping[str, str], limit: float, where: str, configured: float
    ) -> tuple[int, str, Mapping[str, str]]:
        """One POST within ``limit`` seconds; ``(status, start of the answer, answer headers)``, or
        :class:`DeliveryFailed` (a timeout names the ``configured`` limit of the whole delivery)."""
        session = self._session_for_loop()
        try:
            async with session.post(
                url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=limit),
                allow_redirects=False,  # followed by post_json itself, where RFC 9110 allows it for a POST
            ) as response:
                # Only the start of the answer is ever quoted: do not buffer a huge error page.
                text = _decode(await response.content.read(_ANSWER_BYTES), response.charset)
                return response.status, text, response.headers
        except TimeoutError:
            # aiohttp's ServerTimeoutError/ConnectionTimeoutError subclass asyncio.TimeoutError (= TimeoutError).
            raise DeliveryFailed(f"{where}: timed out after {configured:g}s") from None
        except aiohttp.ClientConnectorError as exc:
            raise DeliveryFailed(f"{where}: {_connect_reason(exc)}") from None
        except aiohttp.InvalidURL:
            raise DeliveryFailed(f"invalid URL {where}", retryable=False) from None
        except (aiohttp.ClientError, OSError) as exc:
            # Disconnects, resets, malformed answers: the next attempt may well succeed.
            raise DeliveryFailed(f"{where}: {type(exc).__name__}") from None

    @staticmethod
    def _classify(url: str, where: str, status: int, text: str, retry_after_header: str | None) -> Receipt:
        answer = excerpt(text, url)
        if 200 <= status < 300:
            return Receipt(status, answer or f"HTTP {status}")
        reason = f"{where} answered HTTP {status}" + (f": {answer}" if answer else "")
        if status == 429:
            retry_after = parse_retry_after(retry_after_header)
            raise DeliveryFailed(reason, retryable=True, retry_after=retry_after, status=status)
        retryable = status == 408 or status >= 500
        raise DeliveryFailed(reason, retryable=retryable, status=status)

    async def close(self) -> None:
        """Close the session (idempotent; a later post opens a new one)."""
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
