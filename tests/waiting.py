"""Waiting for a condition in async tests, bounded in time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_until(condition: Callable[[], bool], within: float = 10.0, step: float = 0.02) -> None:
    """Return once ``condition()`` holds; ``TimeoutError`` after ``within`` seconds."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - the condition is plain state owned by the code under test
            await asyncio.sleep(step)
