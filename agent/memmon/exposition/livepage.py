"""The live page (``GET /``): one self-contained HTML file (no CDN, no build step) served with the agent's state of
the moment embedded, so that its first paint shows the real level instead of waiting for its first fetch.

The state travels in a ``<script type="application/json">`` data block: a data block is never executed, and its
JSON is escaped so that nothing in it (a receiver's error text, a target name) can end the block early. The
Content-Security-Policy allows exactly the page's own inline script and style, by hash (CSP Level 2
``'sha256-...'`` sources), and no other origin.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

from aiohttp import web

log = logging.getLogger("memmon.server")

STATE_BLOCK = '<script type="application/json" id="state">null</script>'
"""The placeholder in ``page/index.html`` that :meth:`LivePage.render` fills."""
EMBEDDED = {"health": "/health", "memory": "/health/memory", "targets": "/health/targets"}
"""Key in the page's state -> the answer embedded there: the agent's in-memory state (no store read; the list of
targets, worst first, is what the page lists when there is more than one); the chart and the alert list come by
fetch."""


def embed_json(value: Any) -> str:
    """``value`` as JSON that is safe inside an HTML ``<script>`` element: ``<``, ``>`` and ``&`` are written as
    ``\\u003c``-style escapes (still the same JSON string), so no ``</script>`` or ``<!--`` can appear in it (the
    HTML parser ends a script element at ``</script`` whatever the JavaScript or JSON around it)."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _source_hash(text: str) -> str:
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    return f"'sha256-{digest}'"


class LivePage:
    """The page template, split at its state placeholder, and the policy that allows its inline code only."""

    def __init__(self, html: str) -> None:
        if html.count(STATE_BLOCK) != 1:
            raise ValueError(f"the live page needs exactly one {STATE_BLOCK!r}")
        self._before, self._after = html.split(STATE_BLOCK)
        # Hash sources cover the element's text exactly as written between its tags (CSP3 section 8.3).
        scripts = " ".join(_source_hash(s) for s in re.findall(r"<script>(.*?)</script>", html, re.DOTALL))
        styles = " ".join(_source_hash(s) for s in re.findall(r"<style>(.*?)</style>", html, re.DOTALL))
        self.policy = (
            f"default-src 'none'; script-src {scripts}; style-src {styles}; connect-src 'self'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
        """The Content-Security-Policy header: this agent only, and only the page's own code."""

    def render(self, state: Mapping[str, Any]) -> bytes:
        """The page with ``state`` embedded (``null`` when it cannot be written as JSON, e.g. a NaN)."""
        try:
            data = embed_json(dict(state))
        except (TypeError, ValueError) as exc:
            log.warning("live page served without its state: %s", exc)
            data = "null"
        return (
            f'{self._before}<script type="application/json" id="state">{data}</script>{self._after}'.encode()
        )


async def current_answer(request: web.Request, path: str) -> Any:
    """What ``GET path`` on the same application answers now, as JSON (None when it answers an error): the very
    handler the page would fetch, so the embedded state and the fetched one never differ in shape."""
    probe = request.clone(rel_url=path)
    match = await request.app.router.resolve(probe)
    try:
        response = await match.handler(probe)
    except web.HTTPException:
        return None  # e.g. 503 "no sample yet": the page shows that it waits for the first check
    except Exception:  # a failing endpoint must not take the page down: the page's own fetch will report it
        log.exception("live page: %s failed", path)
        return None
    if (
        not isinstance(response, web.Response)
        or response.status != 200
        or not isinstance(response.body, bytes)
    ):
        return None
    return json.loads(response.body)


@functools.cache
def live_page() -> LivePage:
    """The shipped page (``page/index.html``), read and hashed on the first ``GET /``: an agent nobody opens in a
    browser never holds it."""
    return LivePage(resources.files("memmon.exposition").joinpath("page/index.html").read_text("utf-8"))
