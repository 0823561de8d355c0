"""Scrubbing credentials out of text that is logged or shown: error reasons, answer excerpts, tracebacks.

What a :class:`Redactor` removes:

* the secrets it is given and their derived forms (see :func:`url_secrets` and :func:`credential_forms`): URL
  userinfo (``user:pass``, percent-decoded too), the password alone, ``base64(user:pass)`` (what HTTP Basic
  sends, RFC 7617 §2), the SMTP ``AUTH PLAIN``/``LOGIN`` base64 forms, the URL's path segments that look like
  tokens (a Slack webhook path *is* the credential), its query and fragment;
* generic forms in any text: ``scheme://user:pass@`` userinfo, ``Authorization``/``Proxy-Authorization`` header
  values, ``Basic``/``Bearer``/``Token`` credentials (RFC 9110 §11.4), ``token=``-like query parameters and Slack
  webhook paths (``hooks.slack.com/services/...``).

Replacements are ``***``; text around them is kept so that the error still says what happened.
:func:`redact_url` is the part of a URL that is always safe to show: ``scheme://host:port``.
"""

from __future__ import annotations

import base64
import re
import traceback
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

MASK = "***"
_MIN_SECRET = 3
"""Shorter configured strings are not replaced (a one-letter password would blank out every error)."""

DEFAULT_PORTS = {"http": 80, "https": 443}

_GENERIC: tuple[tuple[re.Pattern[str], str], ...] = (
    # Header lines or JSON/echo renderings of them: "Authorization: Basic xyz", "authorization='Bearer xyz'".
    (
        re.compile(
            r"""(?i)\b((?:proxy-)?authorization["']?\s*[:=]\s*["']?)(?:(?:basic|bearer|token|digest)\s+)?"""
            r"""[^\s"',;]+"""
        ),
        rf"\1{MASK}",
    ),
    # Case-sensitive on purpose: "Basic"/"Bearer" as headers spell them, not "token expired" in prose.
    (re.compile(r"\b(Basic|BASIC|Bearer|BEARER|Token)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {MASK}"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\"'<>]+@"), rf"\1{MASK}@"),
    (
        re.compile(
            r"(?i)([?&;](?:access_token|token|api[_-]?key|apikey|key|secret|client_secret|password|passwd|pwd|"
            r"auth|signature|sig|code)=)[^&\s\"'#<>]+"
        ),
        rf"\1{MASK}",
    ),
    (re.compile(r"(?i)(hooks\.slack\.com/(?:services|workflows|triggers)/)[^\s\"'<>?#]+"), rf"\1{MASK}"),
)


def redact_url(url: str) -> str:
    """``scheme://host:port`` of ``url`` (the default port filled in): no user, password, path, query or fragment.

    Safe to log and to put in failure reasons; ``<invalid url>`` when ``url`` cannot be parsed.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return "<invalid url>"
    if not parts.scheme or not host:
        return "<invalid url>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port else "")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def credential_forms(username: str | None, password: str | None) -> set[str]:
    """``password`` and the encodings HTTP Basic and SMTP AUTH PLAIN/LOGIN put on the wire."""
    if not password:
        return set()
    user = username or ""
    return {
        password,
        f"{user}:{password}",
        _b64(password),
        _b64(f"{user}:{password}"),
        _b64(f"\0{user}\0{password}"),
    }


def url_secrets(url: str) -> set[str]:
    """The parts of ``url`` that may be secret: userinfo and its Basic forms, token-like path segments, the
    path, query and fragment (all also percent-decoded)."""
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
    except ValueError:
        return {url}
    found: set[str] = set()
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        found.add(userinfo)
        user, password_part = unquote(username or ""), unquote(password or "")
        found |= credential_forms(user, password_part)
        if (
            username and not password
        ):  # a bare token as the user name (some receivers take ``https://TOKEN@``)
            found |= {username, _b64(f"{unquote(username)}:")}
    if parts.query:
        found.add(parts.query)
        found.update(
            value for _, _, value in (item.partition("=") for item in parts.query.split("&")) if value
        )
    if parts.fragment:
        found.add(parts.fragment)
    if parts.path not in ("", "/"):
        segments = [segment for segment in parts.path.split("/") if segment]
        tokens = [s for s in segments if len(s) >= 16 or (len(s) >= 6 and any(c.isdigit() for c in s))]
        found.update(tokens)
        if tokens:  # a path with a token in it is a secret as a whole
            found.add(parts.path)
    found |= {unquote(item) for item in found}
    return found


class Redactor:
    """Replaces the given secrets (longest first) and the generic credential forms with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        unique = {secret for secret in secrets if secret and len(secret) >= _MIN_SECRET}
        self._secrets = sorted(unique, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        """``text`` without any credential form."""
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        for pattern, replacement in _GENERIC:
            text = pattern.sub(replacement, text)
        return text


def redacted_traceback(exc: BaseException, redact: Redactor) -> str:
    """The formatted traceback of ``exc``, scrubbed (exception texts often quote the URL)."""
    return redact("".join(traceback.format_exception(exc)).rstrip())
