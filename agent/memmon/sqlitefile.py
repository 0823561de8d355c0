"""One SQLite file owned by one worker thread: the plumbing the history store and the alert spool share.

WAL journaling (readers never block the writer), ``synchronous=NORMAL`` (a committed transaction survives the
process being killed, SIGKILL included: it is in the OS page cache; only a power loss can cost the last ones), a
busy timeout, ``quick_check`` on open, ``PRAGMA user_version`` for the schema, and every failure turned into the
subclass's error type naming the file, so the caller catches one exception type and the operator reads the path.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

BUSY_TIMEOUT_MS = 5000
CLOSE_CHECKPOINT_TIMEOUT_MS = 200
"""At close, wait this briefly for readers before giving up the WAL checkpoint (shutdown must stay fast)."""


class SqliteFile:
    """Open/close, a lock, and transactions; subclasses give ``SCHEMA``, ``SCHEMA_VERSION``, ``ERROR``, ``KIND``."""

    SCHEMA: ClassVar[Sequence[str]] = ()
    SCHEMA_VERSION: ClassVar[int] = 1
    ERROR: ClassVar[type[Exception]] = sqlite3.Error
    KIND: ClassVar[str] = "database"
    """What the file is called in messages ("database", "spool")."""

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self._path

    @property
    def is_open(self) -> bool:
        """True between :meth:`open` and :meth:`close`."""
        return self._conn is not None

    def open(self) -> None:
        """Create the directory (mode 0o700, parents too) and the file with its schema; no-op when open.

        ``ERROR`` naming the path when the directory cannot be created or written, the file is not a sound
        SQLite database, WAL cannot be enabled, or the schema is newer than this version knows.
        """
        with self._lock:
            if self._conn is not None:
                return
            parent = self._path.parent
            if parent.exists() and not parent.is_dir():
                raise self.ERROR(f"{parent} is not a directory; cannot open {self._path}")
            try:
                parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise self.ERROR(
                    f"cannot create directory {parent} for {self._path}: {exc.strerror or exc}"
                ) from exc
            if not os.access(parent, os.W_OK | os.X_OK):
                raise self.ERROR(f"directory {parent} is not writable; cannot open {self._path}")
            try:
                conn = sqlite3.connect(
                    self._path,
                    timeout=BUSY_TIMEOUT_MS / 1000,
                    isolation_level=None,  # explicit BEGIN/COMMIT
                    check_same_thread=False,
                )
            except sqlite3.Error as exc:
                raise self.ERROR(f"cannot open {self.KIND} {self._path}: {exc}") from exc
            try:
                self._prepare(conn)
            except (sqlite3.Error, self.ERROR) as exc:
                conn.close()
                if isinstance(exc, self.ERROR):
                    raise
                raise self.ERROR(
                    f"cannot use {self.KIND} {self._path}: {exc} "
                    "(if the file is corrupt, move it aside and memmon starts a new one)"
                ) from exc
            self._conn = conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            raise self.ERROR(f"cannot enable WAL journaling on {self._path} (got {mode!r})")
        conn.execute("PRAGMA synchronous = NORMAL")
        (check,) = conn.execute("PRAGMA quick_check(1)").fetchone()
        if check != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {check}")
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > self.SCHEMA_VERSION:
            raise self.ERROR(
                f"{self.KIND} {self._path} has schema version {version}, newer than this memmon's "
                f"{self.SCHEMA_VERSION}; upgrade memmon or move the file aside"
            )
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in self.SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Checkpoint the WAL into the main file (best effort, brief wait for readers), close. Idempotent."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                conn.execute(f"PRAGMA busy_timeout = {CLOSE_CHECKPOINT_TIMEOUT_MS}")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error:
                pass  # a reader holds the WAL: the next open (or the last connection to close) folds it in
            finally:
                conn.close()

    @contextmanager
    def _connection(self, action: str) -> Iterator[sqlite3.Connection]:
        """The open connection under the lock; sqlite3 and decoding errors become ``ERROR`` naming ``action``."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise self.ERROR(f"cannot {action}: {self.KIND} {self._path} is not open")
            try:
                yield conn
            except (sqlite3.Error, ValueError, TypeError) as exc:
                raise self.ERROR(f"cannot {action} in {self._path}: {exc}") from exc

    @contextmanager
    def _transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed when the block succeeds, rolled back when it raises."""
        with self._connection(action) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:  # SQLite rolls back by itself after some errors (e.g. disk full)
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
