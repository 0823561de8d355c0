"""Windowed tracemalloc: which source lines allocated the memory that survived a window (library mode).

tracemalloc left on all the time slows allocation-heavy code several times over (``bench/leaks_tracemalloc.py``
measures it), and diffing two big snapshots takes seconds. So it runs in windows: ``start()`` when growth is
suspected (or on request), let the service run a few minutes, ``finish()``. tracemalloc traces only blocks
allocated after it started and forgets a block when it is freed, so the one snapshot taken at the end holds
exactly the window's survivors: what was allocated during the window and is still alive. Grouped by source
line, the biggest survivors name a leak's line; tracing is stopped right after the snapshot, so the grouping
runs at full speed.

``finish()`` costs time and transient memory in proportion to the blocks traced at the end (the snapshot is
a Python list of them): here about 0.6 µs and 180 bytes per block, so 0.5 ms for a few hundred survivors but
2.5 s and 700 MB for the 4 million blocks of a million surviving small dicts. Keep windows short where many
objects survive; ``tracemalloc.get_tracemalloc_memory()`` (about 45 bytes per block) tells how many there are.

A window need not run its whole length: once it has traced enough, a caller may end it early.
``traced_growth()`` reads tracemalloc's counter of traced bytes (O(1), no snapshot): no line can hold more than
that, so it gates the costly question; ``finish_if(min_top_bytes)`` takes one snapshot and closes the window only
if its biggest line already holds ``min_top_bytes``, otherwise tracing goes on.

Sizes and counts in a report are that **delta**: bytes and blocks allocated during the window and still alive
at ``finish()``, not everything a line ever allocated. Counts are tracemalloc blocks: a ``bytearray`` is two
(the object and its buffer), a ``bytes`` one. A block allocated before the window and resized (``realloc``)
during it counts with its full new size. Cyclic garbage not yet collected counts as alive (no ``gc.collect()``
is run here: it pauses the process).

When somebody else already traces (``tracemalloc.is_tracing()`` at ``start()``), the profiler shares that
trace and never stops it. The shared trace also holds blocks from before the window, so ``start()`` then
groups a baseline snapshot and ``finish()`` reports each traceback's growth over it: a second snapshot, and
with a big shared trace both calls cost what a snapshot of it costs (seconds at a million blocks). The
traceback depth is then the running trace's own (``tracemalloc.get_traceback_limit()``), capped at ``frames``.

Left out of a report: memmon's own allocations (a frame in a file under the memmon package directory; so
what memmon calls back into, such as ``snapshot_now``'s ``sleep``, counts as memmon's too),
tracemalloc's (a frame in ``tracemalloc.py``: the snapshot itself in a shared trace), importlib's (a frame in
``<frozen importlib._bootstrap...>``: a module imported during the window costs once, it does not leak) and
the interpreter's ``<unknown>`` (no Python frame). "A frame" means one of the recorded ``frames``: memmon's
work deeper than that in the standard library is not recognised as memmon's.

tracemalloc records file and line only; the function in ``traceback`` entries is found by reading the source
upward from the line to the enclosing ``def``/``class`` lines (indentation, best effort: cheap where parsing
a big file is not), ``?`` when there is no source (``<string>``, frozen modules).
"""

from __future__ import annotations

import os
import threading
import time
import tokenize
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass


def _memmon_prefixes() -> tuple[str, ...]:
    """``<memmon package directory>/`` as imported and with symlinks resolved."""
    here = os.path.abspath(__file__)
    directories = (
        os.path.dirname(os.path.dirname(here)),
        os.path.dirname(os.path.dirname(os.path.realpath(here))),
    )
    return tuple(dict.fromkeys(directory + os.sep for directory in directories))


_MEMMON_PREFIXES = _memmon_prefixes()
_EXCLUDED_FILES = frozenset({tracemalloc.__file__, "<unknown>"})
_IMPORTLIB_PREFIX = "<frozen importlib._bootstrap"


@dataclass(frozen=True)
class AllocationSite:
    """One source line whose allocations survived the window.

    ``size_bytes``/``count`` are the window's surviving bytes and blocks allocated at ``file:line`` (the delta,
    see the module docstring). ``traceback`` is the call path of the biggest share of them, as
    ``"file:line in function"`` entries, innermost (``file:line`` itself) last, at most ``frames`` entries.
    """

    file: str
    line: int
    size_bytes: int
    count: int
    traceback: tuple[str, ...]


