"""Validating what HTTP clients send: query parameters and the token that guards mutating endpoints."""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
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


def require_token(request: web.Request, token: str | None) -> None:
    """Guard a mutating endpoint.

    With a token configured: ``Authorization: Bearer <token>`` is required (401 otherwise; compared in constant
    time). Without one: only loopback clients may act (403 otherwise), so an agent bound to 0.0.0.0 without a
    token cannot be driven from the network.
    """
    if token is None:
        if not is_loopback(request.remote):
            raise json_error(
                403,
                "forbidden",
                "actions are accepted only from loopback unless MEMMON_API_TOKEN is set",
            )
        return
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
        error = json_error(401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is required")
        error.headers["WWW-Authenticate"] = 'Bearer realm="memmon"'
        raise error
