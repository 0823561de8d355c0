"""What a request that must not change its method does with a redirect answer (RFC 9110 §15.4).

* 307 (Temporary Redirect) and 308 (Permanent Redirect) forbid changing the method (§15.4.8, §15.4.9): the same
  request with the same body and headers is sent to the ``Location``, at most :data:`MAX_REDIRECTS` hops (the
  caller keeps all of them within its one timeout).
* 301, 302 and 303 let (303: make) a client turn a POST into a GET (§15.4.2-§15.4.4), which would drop the
  body: they are not followed but refused with a final error naming the ``Location``, so the operator can put
  the new URL into the configuration.
* Never followed: a ``Location`` that is not http(s), and a downgrade from https to http (the request, and the
  credentials of the configured URL, would then travel in clear text).
* Credentials stay with their origin (scheme, host, port; RFC 6454): on a hop to another origin the
  ``Authorization``/``Proxy-Authorization`` headers are dropped, and URL userinfo is never carried over (a
  relative ``Location`` keeps the configured origin and so its credentials; an absolute one brings its own).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urljoin, urlsplit

from memmon.kits.redaction import DEFAULT_PORTS, Redactor

MAX_REDIRECTS = 5
FOLLOWED = frozenset({307, 308})
NOT_FOLLOWED = frozenset({301, 302, 303})
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization"})


class RedirectRefused(Exception):
    """A redirect that is not followed; final (``retryable`` is False): the same answer will come again."""

    retryable = False

    def __init__(self, reason: str, *, status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def origin(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of ``url``, the default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme)


def next_hop(
    current: str,
    status: int,
    location: str | None,
    headers: Mapping[str, str],
    *,
    where: str,
    hops: int,
    redact: Redactor,
    method: str = "POST",
) -> tuple[str, dict[str, str]]:
    """The URL and headers of the next request after a ``status`` answer from ``current``.

    ``hops`` is the number of redirects followed so far; ``where`` names the server in messages (see
    :func:`memmon.kits.redaction.redact_url`). Raises :class:`RedirectRefused` (naming the scrubbed
    ``Location``) for 301/302/303, a missing or unusable ``Location``, a downgrade to http, or more than
    :data:`MAX_REDIRECTS` hops.
    """
    shown = redact(location or "")
    if not location:
        raise RedirectRefused(f"{where} answered HTTP {status} without a Location", status=status)
    target = urljoin(current, location.strip())
    if status in NOT_FOLLOWED:
        raise RedirectRefused(
            f"{where} answered HTTP {status} (moved to {shown}): {status} is not followed for a {method} "
            "(it may turn into a GET, RFC 9110 §15.4); put the new URL into the configuration",
            status=status,
        )
    new_scheme = urlsplit(target).scheme.lower()
    if new_scheme not in DEFAULT_PORTS or not urlsplit(target).hostname:
        raise RedirectRefused(
            f"{where} answered HTTP {status} with an unusable Location {shown}", status=status
        )
    if origin(current)[0] == "https" and new_scheme == "http":
        raise RedirectRefused(
            f"{where} answered HTTP {status} redirecting from https to http ({shown}): not followed, the request "
            "would travel in clear text",
            status=status,
        )
    if hops >= MAX_REDIRECTS:
        raise RedirectRefused(
            f"{where}: more than {MAX_REDIRECTS} redirects (last to {shown})", status=status
        )
    kept = dict(headers)
    if origin(target) != origin(current):
        kept = {name: value for name, value in kept.items() if name.lower() not in _CREDENTIAL_HEADERS}
    return target, kept