@dataclass(frozen=True)
class AllocationReport:
    """The outcome of one window: its top allocation sites by surviving size.

    ``started_at``/``taken_at`` are wall-clock epoch seconds (the profiler's clock), ``window_seconds`` their
    difference, ``frames`` the traceback depth the sites were recorded with. ``traced_bytes`` is what
    tracemalloc traced at ``finish()`` before anything was left out (in a shared trace: everything that trace
    holds). ``overhead_note`` says in words what the window cost.
    """

    started_at: float
    taken_at: float
    window_seconds: float
    frames: int
    sites: tuple[AllocationSite, ...]
    traced_bytes: int
    overhead_note: str


_Key = tuple[tuple[str, int], ...]
"""A traceback as ``(filename, lineno)`` pairs, most recent first."""


class AllocationProfiler:
    """Windowed tracemalloc: ``start()`` begins tracing, ``finish()`` reports the window's survivors.

    ``start()`` begins tracing with ``frames`` frames per traceback, unless somebody else traces already: then
    it uses the running trace and never stops it. ``finish()`` takes ONE snapshot (what was allocated since
    ``start()`` and is still alive: the window's survivors), stops tracing (only if it started it), groups the
    snapshot by traceback and line, leaves out memmon's, tracemalloc's, importlib's and ``<unknown>``
    allocations, keeps the ``top`` sites by size and drops the snapshot. Sizes and counts are the delta:
    surviving bytes and blocks allocated during the window (see the module docstring).

    ``finish_if(min_top_bytes)`` is ``finish()`` only once the top site holds ``min_top_bytes`` (see the module
    docstring): the way to end a window early.

    Thread-safe: a worker thread may run ``snapshot_now()`` while another reads ``active``.
    """

    def __init__(self, *, frames: int = 5, top: int = 10, clock: Callable[[], float] = time.time) -> None:
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        if top < 1:
            raise ValueError(f"top must be >= 1, got {top}")
        self._frames = frames
        self._top = top
        self._clock = clock
        self._lock = threading.Lock()
        self._started_at: float | None = None
        self._started_mono = 0.0
        self._traced_at_start = 0
        self._owns_trace = False
        self._baseline: dict[_Key, tuple[int, int]] | None = None

    @property
    def active(self) -> bool:
        """Whether a window is open (``start()`` was called and ``finish()`` not yet)."""
        return self._started_at is not None

    @property
    def started_at(self) -> float | None:
        """Wall-clock start of the open window, None when none is open."""
        return self._started_at

    @property
    def elapsed(self) -> float:
        """Seconds the open window has run (a monotonic clock), 0 when none is open."""
        return 0.0 if self._started_at is None else time.perf_counter() - self._started_mono

    def traced_growth(self) -> int:
        """Bytes tracemalloc traces now beyond what it traced when the window opened; 0 when no window is open.

        O(1) (tracemalloc's own counter, no snapshot): an upper bound of what the window's top site can hold, so
        a caller asks :meth:`finish_if` (one snapshot) only once this has grown enough. It counts every traced
        allocation still alive, memmon's and tracemalloc's own included, and goes down when blocks are freed.
        """
        if self._started_at is None or not tracemalloc.is_tracing():
            return 0
        return max(0, tracemalloc.get_traced_memory()[0] - self._traced_at_start)

    def start(self) -> bool:
        """Open a window; False (and nothing changes) when one is already open."""
        with self._lock:
            if self._started_at is not None:
                return False
            if tracemalloc.is_tracing():
                self._owns_trace = False
                self._baseline = _grouped(tracemalloc.take_snapshot())
            else:
                self._owns_trace = True
                self._baseline = None
                tracemalloc.start(self._frames)
            self._traced_at_start = tracemalloc.get_traced_memory()[0]
            self._started_mono = time.perf_counter()
            self._started_at = self._clock()
            return True

    def finish(self) -> AllocationReport:
        """Close the window and report its top sites; ``RuntimeError`` when no window is open.

        Also ``RuntimeError`` when somebody stopped tracemalloc during the window (nothing is left to report).
        """
        report = self._close(None)
        assert report is not None  # an unconditional close always reports
        return report

    def finish_if(self, min_top_bytes: float) -> AllocationReport | None:
        """Close the window and report, but only if its top site already holds ``min_top_bytes`` surviving bytes;
        else leave it open (tracing goes on) and return None. ``RuntimeError`` like :meth:`finish`.

        One snapshot either way; when the window stays open, that snapshot was grouped while tracing ran (slower,
        and its transient memory was traced as tracemalloc's and memmon's own, which reports leave out).
        """
        return self._close(min_top_bytes)

    def _close(self, min_top_bytes: float | None) -> AllocationReport | None:
        with self._lock:
            started_at = self._started_at
            if started_at is None:
                raise RuntimeError("no allocation window is open: call start() first")
            owns, baseline = self._owns_trace, self._baseline
            began = time.perf_counter()
            if not tracemalloc.is_tracing():
                self._end(owns)
                raise RuntimeError("tracemalloc was stopped by somebody else during the window")
            grouped: dict[_Key, tuple[int, int]] | None = None
            try:
                snapshot = tracemalloc.take_snapshot()
                taken_at = self._clock()
                traced_bytes, _peak = tracemalloc.get_traced_memory()
                own_memory = tracemalloc.get_tracemalloc_memory()
                if min_top_bytes is not None:
                    grouped = _grouped(snapshot, baseline)
                    if _top_line_size(grouped) < min_top_bytes:
                        return None
            except BaseException:
                self._end(owns)
                raise
            # Stopped before the grouping when that is still to do: it then runs at full speed.
            self._end(owns)
            window = began - self._started_mono
            blocks = len(snapshot.traces)
            limit = snapshot.traceback_limit
            if grouped is None:
                grouped = _grouped(snapshot, baseline)
            del snapshot
            frames = min(self._frames, limit)
            sites = _top_sites(grouped, self._top, frames)
            spent = time.perf_counter() - began
        how = "ran" if owns else "was already running (shared, left on)"
        note = (
            f"tracemalloc {how} for {window:.1f} s with {limit} frame{'s' * (limit != 1)} per allocation, "
            f"slowing allocation-heavy code several times over meanwhile, and held {own_memory / 2**20:.1f} MiB "
            f"for {blocks} traced blocks; snapshot and grouping took {spent * 1000:.1f} ms"
        )
        return AllocationReport(
            started_at=started_at,
            taken_at=taken_at,
            window_seconds=taken_at - started_at,
            frames=frames,
            sites=sites,
            traced_bytes=traced_bytes,
            overhead_note=note,
        )

    def _end(self, owns: bool) -> None:
        """Forget the open window and stop tracing if this profiler started it (the lock is held)."""
        self._started_at, self._baseline = None, None
        if owns and tracemalloc.is_tracing():
            tracemalloc.stop()

    def snapshot_now(
        self, window_seconds: float, sleep: Callable[[float], None] = time.sleep
    ) -> AllocationReport:
        """Start, wait ``window_seconds`` with ``sleep``, finish: a blocking on-request report (worker thread).

        ``RuntimeError`` when a window is already open. Tracing started here is stopped even if ``sleep``
        raises.
        """
        if window_seconds < 0:
            raise ValueError(f"window_seconds must be >= 0, got {window_seconds}")
        if not self.start():
            raise RuntimeError("an allocation window is already open")
        try:
            sleep(window_seconds)
        except BaseException:
            self._abandon()
            raise
        return self.finish()

    def _abandon(self) -> None:
        """Close the open window without a report (stopping tracing if this profiler started it)."""
        with self._lock:
            if self._started_at is not None and self._owns_trace and tracemalloc.is_tracing():
                tracemalloc.stop()
            self._started_at, self._baseline = None, None


