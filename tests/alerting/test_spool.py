"""AlertSpool against real SQLite files in tmp_path."""

from __future__ import annotations

import os
import re
import select
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import memmon
from memmon.alerting.spool import AlertSpool, SpoolEntry, SpoolError
from memmon.model import Alert, Level, frozen_mapping

T0 = 1_700_000_000.0
W, C, E = Level.WARNING, Level.CRITICAL, Level.EMERGENCY


def make_alert(
    alert_id: str = "a1",
    *,
    severity: Level = Level.WARNING,
    started_at: float = T0,
    resolved_at: float | None = None,
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
        message=f"memory above {severity.label} ({alert_id})",
        metadata=frozen_mapping(metadata),
    )


def key(alert: Alert) -> str:
    return f"{alert.id}:{alert.state}"


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def spool(tmp_path: Path, clock: FakeClock) -> Iterator[AlertSpool]:
    s = AlertSpool(tmp_path / "state" / "spool.db", clock=clock)
    s.open()
    yield s
    s.close()


def add(spool: AlertSpool, alert_id: str, severity: Level, channel: str = "webhook") -> tuple[int, list[str]]:
    """Add a firing alert; returns the id and the alert ids of the dropped entries."""
    alert = make_alert(alert_id, severity=severity)
    new_id, dropped = spool.add(channel, key(alert), alert)
    return new_id, [entry.alert.id for entry in dropped]


def alert_ids(entries: list[SpoolEntry]) -> list[str]:
    return [entry.alert.id for entry in entries]


# -- round trip and bookkeeping ------------------------------------------------------------------------


def test_entry_and_alert_round_trip_every_field_across_reopen(
    tmp_path: Path, spool: AlertSpool, clock: FakeClock
) -> None:
    """An entry reads back with every field, and its alert equals the one added, also after close/reopen."""
    alert = make_alert(
        "r1",
        severity=Level.CRITICAL,
        started_at=T0 + 0.125,
        resolved_at=T0 + 60.5 + 1e-9,
        metadata={"limit_mb": 1024.5, "source": "cgroup", "pids": [1, 2], "nested": {"a": None, "b": True}},
    )
    clock.now = T0 + 1
    new_id, dropped = spool.add("webhook", key(alert), alert, not_before=T0 + 30)
    assert dropped == []
    expected = SpoolEntry(
        id=new_id,
        channel="webhook",
        idempotency_key="r1:resolved",
        alert=alert,
        attempts=0,
        next_attempt_at=T0 + 30,
        created_at=T0 + 1,
        last_error=None,
    )
    assert spool.entries() == [expected]
    got = spool.entries()[0].alert
    assert got.severity is Level.CRITICAL
    assert dict(got.metadata) == dict(alert.metadata)
    with pytest.raises(TypeError):
        got.metadata["x"] = 1  # type: ignore[index]  # frozen back
    spool.close()
    again = AlertSpool(spool.path)
    again.open()
    try:
        assert again.entries() == [expected]
    finally:
        again.close()


def test_add_defaults_next_attempt_to_now_from_clock(spool: AlertSpool, clock: FakeClock) -> None:
    """Without not_before an entry is due at the clock's now, and created then."""
    clock.now = T0 + 42
    add(spool, "a", W)
    (entry,) = spool.entries()
    assert (entry.next_attempt_at, entry.created_at) == (T0 + 42, T0 + 42)


def test_add_same_channel_and_key_twice_is_a_noop_returning_existing_id(spool: AlertSpool) -> None:
    """Re-adding a (channel, key) returns the existing id and changes nothing; another channel is separate."""
    alert = make_alert("a1")
    first, _ = spool.add("webhook", key(alert), alert)
    spool.failed(first, next_attempt_at=T0 + 5, error="boom")
    again, dropped = spool.add("webhook", key(alert), make_alert("a1", severity=Level.EMERGENCY))
    assert (again, dropped) == (first, [])
    (entry,) = spool.entries("webhook")
    assert (entry.alert, entry.attempts, entry.last_error) == (alert, 1, "boom")
    other, _ = spool.add("slack", key(alert), alert)
    assert other != first
    assert spool.pending() == {"slack": 1, "webhook": 1}


