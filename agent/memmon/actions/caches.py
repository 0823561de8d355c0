"""Caches the app registers so memmon can clear them under memory pressure (action ``clear_caches``).

Clearing a cache frees what it holds at once and costs only the refills, where a full ``gc.collect()`` pauses
the whole process and frees only cyclic garbage: at warning/critical, clearing caches comes first.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass
from typing import Any

from memmon.model import ActionResult, frozen_mapping

ACCEPTED = (
    "a clear function, or an object with .cache_clear() (functools.lru_cache / functools.cache) "
    "or .clear() (dict, cachetools)"
)


@dataclass(frozen=True, slots=True)
class _Cache:
    clear: Callable[[], object]
    size: Callable[[], int] | None
    """The number of entries held, where measurable."""


def _adapt(name: str, cache: Any) -> _Cache:
    """How to clear (and measure) ``cache``; ``cache_clear`` first, because lru_cache wrappers are callable."""
    if isinstance(cache, type):
        raise TypeError(
            f"cache {name!r}: expected {ACCEPTED}; got the class {cache.__name__} (register an instance)"
        )
    cache_clear = getattr(cache, "cache_clear", None)
    if callable(cache_clear):
        cache_info = getattr(cache, "cache_info", None)
        size = None if not callable(cache_info) else lambda: int(cache_info().currsize)
        return _Cache(cache_clear, size)
    clear = getattr(cache, "clear", None)
    if callable(clear):
        return _Cache(clear, (lambda: len(cache)) if isinstance(cache, Sized) else None)
    if callable(cache):
        return _Cache(cache, None)
    raise TypeError(f"cache {name!r}: expected {ACCEPTED}; got {type(cache).__name__}")


def describe(exc: BaseException) -> str:
    """``ExcType: message``, as action results report errors."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class CacheRegistry:
    """Named caches the app registers once (at startup) and memmon clears at warning/critical/emergency.

    Thread-safe: register from any thread, clear from memmon's loop. A clear runs the app's own clear functions
    in the calling thread, one after the other, outside the registry's lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._caches: dict[str, _Cache] = {}

    def register(self, name: str, cache: Callable[[], object] | Any) -> None:
        """Register ``cache`` under ``name``: a clear function, or an object with ``.cache_clear()``
        (``functools.lru_cache`` / ``functools.cache`` wrappers) or ``.clear()`` (``dict``, cachetools caches).

        ``TypeError`` for anything else; ``ValueError`` when ``name`` is empty or already registered.
        """
        if not name:
            raise ValueError("a cache needs a non-empty name")
        adapted = _adapt(name, cache)
        with self._lock:
            if name in self._caches:
                raise ValueError(f"a cache named {name!r} is already registered")
            self._caches[name] = adapted

    def unregister(self, name: str) -> None:
        """Forget the cache ``name``; an unknown name is ignored."""
        with self._lock:
            self._caches.pop(name, None)

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        with self._lock:
            return tuple(self._caches)

    def clear(self, names: Iterable[str] | None = None) -> ActionResult:
        """Clear every registered cache, or those in ``names`` (an unknown name is reported as failed).

        One failing clear does not stop the others; the result succeeds when none failed. ``entries_before``
        holds the entry count of each cache where measurable (``cache_info().currsize``, ``len()``).
        """
        started_at = time.time()
        start = time.monotonic()
        with self._lock:
            wanted = list(self._caches) if names is None else list(dict.fromkeys(names))
            caches = {name: self._caches.get(name) for name in wanted}
        cleared: list[str] = []
        failed: dict[str, str] = {}
        entries_before: dict[str, int] = {}
        for name, cache in caches.items():
            if cache is None:
                failed[name] = "KeyError: no cache is registered under this name"
                continue
            if cache.size is not None:
                with contextlib.suppress(Exception):  # a cache we cannot measure is still cleared
                    entries_before[name] = cache.size()
            try:
                cache.clear()
            except Exception as exc:
                failed[name] = describe(exc)
            else:
                cleared.append(name)
        error = None
        if failed:
            error = f"{len(failed)} of {len(caches)} caches failed to clear: {', '.join(failed)}"
        return ActionResult(
            action="clear_caches",
            success=not failed,
            started_at=started_at,
            duration_seconds=time.monotonic() - start,
            detail=frozen_mapping({"cleared": cleared, "failed": failed, "entries_before": entries_before}),
            error=error,
        )
