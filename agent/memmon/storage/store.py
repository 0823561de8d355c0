"""The SQLite store: every history point and every alert transition, kept by age.

One file, ``<state_dir>/memmon.db``, in WAL mode so that other processes (an operator's ``sqlite3`` shell, a
sidecar) can read while memmon writes. Schema version 1 is recorded in ``PRAGMA user_version``; a database
written by a newer schema is refused rather than guessed at.

Round trips are exact: a :class:`~memmon.model.HistoryPoint` or :class:`~memmon.model.Alert` read back equals
the one written, field for field (None stays None; floats are IEEE doubles both sides). Levels are stored by
label (``"warning"``). Alert metadata is stored as JSON and frozen back with
:func:`~memmon.model.frozen_mapping`, so JSON-native values (str, int, float, bool, None, lists, str-keyed
mappings) come back equal; tuples come back as lists, nested mappings as plain dicts, and any other value as
its ``str()`` (an alert is never lost over its metadata). SQLite stores a float NaN as NULL: a NaN in an
optional field reads back as None, and in a required one the whole batch is rejected with :class:`StoreError`.

Every failure (cannot create the directory, corrupt file, disk full, use after close) raises
:class:`StoreError`, whose message names the database path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from memmon.model import Alert, HistoryPoint, Level
from memmon.storage.alertrows import alert_from_row, alert_row
from memmon.storage.sqlitefile import SqliteFile

__all__ = ["DB_FILENAME", "SAMPLE_NAMES", "SCHEMA_VERSION", "MemoryStore", "StoreError", "point_from_row"]

DB_FILENAME = "memmon.db"
SCHEMA_VERSION = 1

_SAMPLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("timestamp", "REAL NOT NULL"),
    ("level", "TEXT NOT NULL"),
    ("target", "TEXT NOT NULL"),
    ("memory_usage_mb", "REAL"),
    ("percent", "REAL"),
    ("effective_limit_mb", "REAL NOT NULL"),
    ("limit_source", "TEXT NOT NULL"),
    ("rss_mb", "REAL"),
    ("vms_mb", "REAL"),
    ("cgroup_usage_mb", "REAL"),
    ("cgroup_working_set_mb", "REAL"),
    ("available_mb", "REAL"),
    ("host_percent", "REAL"),
    ("swap_percent", "REAL"),
    ("pressure_some_avg10", "REAL"),
    ("gc_collections", "INTEGER"),
    ("gc_objects", "INTEGER"),
    ("check_seconds", "REAL"),
)
"""One column per :class:`HistoryPoint` field, in field order."""

_ALERT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "TEXT PRIMARY KEY NOT NULL"),
    ("fingerprint", "TEXT NOT NULL"),
    ("severity", "TEXT NOT NULL"),
    ("component", "TEXT NOT NULL"),
    ("target", "TEXT NOT NULL"),
    ("state", "TEXT NOT NULL"),
    ("started_at", "REAL NOT NULL"),
    ("resolved_at", "REAL"),
    ("memory_usage", "REAL NOT NULL"),
    ("threshold", "REAL NOT NULL"),
    ("message", "TEXT NOT NULL"),
    ("metadata", "TEXT NOT NULL"),
)
"""One column per :class:`Alert` field, in field order."""


def _names(columns: Iterable[tuple[str, str]]) -> str:
    return ", ".join(name for name, _ in columns)


_SAMPLE_NAMES = _names(_SAMPLE_COLUMNS)
SAMPLE_NAMES = _SAMPLE_NAMES
"""The ``samples`` columns in :class:`HistoryPoint` field order, for a SELECT that :func:`point_from_row` reads."""
_SAMPLE_FIELDS = tuple(name for name, _ in _SAMPLE_COLUMNS)
_ALERT_NAMES = _names(_ALERT_COLUMNS)

_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS samples ("
    + ", ".join(f"{name} {decl}" for name, decl in _SAMPLE_COLUMNS)
    + ")",
    "CREATE INDEX IF NOT EXISTS samples_timestamp ON samples (timestamp)",
    "CREATE INDEX IF NOT EXISTS samples_target ON samples (target, timestamp)",
    "CREATE TABLE IF NOT EXISTS alerts ("
    + ", ".join(f"{name} {decl}" for name, decl in _ALERT_COLUMNS)
    + ")",
    "CREATE INDEX IF NOT EXISTS alerts_started_at ON alerts (started_at)",
    "CREATE INDEX IF NOT EXISTS alerts_resolved_at ON alerts (resolved_at)",
    "CREATE INDEX IF NOT EXISTS alerts_state ON alerts (state)",
)

_INSERT_SAMPLE = f"INSERT INTO samples ({_SAMPLE_NAMES}) VALUES ({', '.join('?' * len(_SAMPLE_COLUMNS))})"
_UPSERT_ALERT = (
    f"INSERT INTO alerts ({_ALERT_NAMES}) VALUES ({', '.join('?' * len(_ALERT_COLUMNS))}) "
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name, _ in _ALERT_COLUMNS[1:])
)


class StoreError(Exception):
    """The store cannot be opened, read or written; the message names the database path."""


def _sample_row(point: HistoryPoint) -> tuple[object, ...]:
    # Columns follow HistoryPoint's field order: timestamp, level, then the rest as they are.
    return (point.timestamp, point.level.label, *(getattr(point, name) for name in _SAMPLE_FIELDS[2:]))


def point_from_row(row: Sequence[Any]) -> HistoryPoint:
    """The :class:`HistoryPoint` of a row selected with :data:`SAMPLE_NAMES`."""
    return HistoryPoint(row[0], Level.parse(row[1]), *row[2:])


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class MemoryStore(SqliteFile):
    """Every sample and every alert transition, kept by age.

    Synchronous: the app calls it from ONE dedicated worker thread. A lock still serialises calls, so that
    e.g. :meth:`close` from the main thread at shutdown is safe. Call :meth:`open` before anything else; any
    method but :meth:`close` raises :class:`StoreError` on a closed store.
    """

    SCHEMA = _SCHEMA
    SCHEMA_VERSION = SCHEMA_VERSION
    ERROR = StoreError
    KIND = "database"

    def __init__(
        self,
        state_dir: Path,
        *,
        retention_seconds: float = 86400,
        alert_retention_seconds: float = 7 * 86400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Configure only; nothing touches the disk before :meth:`open`. Retentions must be > 0."""
        if not retention_seconds > 0:
            raise ValueError(f"retention_seconds must be > 0, got {retention_seconds}")
        if not alert_retention_seconds > 0:
            raise ValueError(f"alert_retention_seconds must be > 0, got {alert_retention_seconds}")
        super().__init__(Path(state_dir) / DB_FILENAME)
        self._retention = float(retention_seconds)
        self._alert_retention = float(alert_retention_seconds)
        self._clock = clock

    # -- writes ----------------------------------------------------------------------------------------

    def add_samples(self, points: Sequence[HistoryPoint]) -> None:
        """Append ``points`` in one transaction (all or none). An empty batch does nothing."""
        if not points:
            return
        rows = [_sample_row(point) for point in points]
        with self._transaction("add samples") as conn:
            conn.executemany(_INSERT_SAMPLE, rows)

    def record_alerts(self, alerts: Sequence[Alert]) -> None:
        """Insert or replace each alert by id, in one transaction, in order: the last record of an id wins.

        So an alert recorded ``firing`` and later ``resolved`` is one row, resolved.
        """
        if not alerts:
            return
        rows = [alert_row(alert) for alert in alerts]
        with self._transaction("record alerts") as conn:
            conn.executemany(_UPSERT_ALERT, rows)

    def prune(self, now: float | None = None) -> tuple[int, int]:
        """Delete samples older than the retention and resolved alerts older than the alert retention.

        "Older" is strict: a sample at exactly ``now - retention_seconds`` stays. A resolved alert's age
        runs from ``resolved_at`` (``started_at`` if missing). Firing alerts are never deleted, however old.
        ``now`` defaults to the injected clock. Returns ``(samples_deleted, alerts_deleted)``.
        """
        now = self._clock() if now is None else now
        with self._transaction("prune") as conn:
            samples = conn.execute("DELETE FROM samples WHERE timestamp < ?", (now - self._retention,))
            alerts = conn.execute(
                "DELETE FROM alerts WHERE state = 'resolved' AND COALESCE(resolved_at, started_at) < ?",
                (now - self._alert_retention,),
            )
            return samples.rowcount, alerts.rowcount

    # -- reads -----------------------------------------------------------------------------------------

    def history(
        self, since: float, until: float | None = None, target: str | None = None
    ) -> list[HistoryPoint]:
        """Samples with ``since <= timestamp <= until`` (no upper bound when None), of ``target`` only when given,
        oldest first.

        Equal timestamps keep insertion order.
        """
        sql = f"SELECT {_SAMPLE_NAMES} FROM samples WHERE timestamp >= ?"
        params: tuple[float | str, ...] = (since,)
        if target is not None:
            sql += " AND target = ?"
            params += (target,)
        if until is not None:
            sql += " AND timestamp <= ?"
            params += (until,)
        sql += " ORDER BY timestamp, rowid"
        with self._connection("read history") as conn:
            return [point_from_row(row) for row in conn.execute(sql, params)]

    def recent(self, limit: int) -> list[HistoryPoint]:
        """The newest ``limit`` samples, oldest first (to refill the history ring after a restart)."""
        sql = f"SELECT {_SAMPLE_NAMES} FROM samples ORDER BY timestamp DESC, rowid DESC LIMIT ?"
        with self._connection("read recent history") as conn:
            rows = conn.execute(sql, (max(0, limit),)).fetchall()
        return [point_from_row(row) for row in reversed(rows)]

    def alerts(self, since: float) -> list[Alert]:
        """Alerts that started at/after ``since``, resolved at/after ``since``, or are still firing.

        Newest first by the latest transition (:attr:`Alert.timestamp`: ``resolved_at``, else
        ``started_at``); ties by ``started_at`` then id, descending.
        """
        sql = (
            f"SELECT {_ALERT_NAMES} FROM alerts "
            "WHERE started_at >= ?1 OR state = 'firing' OR resolved_at >= ?1 "
            "ORDER BY COALESCE(resolved_at, started_at) DESC, started_at DESC, id DESC"
        )
        with self._connection("read alerts") as conn:
            return [alert_from_row(row) for row in conn.execute(sql, (since,))]

    def active_alerts(self) -> list[Alert]:
        """Alerts whose state is ``firing``, oldest start first: what the evaluator restores on restart."""
        sql = f"SELECT {_ALERT_NAMES} FROM alerts WHERE state = 'firing' ORDER BY started_at, id"
        with self._connection("read active alerts") as conn:
            return [alert_from_row(row) for row in conn.execute(sql)]

    def stats(self) -> dict[str, int]:
        """``{"samples": rows, "alerts": rows, "db_bytes": size of memmon.db plus its -wal file}``."""
        with self._connection("read stats") as conn:
            (samples,) = conn.execute("SELECT count(*) FROM samples").fetchone()
            (alerts,) = conn.execute("SELECT count(*) FROM alerts").fetchone()
        wal = self._path.with_name(self._path.name + "-wal")
        return {
            "samples": int(samples),
            "alerts": int(alerts),
            "db_bytes": _file_size(self._path) + _file_size(wal),
        }

    def __repr__(self) -> str:
        state = "open" if self._conn is not None else "closed"
        return f"MemoryStore({str(self._path)!r}, {state})"
