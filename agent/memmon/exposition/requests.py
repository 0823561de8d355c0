"""Validating what HTTP clients send: query parameters and the token that guards mutating endpoints (with a
per-address back-off after repeated wrong tokens)."""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aiohttp import web

_ERRORS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    429: web.HTTPTooManyRequests,
    500: web.HTTPInternalServerError,
    503: web.HTTPServiceUnavailable,
}


def json_error(status: int, error: str, message: str, **fields: Any) -> web.HTTPException:
    """An aiohttp HTTP exception (one of ``_ERRORS``) whose body is ``{"error", "message", **fields}``."""
    body = json.dumps({"error": error, "message": message, **fields})
    return _ERRORS[status](text=body, content_type="application/json")


def number_param(request: web.Request, name: str, *, default: float, minimum: float, maximum: float) -> float:
    """A finite number in (minimum, maximum]; anything else is a 400 naming the parameter."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not minimum < value <= maximum:
        raise json_error(
            400,
            "invalid parameter",
            f"{name} must be a number greater than {minimum:g} and at most {maximum:g}; got {raw[:40]!r}",
            parameter=name,
        )
    return value


def choice_param(request: web.Request, name: str, choices: tuple[str, ...], default: str) -> str:
    """One of ``choices``; anything else is a 400 naming the parameter and the allowed values."""
    raw = request.query.get(name, default)
    if raw not in choices:
        raise json_error(
            400,
            "invalid parameter",
            f"{name} must be one of {', '.join(choices)}; got {raw[:40]!r}",
            parameter=name,
        )
    return raw


def is_loopback(remote: str | None) -> bool:
    """Whether the peer address is on 127.0.0.0/8 or ::1 (IPv4-mapped included)."""
    if not remote:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class AuthThrottle:
    """Failed token attempts per client address: after ``free_failures`` wrong tokens an address must wait, twice
    as long after each further failure (``base_seconds``, 2x, 4x ... up to ``max_seconds``), before any token
    of it is even compared. A right token clears the address's record.

    Memory is bounded: at most ``max_peers`` addresses are remembered (the least recently failing is forgotten
    first), and a record is forgotten ``max_seconds`` after its last failure. Behind a reverse proxy every
    client has the proxy's address and shares one record.
    """

    def __init__(
        self,
        *,
        free_failures: int = 5,
        base_seconds: float = 1.0,
        max_seconds: float = 300.0,
        max_peers: int = 4096,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free_failures = free_failures
        self.base_seconds = base_seconds
        self.max_seconds = max_seconds
        self.max_peers = max_peers
        self.monotonic = monotonic
        self._peers: OrderedDict[str, tuple[int, float, float]] = OrderedDict()
        """address -> (failures, last failure, blocked until), least recently failing first."""

    def wait_seconds(self, remote: str) -> float:
        """Seconds ``remote`` must still wait before its token is compared (0 when it may try now)."""
        record = self._peers.get(remote)
        if record is None:
            return 0.0
        _failures, last, until = record
        now = self.monotonic()
        if now - last > self.max_seconds:
            del self._peers[remote]
            return 0.0
        return max(0.0, until - now)

    def failed(self, remote: str) -> None:
        """Count a wrong token from ``remote``."""
        failures = self._peers.pop(remote, (0, 0.0, 0.0))[0] + 1
        now = self.monotonic()
        over = failures - self.free_failures
        delay = 0.0 if over < 0 else min(self.max_seconds, self.base_seconds * 2.0 ** min(over, 30))
        self._peers[remote] = (failures, now, now + delay)
        while len(self._peers) > self.max_peers:
            self._peers.popitem(last=False)

    def succeeded(self, remote: str) -> None:
        """A right token from ``remote``: forget its failures."""
        self._peers.pop(remote, None)


AUTH_THROTTLE = web.AppKey("memmon_auth_throttle", AuthThrottle)
"""Where an application keeps its :class:`AuthThrottle` (``require_token`` uses it when present)."""


def require_token(request: web.Request, token: str | None) -> None:
    """Guard a mutating endpoint.

    With a token configured: ``Authorization: Bearer <token>`` is required (401 otherwise; compared in constant
    time); an address that sent too many wrong tokens gets ``429`` with ``Retry-After`` until its back-off ends
    (see :class:`AuthThrottle`; only when the application holds one under :data:`AUTH_THROTTLE`). Without a
    token: only loopback clients may act (403 otherwise), so an agent bound to 0.0.0.0 without a token cannot be
    driven from the network.
    """
    if token is None:
        if not is_loopback(request.remote):
            raise json_error(
                403,
                "forbidden",
                "actions are accepted only from loopback unless MEMMON_API_TOKEN is set",
            )
        return
    throttle = request.config_dict.get(AUTH_THROTTLE)
    remote = request.remote or ""
    if throttle is not None and (wait := throttle.wait_seconds(remote)) > 0:
        error = json_error(
            429,
            "too many failed attempts",
            f"too many wrong tokens from {remote}; wait before trying again",
            retry_after_seconds=math.ceil(wait),
        )
        error.headers["Retry-After"] = str(math.ceil(wait))
        raise error
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
        if throttle is not None:
            throttle.failed(remote)
        error = json_error(401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is required")
        error.headers["WWW-Authenticate"] = 'Bearer realm="memmon"'
        raise error
    if throttle is not None:
        throttle.succeeded(remote)