def _grouped(
    snapshot: tracemalloc.Snapshot, baseline: dict[_Key, tuple[int, int]] | None = None
) -> dict[_Key, tuple[int, int]]:
    """``(size, count)`` per distinct traceback (most recent frame first), left-out allocations removed; with a
    ``baseline`` (a shared trace), only what grew over it."""
    excluded: dict[str, bool] = {}
    grouped: dict[_Key, tuple[int, int]] = {}
    for statistic in snapshot.statistics("traceback"):
        key = tuple((frame.filename, frame.lineno) for frame in reversed(statistic.traceback))
        if not any(_excluded(filename, excluded) for filename, _line in key):
            grouped[key] = (statistic.size, statistic.count)
    return grouped if baseline is None else _grown(grouped, baseline)


def _excluded(filename: str, memo: dict[str, bool]) -> bool:
    """Whether a frame in ``filename`` marks an allocation as memmon's, tracemalloc's, importlib's or unknown."""
    verdict = memo.get(filename)
    if verdict is None:
        verdict = (
            filename in _EXCLUDED_FILES
            or filename.startswith(_IMPORTLIB_PREFIX)
            or filename.startswith(_MEMMON_PREFIXES)
        )
        memo[filename] = verdict
    return verdict


def _grown(
    now: dict[_Key, tuple[int, int]], before: dict[_Key, tuple[int, int]]
) -> dict[_Key, tuple[int, int]]:
    """Per traceback, what grew since ``before`` (tracebacks that did not grow are left out)."""
    grown: dict[_Key, tuple[int, int]] = {}
    for key, (size, count) in now.items():
        old_size, old_count = before.get(key, (0, 0))
        if size > old_size:
            grown[key] = (size - old_size, max(count - old_count, 0))
    return grown


