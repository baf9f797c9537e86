"""The embedded spool: an SQLite file (`spool.db` in DataDir) with the reference's logical
layout — per user, entries keyed by a sequence that restarts at 1 once the spool is empty."""
from __future__ import annotations

import sqlite3
import threading
from typing import Iterable

from katzenpost.provider.spool.base import EMPTY, Spool, SpoolEntry, SpoolError, SpoolRecord, check_record
from katzenpost.provider.sqlite_store import open_database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
  user BLOB NOT NULL, seq INTEGER NOT NULL, surb_id BLOB, body BLOB NOT NULL,
  PRIMARY KEY (user, seq)) WITHOUT ROWID
"""


class SQLiteSpool(Spool):
    def __init__(self, path: str):
        self._conn = open_database(path, "spool", _SCHEMA)
        self._lock = threading.Lock()

    def store_batch(self, records: Iterable[SpoolRecord]) -> None:
        records = [check_record(SpoolRecord(*record)) for record in records]
        if not records:
            return
        with self._lock, self._transaction():
            for user, surb_id, body in records:
                self._conn.execute(
                    "INSERT INTO spool SELECT ?, coalesce(max(seq), 0) + 1, ?, ? FROM spool WHERE user = ?",
                    (user, surb_id, body, user))

    def get(self, user: bytes, advance: bool) -> SpoolEntry:
        user = bytes(user)
        with self._lock, self._transaction():
            rows = self._conn.execute(
                "SELECT seq, surb_id, body FROM spool WHERE user = ? ORDER BY seq LIMIT 3",
                (user,)).fetchall()
            if advance and rows:
                self._conn.execute("DELETE FROM spool WHERE user = ? AND seq = ?", (user, rows[0][0]))
                rows = rows[1:]
        if not rows:
            return EMPTY
        _, surb_id, body = rows[0]
        return SpoolEntry(bytes(body), None if surb_id is None else bytes(surb_id), 1 if len(rows) > 1 else 0)

    def remove(self, user: bytes) -> None:
        with self._lock, self._transaction():
            self._conn.execute("DELETE FROM spool WHERE user = ?", (bytes(user),))

    def spooled_users(self) -> list[bytes]:
        with self._lock:
            return [bytes(row[0]) for row in self._conn.execute("SELECT DISTINCT user FROM spool")]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _transaction(self):
        return _Transaction(self._conn)


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT (synchronous: on disk when it returns), ROLLBACK on error."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def __enter__(self):
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            raise SpoolError(f"spool: {err}") from None

    def __exit__(self, exc_type, exc, tb):
        try:
            self._conn.execute("ROLLBACK" if exc_type else "COMMIT")
        except sqlite3.Error as err:
            if exc_type is None:
                raise SpoolError(f"spool: commit failed: {err}") from None
        if isinstance(exc, sqlite3.Error):
            raise SpoolError(f"spool: {exc}") from None
        return False