def test_due_orders_emergency_first_then_fifo_within_severity(spool: AlertSpool) -> None:
    """due() returns emergencies, then criticals, then warnings, oldest (lowest id) first within each."""
    for alert_id, severity in [("w1", W), ("c1", C), ("e1", E), ("w2", W), ("e2", E), ("c2", C)]:
        add(spool, alert_id, severity)
    add(spool, "other", E, channel="slack")
    assert alert_ids(spool.due("webhook", now=T0)) == ["e1", "e2", "c1", "c2", "w1", "w2"]
    assert alert_ids(spool.due("webhook", now=T0, limit=3)) == ["e1", "e2", "c1"]
    assert spool.due("webhook", now=T0, limit=0) == []


def test_due_filters_on_next_attempt_at_and_next_due_at(spool: AlertSpool, clock: FakeClock) -> None:
    """Only entries with next_attempt_at <= now are due; next_due_at is the channel's earliest, None if empty."""
    assert spool.next_due_at("webhook") is None
    for alert_id, delay in [("late", 20.0), ("now", 0.0), ("soon", 10.0)]:
        alert = make_alert(alert_id, severity=E if alert_id == "late" else W)
        spool.add("webhook", key(alert), alert, not_before=T0 + delay)
    assert spool.next_due_at("webhook") == T0
    assert alert_ids(spool.due("webhook", now=T0 + 9.999)) == ["now"]
    assert alert_ids(spool.due("webhook", now=T0 + 10)) == ["now", "soon"]  # inclusive
    clock.now = T0 + 20  # default now comes from the clock
    assert alert_ids(spool.due("webhook")) == ["late", "now", "soon"]
    assert spool.due("slack", now=T0 + 100) == []
    assert spool.next_due_at("slack") is None


def test_failed_counts_attempts_reschedules_and_truncates_error(spool: AlertSpool) -> None:
    """failed() adds one attempt, moves next_attempt_at, keeps the error truncated to 500 characters."""
    entry_id, _ = add(spool, "a", W)
    spool.failed(entry_id, next_attempt_at=T0 + 30, error="HTTP 503")
    (entry,) = spool.entries()
    assert (entry.attempts, entry.next_attempt_at, entry.last_error) == (1, T0 + 30, "HTTP 503")
    assert spool.due("webhook", now=T0 + 29) == []
    assert spool.next_due_at("webhook") == T0 + 30
    spool.failed(entry_id, next_attempt_at=T0 + 90, error="x" * 2000)
    (entry,) = spool.entries()
    assert entry.attempts == 2
    assert entry.last_error == "x" * 500
    spool.failed(10_000, next_attempt_at=T0, error="gone")  # unknown id: ignored


def test_delete_removes_only_that_entry(spool: AlertSpool) -> None:
    """delete() removes the accepted entry; an unknown id is ignored; a deleted key can be spooled again."""
    first, _ = add(spool, "a", W)
    second, _ = add(spool, "b", W)
    spool.delete(first)
    spool.delete(first)
    assert [entry.id for entry in spool.entries()] == [second]
    readded, _ = add(spool, "a", W)
    assert readded not in (first, second)  # ids are never reused


def test_pending_counts_entries_per_channel(spool: AlertSpool) -> None:
    """pending() maps each channel with entries to its count."""
    assert spool.pending() == {}
    for i in range(3):
        add(spool, f"w{i}", W, channel="webhook")
    add(spool, "s", C, channel="slack")
    assert spool.pending() == {"webhook": 3, "slack": 1}
    assert alert_ids(spool.entries("slack")) == ["s"]
    assert alert_ids(spool.entries()) == ["w0", "w1", "w2", "s"]


# -- the bound -----------------------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path: Path, clock: FakeClock) -> Iterator[AlertSpool]:
    s = AlertSpool(tmp_path / "small.db", max_entries_per_channel=5, clock=clock)
    s.open()
    yield s
    s.close()


def test_bound_drops_oldest_warnings_then_oldest_criticals_never_emergencies(small: AlertSpool) -> None:
    """With max 5, mixed adds drop oldest warnings first, then oldest criticals, and return what they dropped."""
    for alert_id, severity in [("w1", W), ("c1", C), ("w2", W), ("e1", E), ("c2", C)]:
        assert add(small, alert_id, severity)[1] == []
    steps = [
        (("w3", W), ["w1"]),  # oldest warning goes, even though the new one is a warning too
        (("c3", C), ["w2"]),
        (("e2", E), ["w3"]),  # the last warning
        (("c4", C), ["c1"]),  # no warnings left: oldest critical
        (("e3", E), ["c2"]),
    ]
    for (alert_id, severity), expected in steps:
        new_id, dropped = add(small, alert_id, severity)
        assert new_id > 0
        assert dropped == expected, alert_id
    assert alert_ids(small.entries()) == ["e1", "c3", "e2", "c4", "e3"]
    assert small.pending() == {"webhook": 5}


