"""The ``http_hook`` action: POST a JSON notice to the application (e.g. its own cache-clear endpoint).

The body names the level and the memory numbers; the app decides what to do. A hook that fails is reported in
the action's result and never retried (the next level change calls it again).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from memmon.model import ActionResult, frozen_mapping


def _where(url: str) -> str:
    """scheme://host:port only: hook URLs may embed tokens."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


class HttpHookAction:
    """POSTs ``{"level": ..., "memory_usage_mb": ..., ...}`` to one URL."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout

    async def run(self, notice: dict[str, Any]) -> ActionResult:
        """One POST; success on a 2xx answer."""
        started = time.time()
        status: int | None = None
        error: str | None = None
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session,
                session.post(self.url, json=notice) as response,
            ):
                status = response.status
                if not 200 <= status < 300:
                    error = f"{_where(self.url)} answered {status}"
        except TimeoutError:
            error = f"{_where(self.url)} did not answer in {self.timeout:g}s"
        except aiohttp.ClientError as exc:
            error = f"{_where(self.url)}: {type(exc).__name__}"
        return ActionResult(
            action="http_hook",
            success=error is None,
            started_at=started,
            duration_seconds=time.time() - started,
            detail=frozen_mapping({"status": status, "hook": _where(self.url)}),
            error=error,
        )
