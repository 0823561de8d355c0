"""MemoryStore against real SQLite files in tmp_path."""

from __future__ import annotations

import dataclasses
import math
import re
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from memmon.model import Alert, HistoryPoint, Level, frozen_mapping
from memmon.storage.store import MemoryStore, StoreError

T0 = 1_700_000_000.0


def make_point(ts: float, mb: float | None = 100.0, **fields: object) -> HistoryPoint:
    values: dict[str, object] = {
        "timestamp": ts,
        "level": Level.OK,
        "target": "pid:1234",
        "memory_usage_mb": mb,
        "percent": None if mb is None else mb / 10,
        "effective_limit_mb": 1000.0,
        "limit_source": "host",
    }
    values.update(fields)
    return HistoryPoint(**values)  # type: ignore[arg-type]


def full_point(ts: float) -> HistoryPoint:
    """A point with every field set to a distinct, non-default value."""
    values: dict[str, object] = {}
    for index, field in enumerate(dataclasses.fields(HistoryPoint)):
        if field.name == "level":
            values[field.name] = Level.CRITICAL
        elif field.name in ("target", "limit_source"):
            values[field.name] = f"{field.name}-value"
        elif field.name.startswith("gc_"):
            values[field.name] = 10**12 + index
        else:
            values[field.name] = ts + index + 0.1 + 1e-9
    return HistoryPoint(**values)  # type: ignore[arg-type]


def make_alert(
    alert_id: str = "a1",
    *,
    started_at: float = T0,
    resolved_at: float | None = None,
    severity: Level = Level.WARNING,
    metadata: dict[str, object] | None = None,
) -> Alert:
    return Alert(
        id=alert_id,
        fingerprint=f"fp-{alert_id}",
        severity=severity,
        component="memory",
        target="pid:1234",
        state="firing" if resolved_at is None else "resolved",
        started_at=started_at,
        resolved_at=resolved_at,
        memory_usage=812.25,
        threshold=800.0,
        message=f"memory above warning ({alert_id})",
        metadata=frozen_mapping(metadata),
    )


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[MemoryStore]:
    s = MemoryStore(tmp_path / "state", retention_seconds=3600, alert_retention_seconds=86400, clock=clock)
    s.open()
    yield s
    s.close()