def _line_totals(
    grouped: dict[_Key, tuple[int, int]],
) -> tuple[dict[tuple[str, int], tuple[int, int]], dict[tuple[str, int], tuple[int, _Key]]]:
    """Tracebacks folded into their innermost line: ``(size, count)`` per line, and each line's biggest path."""
    totals: dict[tuple[str, int], tuple[int, int]] = {}
    biggest: dict[tuple[str, int], tuple[int, _Key]] = {}
    for key, (size, count) in grouped.items():
        line = key[0]
        total_size, total_count = totals.get(line, (0, 0))
        totals[line] = (total_size + size, total_count + count)
        if line not in biggest or size > biggest[line][0]:
            biggest[line] = (size, key)
    return totals, biggest


def _top_line_size(grouped: dict[_Key, tuple[int, int]]) -> int:
    """The surviving bytes of the biggest line (0 when nothing is left)."""
    totals, _biggest = _line_totals(grouped)
    return max((size for size, _count in totals.values()), default=0)


def _top_sites(grouped: dict[_Key, tuple[int, int]], top: int, frames: int) -> tuple[AllocationSite, ...]:
    """Fold tracebacks into their innermost line; the ``top`` lines by size, each with its biggest path."""
    totals, biggest = _line_totals(grouped)
    ranked = sorted(totals.items(), key=lambda item: (-item[1][0], item[0]))[:top]
    sources: dict[str, list[str] | None] = {}
    return tuple(
        AllocationSite(
            file=filename,
            line=lineno,
            size_bytes=size,
            count=count,
            traceback=tuple(
                f"{path}:{number} in {_function_at(path, number, sources)}"
                for path, number in reversed(biggest[(filename, lineno)][1][:frames])
            ),
        )
        for (filename, lineno), (size, count) in ranked
    )


_SCOPE_KEYWORDS = ("def ", "async def ", "class ")


def _function_at(filename: str, lineno: int, sources: dict[str, list[str] | None]) -> str:
    """The qualified name of the function or class around ``lineno`` (``<module>`` at top level, ``?`` unknown).

    Walks up from the line: every non-blank, non-comment line indented less than the innermost block found so
    far opens an enclosing block, and the ``def``/``class`` ones name it. Cheap, and right for ordinary code;
    a multi-line string dedented below its block can cut the walk short.
    """
    if filename not in sources:
        sources[filename] = _source_lines(filename)
    lines = sources[filename]
    if lines is None or not 1 <= lineno <= len(lines):
        return "?"
    text = lines[lineno - 1]
    indent = len(text) - len(text.lstrip()) if text.strip() else len(text)
    names: list[tuple[str, bool]] = []
    for number in range(lineno - 1, 0, -1):
        if indent == 0:
            break
        text = lines[number - 1]
        body = text.lstrip()
        if not body or body.startswith("#"):
            continue
        depth = len(text) - len(body)
        if depth >= indent:
            continue
        indent = depth
        if body.startswith(_SCOPE_KEYWORDS):
            head = body.removeprefix("async ").split(None, 1)
            name = head[1].split("(", 1)[0].split(":", 1)[0].strip() if len(head) > 1 else ""
            names.append((name or "?", head[0] == "class"))
    if not names:
        return "<module>"
    qualname = ""
    for name, is_class in reversed(names):
        qualname += name
        qualname += "." if is_class else ".<locals>."
    last_is_class = names[0][1]
    return qualname.removesuffix("." if last_is_class else ".<locals>.")


def _source_lines(filename: str) -> list[str] | None:
    """A source file's lines (decoded as Python decodes it), None when it cannot be read."""
    if filename.startswith("<"):
        return None
    try:
        with tokenize.open(filename) as source:
            return source.read().splitlines()
    except (OSError, SyntaxError, ValueError):
        return None
