"""One SQLite file owned by one worker thread: the plumbing the history store and the alert spool share.

WAL journaling (readers never block the writer), ``synchronous=NORMAL`` (a committed transaction survives the
process being killed, SIGKILL included: it is in the OS page cache; only a power loss can cost the last ones), a
busy timeout, ``quick_check`` on open, ``PRAGMA user_version`` for the schema, and every failure turned into the
subclass's error type naming the file, so the caller catches one exception type and the operator reads the path.

A file deleted or replaced while open (``rm memmon.db*``, a cleaner, a restore) would otherwise take every later
write with it: SQLite keeps writing to the unlinked inode, gone at close. Before each write transaction the path's
``(st_dev, st_ino)`` is compared with the file opened (one ``stat``, a few microseconds, against a transaction's
milliseconds). Deleted: the open connection's content, everything written until now, is copied with SQLite's
online backup into a new file at the path, which is then opened as at start-up; replaced by another file: that
file is opened (the operator put it there). One warning line says which. When the new file cannot be made (disk
full, directory not writable) the write fails with the usual error and the next write tries again.
"""

from __future__ import annotations

import contextlib
import logging
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
RECOVERING_SUFFIX = ".recovering"
"""A deleted file's content is copied to ``<file>.recovering`` first, then renamed into place."""

log = logging.getLogger("memmon.store")


def _identity(path: Path) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of ``path``; None when it does not exist."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


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
        self._identity: tuple[int, int] | None = None
        """The file the connection has open, to notice it was deleted or replaced."""
        self._wanted = False
        """Between open() and close(): a connection lost while following a replaced file is opened again."""

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
            self._conn = self._connect()
            self._wanted = True

    def _connect(self) -> sqlite3.Connection:
        """A prepared connection to the file at the path (created with its directory when missing); lock held."""
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
        with contextlib.suppress(OSError):
            self._identity = _identity(self._path)
        return conn

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
            self._wanted = False
            conn, self._conn = self._conn, None
            if conn is not None:
                _close(conn)

    @contextmanager
    def _connection(self, action: str) -> Iterator[sqlite3.Connection]:
        """The open connection under the lock; sqlite3 and decoding errors become ``ERROR`` naming ``action``."""
        with self._lock:
            if self._conn is None and self._wanted:  # lost while following a replaced file: try again
                self._conn = self._connect()
            conn = self._conn
            if conn is None:
                raise self.ERROR(f"cannot {action}: {self.KIND} {self._path} is not open")
            try:
                yield conn
            except (sqlite3.Error, ValueError, TypeError) as exc:
                raise self.ERROR(f"cannot {action} in {self._path}: {exc}") from exc

    @contextmanager
    def _transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        """A write transaction on the file at the path (see the module docstring: a deleted or replaced file is
        followed first): committed when the block succeeds, rolled back when it raises."""
        with self._lock:
            self._follow_file()
        with self._connection(action) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:  # SQLite rolls back by itself after some errors (e.g. disk full)
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _follow_file(self) -> None:
        """Lock held: when the path no longer names the open file, recreate it from the open connection (deleted)
        or open the file now there (replaced). ``ERROR`` when that fails; the old connection is kept then."""
        conn = self._conn
        if conn is None:
            return
        try:
            now = _identity(self._path)
        except OSError:
            return  # cannot tell (EACCES, EIO): keep writing where we are
        if now == self._identity:
            return
        if now is None:
            copy = self._copy_of(conn)
            self._conn = None
            _close(conn)  # before the rename: a closing WAL connection unlinks <path>-wal and -shm by name
            try:
                os.replace(copy, self._path)
            except OSError as exc:
                raise self.ERROR(
                    f"{self.KIND} {self._path} was deleted; its content is in {copy} and cannot be moved back: "
                    f"{exc.strerror or exc}"
                ) from exc
            what = "was deleted while memmon ran; recreated it with everything written so far"
        else:
            self._conn = None
            _close(conn)
            what = "was replaced by another file while memmon ran; writing to that file from now on"
        log.warning("%s %s %s", self.KIND, self._path, what)
        self._conn = self._connect()

    def _copy_of(self, conn: sqlite3.Connection) -> Path:
        """The open database copied page by page (SQLite's online backup) into ``<path>.recovering``."""
        copy = self._path.with_name(self._path.name + RECOVERING_SUFFIX)
        try:
            self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            for stale in (copy, copy.with_name(copy.name + "-journal")):
                stale.unlink(missing_ok=True)
            target = sqlite3.connect(copy)
            try:
                conn.backup(target)
            finally:
                target.close()
        except (OSError, sqlite3.Error) as exc:
            with contextlib.suppress(OSError):
                copy.unlink(missing_ok=True)
            reason = getattr(exc, "strerror", None) or exc
            raise self.ERROR(
                f"{self.KIND} {self._path} was deleted and cannot be recreated: {reason}"
            ) from exc
        return copy


def _close(conn: sqlite3.Connection) -> None:
    """Checkpoint the WAL (waiting briefly for readers), then close."""
    try:
        conn.execute(f"PRAGMA busy_timeout = {CLOSE_CHECKPOINT_TIMEOUT_MS}")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.Error:
        pass  # a reader holds the WAL: the next open (or the last connection to close) folds it in
    finally:
        conn.close()