def raw(store: MemoryStore, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(store.path) as db:
        return db.execute(sql).fetchall()


# -- round trips ---------------------------------------------------------------------------------------


def test_sample_round_trip_is_exact_for_every_field(store: MemoryStore) -> None:
    """A HistoryPoint read back equals the one written, every field set, and None stays None."""
    full = full_point(T0)
    sparse = make_point(T0 + 1, mb=None, level=Level.EMERGENCY)
    store.add_samples([full, sparse])
    got = store.history(0)
    assert got == [full, sparse]
    assert dataclasses.astuple(got[0]) == dataclasses.astuple(full)
    assert got[1].memory_usage_mb is None and got[1].percent is None and got[1].gc_objects is None
    assert type(got[0].level) is Level and type(got[0].gc_objects) is int


def test_level_is_stored_by_label(store: MemoryStore) -> None:
    """Samples and alerts store their level as its lower-case label, not a number."""
    store.add_samples([make_point(T0, level=Level.WARNING)])
    store.record_alerts([make_alert(severity=Level.CRITICAL)])
    assert raw(store, "SELECT level FROM samples") == [("warning",)]
    assert raw(store, "SELECT severity FROM alerts") == [("critical",)]


def test_alert_round_trip_with_metadata(store: MemoryStore) -> None:
    """An Alert read back equals the one written, with its JSON metadata frozen back read-only."""
    metadata: dict[str, object] = {
        "limit_mb": 1024.5,
        "percent_threshold": 80,
        "limit_source": "cgroup",
        "nested": {"a": [1, 2.5, None, True]},
        "note": None,
    }
    alert = make_alert("a1", metadata=metadata)
    store.record_alerts([alert])
    (got,) = store.alerts(0)
    assert got == alert
    assert dict(got.metadata) == metadata
    assert got.severity is Level.WARNING
    with pytest.raises(TypeError):
        got.metadata["x"] = 1  # type: ignore[index]


def test_record_alerts_upserts_firing_then_resolved(store: MemoryStore) -> None:
    """Recording a resolved alert with a known id updates its firing row instead of adding one."""
    firing = make_alert("a1", started_at=T0)
    resolved = dataclasses.replace(firing, state="resolved", resolved_at=T0 + 60, memory_usage=700.0)
    store.record_alerts([firing])
    assert store.active_alerts() == [firing]
    store.record_alerts([resolved])
    assert store.alerts(0) == [resolved]
    assert store.active_alerts() == []
    assert store.stats()["alerts"] == 1


def test_empty_batches_are_noops(store: MemoryStore) -> None:
    """add_samples([]) and record_alerts([]) write nothing and do not fail."""
    store.add_samples([])
    store.record_alerts([])
    assert store.stats()["samples"] == 0 and store.stats()["alerts"] == 0


def test_add_samples_is_one_transaction(store: MemoryStore) -> None:
    """A batch with one unstorable point (NaN in a required column) is rejected whole: no partial write."""
    store.add_samples([make_point(T0)])
    batch = [make_point(T0 + 1), make_point(T0 + 2, effective_limit_mb=math.nan), make_point(T0 + 3)]
    with pytest.raises(StoreError, match=re.escape(str(store.path))):
        store.add_samples(batch)
    assert [p.timestamp for p in store.history(0)] == [T0]
    store.add_samples([make_point(T0 + 4)])  # the store is still usable
    assert len(store.history(0)) == 2


# -- queries -------------------------------------------------------------------------------------------


def test_history_window_is_inclusive_and_oldest_first(store: MemoryStore) -> None:
    """history(since, until) returns since <= timestamp <= until, by timestamp whatever the insert order."""
    store.add_samples([make_point(T0 + i) for i in (5, 1, 3)])
    store.add_samples([make_point(T0 + i) for i in (0, 4, 2)])
    assert [p.timestamp - T0 for p in store.history(T0)] == [0, 1, 2, 3, 4, 5]
    assert [p.timestamp - T0 for p in store.history(T0 + 2, T0 + 4)] == [2, 3, 4]
    assert [p.timestamp - T0 for p in store.history(T0 + 4.5)] == [5]
    assert store.history(T0 + 6) == []
    assert store.history(T0 + 4, T0 + 2) == []


def test_history_equal_timestamps_keep_insertion_order(store: MemoryStore) -> None:
    """Points sharing a timestamp come back in the order they were added."""
    points = [make_point(T0, mb=float(mb)) for mb in (3, 1, 2)]
    store.add_samples(points)
    assert store.history(T0, T0) == points


def test_history_query_uses_timestamp_index(store: MemoryStore) -> None:
    """The window query is served by the timestamp index, not a table scan."""
    plan = raw(store, "EXPLAIN QUERY PLAN SELECT * FROM samples WHERE timestamp >= 1 ORDER BY timestamp")
    assert any("samples_timestamp" in str(row[-1]) for row in plan), plan


def test_alerts_since_selects_recent_or_firing_newest_first(store: MemoryStore) -> None:
    """alerts(since): started or resolved at/after since, or still firing; newest transition first."""
    since = T0 + 1000
    old_resolved = make_alert("old-resolved", started_at=T0, resolved_at=T0 + 10)
    old_firing = make_alert("old-firing", started_at=T0 + 5)
    resolved_late = make_alert("resolved-late", started_at=T0 + 20, resolved_at=since + 50)
    new_firing = make_alert("new-firing", started_at=since + 10)
    new_resolved = make_alert("new-resolved", started_at=since, resolved_at=since + 30)
    boundary = make_alert("boundary", started_at=T0 + 30, resolved_at=since)
    store.record_alerts([old_resolved, old_firing, resolved_late, new_firing, new_resolved, boundary])
    got = [a.id for a in store.alerts(since)]
    assert got == ["resolved-late", "new-resolved", "new-firing", "boundary", "old-firing"]


def test_active_alerts_returns_only_firing_oldest_first(store: MemoryStore) -> None:
    """active_alerts() is exactly the firing alerts, by start time."""
    store.record_alerts(
        [
            make_alert("b", started_at=T0 + 2),
            make_alert("r", started_at=T0, resolved_at=T0 + 1),
            make_alert("a", started_at=T0 + 1, severity=Level.EMERGENCY),
        ]
    )
    assert [a.id for a in store.active_alerts()] == ["a", "b"]


# -- retention -----------------------------------------------------------------------------------------


def test_prune_by_age_keeps_firing_alerts(store: MemoryStore, clock: FakeClock) -> None:
    """prune() with the fake clock drops old samples and old resolved alerts, never a firing alert."""
    store.add_samples([make_point(T0 + i * 600) for i in range(10)])  # T0 .. T0+5400
    store.record_alerts(
        [
            make_alert("ancient-firing", started_at=T0 - 30 * 86400),
            make_alert("old-resolved", started_at=T0 - 3 * 86400, resolved_at=T0 - 2 * 86400),
            make_alert("recent-resolved", started_at=T0 - 3 * 86400, resolved_at=T0 - 3600),
        ]
    )
    clock.now = T0 + 5400
    assert store.prune() == (3, 1)  # samples older than now-3600 = T0+1800: T0, +600, +1200
    assert store.history(0)[0].timestamp == T0 + 1800  # exactly at the cutoff stays
    assert {a.id for a in store.alerts(0)} == {"ancient-firing", "recent-resolved"}
    assert [a.id for a in store.active_alerts()] == ["ancient-firing"]
    assert store.prune() == (0, 0)


def test_prune_now_argument_overrides_clock(store: MemoryStore, clock: FakeClock) -> None:
    """prune(now) uses the given time instead of the clock."""
    store.add_samples([make_point(T0), make_point(T0 + 7200)])
    assert store.prune(now=T0 + 7200) == (1, 0)
    assert clock.now == T0


def test_retention_must_be_positive(tmp_path: Path) -> None:
    """A zero or negative retention is a configuration error raised at construction."""
    with pytest.raises(ValueError, match="retention_seconds"):
        MemoryStore(tmp_path, retention_seconds=0)
    with pytest.raises(ValueError, match="alert_retention_seconds"):
        MemoryStore(tmp_path, alert_retention_seconds=-1)


# -- lifecycle -----------------------------------------------------------------------------------------


def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    """After close and a new store on the same dir (a restart), samples and active alerts are still there."""
    state = tmp_path / "state"
    first = MemoryStore(state)
    first.open()
    points = [full_point(T0), make_point(T0 + 1, mb=None)]
    firing = make_alert("f", started_at=T0, metadata={"k": "v"})
    resolved = make_alert("r", started_at=T0, resolved_at=T0 + 5)
    first.add_samples(points)
    first.record_alerts([firing, resolved])
    first.close()
    assert not (state / "memmon.db-wal").exists() or (state / "memmon.db-wal").stat().st_size == 0

    second = MemoryStore(state)
    second.open()
    try:
        assert second.history(0) == points
        assert second.active_alerts() == [firing]
        assert second.alerts(0) == [resolved, firing]
    finally:
        second.close()


def test_close_is_idempotent_and_closed_store_raises(tmp_path: Path) -> None:
    """close() twice is fine; using a closed store raises StoreError; open() after close() works again."""
    s = MemoryStore(tmp_path)
    with pytest.raises(StoreError, match="not open"):
        s.history(0)
    s.open()
    s.open()  # no-op
    s.close()
    s.close()
    assert not s.is_open
    with pytest.raises(StoreError, match="not open"):
        s.add_samples([make_point(T0)])
    s.open()
    s.add_samples([make_point(T0)])
    assert len(s.history(0)) == 1
    s.close()


def test_open_creates_private_state_dir_and_schema_version(tmp_path: Path) -> None:
    """open() creates missing dirs with mode 0o700 and stamps PRAGMA user_version = 1."""
    state = tmp_path / "a" / "b"
    s = MemoryStore(state)
    s.open()
    try:
        assert s.path == state / "memmon.db" and s.path.is_file()
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert raw(s, "PRAGMA user_version") == [(1,)]
    finally:
        s.close()


def test_wal_mode_is_on(store: MemoryStore) -> None:
    """The database file is in WAL journal mode (seen from an independent connection)."""
    assert raw(store, "PRAGMA journal_mode") == [("wal",)]


_READER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5)
db.execute("BEGIN")
print(db.execute("SELECT count(*) FROM samples").fetchone()[0], flush=True)
sys.stdin.readline()
during = db.execute("SELECT count(*) FROM samples").fetchone()[0]
db.execute("COMMIT")
after = db.execute("SELECT count(*) FROM samples").fetchone()[0]
print(during, after, flush=True)
"""


def test_second_process_reads_while_store_writes(store: MemoryStore) -> None:
    """Another process holding an open read transaction neither blocks the store's writes nor is blocked."""
    store.add_samples([make_point(T0 + i) for i in range(10)])
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, str(store.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None and reader.stdin is not None
        assert reader.stdout.readline().strip() == "10"  # the reader now holds a snapshot
        started = time.monotonic()
        for batch in range(5):
            store.add_samples([make_point(T0 + 100 + batch * 10 + i) for i in range(10)])
        elapsed = time.monotonic() - started
        assert store.stats()["samples"] == 60
        reader.stdin.write("\n")
        reader.stdin.flush()
        out, err = reader.communicate(timeout=30)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert reader.returncode == 0, err
    assert out.split() == ["10", "60"]  # snapshot isolation while reading, then the new rows
    assert elapsed < 2.0, f"writes waited on the reader ({elapsed:.2f}s): not WAL?"


# -- failures ------------------------------------------------------------------------------------------


def test_state_dir_that_is_a_file_raises_store_error(tmp_path: Path) -> None:
    """A state dir path that is a regular file gives StoreError naming the path."""
    state = tmp_path / "state"
    state.write_text("not a directory")
    with pytest.raises(StoreError, match=re.escape(str(state))):
        MemoryStore(state).open()


def test_state_dir_not_creatable_raises_store_error(tmp_path: Path) -> None:
    """A state dir whose parent is a regular file (cannot be created, even as root) gives StoreError."""
    parent = tmp_path / "file"
    parent.write_bytes(b"x")
    state = parent / "state"
    with pytest.raises(StoreError, match=re.escape(str(state))) as info:
        MemoryStore(state).open()
    assert "memmon.db" in str(info.value)


def test_garbage_db_file_raises_store_error_naming_path(tmp_path: Path) -> None:
    """A memmon.db full of garbage bytes gives StoreError naming the file, not a raw sqlite3 error."""
    tmp_path.joinpath("memmon.db").write_bytes(b"\x00garbage\xff" * 1000)
    s = MemoryStore(tmp_path)
    with pytest.raises(StoreError, match=re.escape(str(tmp_path / "memmon.db"))):
        s.open()
    assert not s.is_open


def test_corrupt_page_raises_store_error(tmp_path: Path) -> None:
    """A valid header with a garbage page inside is caught at open (quick_check), naming the file."""
    s = MemoryStore(tmp_path)
    s.open()
    s.add_samples([make_point(T0 + i) for i in range(2000)])
    s.close()
    page_size = 4096
    assert s.path.stat().st_size > 4 * page_size
    with s.path.open("r+b") as f:
        f.seek(2 * page_size)
        f.write(b"\xa5" * page_size)
    with pytest.raises(StoreError, match=re.escape(str(s.path))):
        s.open()


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    """A database stamped with a future schema version raises StoreError instead of being misread."""
    with sqlite3.connect(tmp_path / "memmon.db") as db:
        db.execute("PRAGMA user_version = 2")
    with pytest.raises(StoreError, match="schema version 2"):
        MemoryStore(tmp_path).open()


def test_stats_counts_rows_and_bytes(store: MemoryStore) -> None:
    """stats() counts samples and alerts and reports the db + wal size in bytes."""
    store.add_samples([make_point(T0 + i) for i in range(7)])
    store.record_alerts([make_alert("a"), make_alert("b")])
    stats = store.stats()
    assert stats["samples"] == 7 and stats["alerts"] == 2
    wal = store.path.with_name("memmon.db-wal")
    assert stats["db_bytes"] == store.path.stat().st_size + wal.stat().st_size > 0


def test_recent_returns_newest_points_oldest_first(tmp_path: Path) -> None:
    """recent(n) gives the newest n samples in time order, to refill the ring after a restart."""
    store = MemoryStore(tmp_path)
    store.open()
    store.add_samples([make_point(float(ts)) for ts in range(100, 110)])
    assert [p.timestamp for p in store.recent(3)] == [107.0, 108.0, 109.0]
    assert len(store.recent(50)) == 10
    store.close()