def test_new_warning_into_spool_of_criticals_is_itself_dropped(small: AlertSpool) -> None:
    """The new entry competes: a warning arriving into a full spool of criticals gets -1 and drops nothing."""
    for i in range(5):
        add(small, f"c{i}", C)
    before = small.entries()
    assert add(small, "w", W) == (-1, [])
    assert small.entries() == before
    assert small.due("webhook", now=T0, limit=100) == before


def test_emergencies_are_never_dropped_even_beyond_the_bound(small: AlertSpool) -> None:
    """A channel holding only emergencies keeps them all; later criticals/warnings are dropped on arrival."""
    add(small, "c0", C)
    for i in range(5):
        new_id, dropped = add(small, f"e{i}", E)
        assert new_id > 0
        assert dropped == (["c0"] if i == 4 else [])
    new_id, dropped = add(small, "e5", E)
    assert new_id > 0 and dropped == []
    assert add(small, "c1", C) == (-1, [])
    assert add(small, "w1", W) == (-1, [])
    assert alert_ids(small.entries()) == [f"e{i}" for i in range(6)]
    assert small.pending() == {"webhook": 6}


def test_bound_is_per_channel(small: AlertSpool) -> None:
    """Entries of one channel never make room in another."""
    for i in range(5):
        add(small, f"w{i}", W, channel="webhook")
        add(small, f"s{i}", W, channel="slack")
    assert add(small, "w5", W, channel="webhook")[1] == ["w0"]
    assert small.pending() == {"webhook": 5, "slack": 5}


def test_lowered_bound_drops_several_in_one_add(tmp_path: Path, clock: FakeClock) -> None:
    """Reopened with a smaller bound, the next add drops all the excess, lowest severity and oldest first."""
    big = AlertSpool(tmp_path / "s.db", max_entries_per_channel=10, clock=clock)
    big.open()
    for alert_id, severity in [("c1", C), ("w1", W), ("e1", E), ("w2", W), ("c2", C), ("w3", W)]:
        add(big, alert_id, severity)
    big.close()
    small = AlertSpool(tmp_path / "s.db", max_entries_per_channel=3, clock=clock)
    small.open()
    try:
        new_id, dropped = add(small, "c3", C)
        assert new_id > 0
        assert dropped == ["w1", "w2", "w3", "c1"]
        assert alert_ids(small.entries()) == ["e1", "c2", "c3"]
    finally:
        small.close()


def test_bound_must_be_positive(tmp_path: Path) -> None:
    """max_entries_per_channel below 1 is a ValueError at construction."""
    with pytest.raises(ValueError, match="max_entries_per_channel"):
        AlertSpool(tmp_path / "s.db", max_entries_per_channel=0)


# -- durability and concurrency ------------------------------------------------------------------------

_CHILD = """
import sys, time
from pathlib import Path
from memmon.alerting.spool import AlertSpool
from memmon.model import Alert, Level, frozen_mapping

T0 = 1_700_000_000.0
spool = AlertSpool(Path(sys.argv[1]), clock=lambda: T0)
spool.open()
for i in range(int(sys.argv[2])):
    alert = Alert(
        id=f"a{i}", fingerprint=f"fp-a{i}", severity=Level.CRITICAL, component="memory", target="pid:1234",
        state="firing", started_at=T0 + i, resolved_at=None, memory_usage=812.25, threshold=800.0,
        message=f"memory above critical (a{i})", metadata=frozen_mapping({"i": i}),
    )
    spool.add("webhook", f"a{i}:firing", alert)
print("added", flush=True)
time.sleep(600)
"""


def test_entries_survive_sigkill_of_the_writing_process(tmp_path: Path) -> None:
    """Entries added by a process killed with SIGKILL (no close, no checkpoint) are all there on reopen."""
    path = tmp_path / "state" / "spool.db"
    count = 50
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(memmon.__file__).parents[1]), *filter(None, [env.get("PYTHONPATH")])]
    )
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 30)
        assert ready, "child did not report"
        assert child.stdout.readline().strip() == "added"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert path.with_name("spool.db-wal").stat().st_size > 0  # the rows were only in the WAL
    spool = AlertSpool(path)
    spool.open()
    try:
        entries = spool.entries()
        assert spool.pending() == {"webhook": count}
    finally:
        spool.close()
    expected = [
        make_alert(f"a{i}", severity=Level.CRITICAL, started_at=T0 + i, metadata={"i": i})
        for i in range(count)
    ]
    assert [entry.alert for entry in entries] == expected
    assert [entry.idempotency_key for entry in entries] == [f"a{i}:firing" for i in range(count)]
    assert all(entry.attempts == 0 and entry.next_attempt_at == T0 for entry in entries)


