"""The ``http_hook`` action: POST a JSON notice to the application (e.g. its own cache-clear endpoint).

The body names the level and the memory numbers; the app decides what to do. A hook that fails is reported in
the action's result and never retried (the next level change calls it again). The POST goes through the shared
:class:`~memmon.kits.http_client.HttpClient`: ``timeout`` bounds the whole call, a 307/308 is followed with the
same POST (credentials only to the same origin) while 301/302/303 are reported naming the new ``Location``, and
no error names more of the URL than ``scheme://host:port`` (hook URLs may embed tokens).
"""

from __future__ import annotations

import json
import time
from typing import Any

import memmon
from memmon.kits.http_client import HttpClient, HttpFailure
from memmon.kits.redaction import redact_url
from memmon.model import ActionResult, frozen_mapping


class HttpHookAction:
    """POSTs ``{"level": ..., "memory_usage_mb": ..., ...}`` to one URL."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout

    async def run(self, notice: dict[str, Any]) -> ActionResult:
        """One POST (and its 307/308 hops); success on a 2xx answer."""
        started = time.time()
        status: int | None = None
        error: str | None = None
        body = json.dumps(notice, default=str, separators=(",", ":")).encode("utf-8")
        async with HttpClient(user_agent=f"memmon/{memmon.__version__}") as client:
            try:
                answer = await client.request(
                    "POST",
                    self.url,
                    body=body,
                    headers={"Content-Type": "application/json"},
                    timeout=self.timeout,
                )
            except HttpFailure as failure:
                status, error = failure.status, failure.reason
            else:
                status = answer.status
                if not answer.ok:
                    quoted = answer.excerpt()
                    error = f"{answer.where} answered HTTP {status}" + (f": {quoted}" if quoted else "")
        return ActionResult(
            action="http_hook",
            success=error is None,
            started_at=started,
            duration_seconds=time.time() - started,
            detail=frozen_mapping({"status": status, "hook": redact_url(self.url)}),
            error=error,
        )
