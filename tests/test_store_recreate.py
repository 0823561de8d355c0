"""Database files deleted while memmon runs are noticed and recreated, nothing written since lost (issue 13,
item 15)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from memmon.alerting.spool import AlertSpool
from memmon.model import Alert, Level, frozen_mapping
from memmon.storage.lock import LOCK_FILENAME
from memmon.storage.store import DB_FILENAME, MemoryStore
from tests.prefork.servers import free_port


@contextmanager
def _agent(state: Path, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """memmon in a subprocess checking every 0.1 s and flushing every 0.2 s; SIGTERM and wait on the way out."""
    config = state.parent / "config.json"
    config.write_text(json.dumps({"storage": {"flush_interval_seconds": 0.2}}))
    argv = [sys.executable, "-m", "memmon", "--state-dir", str(state), "--config", str(config)]
    argv += ["--health-port", str(free_port()), "--prometheus-port", "0", "--check-interval", "0.1"]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def _wait_for(predicate: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _timestamps(state: Path) -> list[float]:
    store = MemoryStore(state)
    store.open()
    try:
        return [point.timestamp for point in store.history(0)]
    finally:
        store.close()


@pytest.mark.parametrize("whole_directory", [False, True], ids=["files", "directory"])
def test_deleted_database_is_recreated_and_keeps_everything(tmp_path: Path, whole_directory: bool) -> None:
    """rm memmon.db* (or the whole state dir) under a running agent: the database comes back with the samples of
    before and after, and the state lock is taken again."""
    state = tmp_path / "state"
    log_path = tmp_path / "memmon.log"
    database = state / DB_FILENAME
    with _agent(state, log_path) as agent:
        _wait_for(lambda: database.exists() and database.stat().st_size > 0, "the database")
        time.sleep(1.0)  # a few flushes
        deleted_at = time.time()
        if whole_directory:
            shutil.rmtree(state)
        else:
            for name in (DB_FILENAME, f"{DB_FILENAME}-wal", f"{DB_FILENAME}-shm"):
                (state / name).unlink(missing_ok=True)
        _wait_for(database.exists, "the database to be recreated", timeout=20)
        _wait_for((state / LOCK_FILENAME).exists, "the state lock to be taken again", timeout=20)
        time.sleep(1.0)  # more samples go to the new file
        stopped_at = time.time()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
    log = log_path.read_text()
    stamps = _timestamps(state)
    before = [t for t in stamps if t < deleted_at]
    after = [t for t in stamps if deleted_at + 0.3 <= t <= stopped_at]
    assert before, f"the samples written before the deletion are gone: {log[-2000:]}"
    assert len(after) >= 5, f"only {len(after)} samples after the deletion: {log[-2000:]}"
    assert log.count("was deleted") == 1, log[-2000:]


def _alert(number: int) -> Alert:
    return Alert(
        id=f"alert-{number}",
        fingerprint=f"fp-{number}",
        severity=Level.CRITICAL,
        component="memory",
        target="self",
        state="firing",
        started_at=1000.0 + number,
        resolved_at=None,
        memory_usage=1.0,
        threshold=1.0,
        message="test",
        metadata=frozen_mapping({}),
    )


def test_deleted_spool_is_recreated_with_its_pending_entries(tmp_path: Path) -> None:
    """A spool file deleted while open keeps its pending deliveries: recreated at the next write, with them."""
    path = tmp_path / "state" / "spool.db"
    spool = AlertSpool(path)
    spool.open()
    try:
        spool.add("webhook", "alert-1:firing", _alert(1))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        spool.add("webhook", "alert-2:firing", _alert(2))
        assert path.exists()
    finally:
        spool.close()
    again = AlertSpool(path)
    again.open()
    try:
        assert [entry.idempotency_key for entry in again.entries()] == ["alert-1:firing", "alert-2:firing"]
    finally:
        again.close()


def test_replaced_database_is_opened(tmp_path: Path) -> None:
    """A database file replaced by another (a restore) is the one written from the next write on."""
    state = tmp_path / "state"
    store = MemoryStore(state)
    store.open()
    try:
        store.record_alerts([_alert(1)])
        other = MemoryStore(tmp_path / "other")
        other.open()
        other.record_alerts([_alert(2)])
        other.close()
        (tmp_path / "other" / DB_FILENAME).replace(state / DB_FILENAME)
        for suffix in ("-wal", "-shm"):
            Path(f"{state / DB_FILENAME}{suffix}").unlink(missing_ok=True)
        store.record_alerts([_alert(3)])
    finally:
        store.close()
    reopened = MemoryStore(state)
    reopened.open()
    try:
        assert sorted(alert.id for alert in reopened.alerts(0)) == ["alert-2", "alert-3"]
    finally:
        reopened.close()