def test_wal_lets_another_connection_read_while_the_spool_writes(spool: AlertSpool) -> None:
    """A reader holding a snapshot neither blocks adds nor sees them; an uncommitted writer does not block reads."""
    for i in range(3):
        add(spool, f"a{i}", W)
    reader = sqlite3.connect(spool.path, isolation_level=None, timeout=0.1)
    try:
        (mode,) = reader.execute("PRAGMA journal_mode").fetchone()
        assert mode == "wal"
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM spool").fetchone() == (3,)
        started = time.monotonic()
        for i in range(3, 6):
            add(spool, f"a{i}", W)
        assert time.monotonic() - started < 2.0
        assert reader.execute("SELECT count(*) FROM spool").fetchone() == (3,)  # its snapshot
        reader.execute("COMMIT")
        assert reader.execute("SELECT count(*) FROM spool").fetchone() == (6,)

        reader.execute("BEGIN IMMEDIATE")  # now another connection writes, uncommitted
        reader.execute("UPDATE spool SET attempts = 99")
        assert {entry.attempts for entry in spool.entries()} == {0}
        reader.execute("ROLLBACK")
    finally:
        reader.close()


# -- lifecycle and failures ----------------------------------------------------------------------------


def test_open_creates_private_parent_wal_and_schema_version(tmp_path: Path) -> None:
    """open() creates the parent directory 0o700 and a WAL database stamped user_version 1."""
    path = tmp_path / "a" / "b" / "spool.db"
    s = AlertSpool(path)
    s.open()
    s.open()  # no-op when open
    s.close()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        indexes = {row[1] for row in db.execute("PRAGMA index_list(spool)")}
        assert {"spool_channel_next", "spool_channel_rank"} <= indexes


def test_close_is_idempotent_and_closed_spool_raises(tmp_path: Path) -> None:
    """close() twice is fine; using a closed spool raises SpoolError naming the path."""
    s = AlertSpool(tmp_path / "spool.db")
    with pytest.raises(SpoolError, match=re.escape(str(s.path))):
        s.pending()
    s.open()
    s.close()
    s.close()
    with pytest.raises(SpoolError, match=re.escape(str(s.path))):
        add(s, "a", W)


def test_garbage_file_raises_spool_error_naming_path(tmp_path: Path) -> None:
    """A spool file full of garbage bytes gives SpoolError naming the file, not a raw sqlite3 error."""
    path = tmp_path / "spool.db"
    path.write_bytes(b"\x00garbage\xff" * 1000)
    s = AlertSpool(path)
    with pytest.raises(SpoolError, match=re.escape(str(path))):
        s.open()
    assert not s.is_open


def test_corrupt_page_raises_spool_error_naming_path(tmp_path: Path) -> None:
    """A valid header with a garbage page inside is caught at open (quick_check), naming the file."""
    s = AlertSpool(tmp_path / "spool.db")
    s.open()
    for i in range(300):
        alert = make_alert(f"a{i}", metadata={"pad": "p" * 200})
        s.add("webhook", key(alert), alert)
    s.close()
    page_size = 4096
    assert s.path.stat().st_size > 4 * page_size
    with s.path.open("r+b") as f:
        f.seek(2 * page_size)
        f.write(b"\xa5" * page_size)
    with pytest.raises(SpoolError, match=re.escape(str(s.path))):
        s.open()


def test_parent_that_is_a_file_raises_spool_error_naming_path(tmp_path: Path) -> None:
    """A parent path that is a regular file (directly or further up) gives SpoolError naming the spool file."""
    parent = tmp_path / "state"
    parent.write_text("not a directory")
    path = parent / "spool.db"
    with pytest.raises(SpoolError, match=re.escape(str(path))):
        AlertSpool(path).open()
    deeper = parent / "sub" / "spool.db"
    with pytest.raises(SpoolError, match=re.escape(str(deeper))):
        AlertSpool(deeper).open()


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    """A spool stamped with a future schema version raises SpoolError instead of being misread."""
    path = tmp_path / "spool.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 2")
    with pytest.raises(SpoolError, match="schema version 2") as info:
        AlertSpool(path).open()
    assert str(path) in str(info.value)
