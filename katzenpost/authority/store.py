"""The authority's persistence: raw descriptors and documents per epoch in DataDir (SQLite).

The same three buckets as the reference's bbolt file (metadata, descriptors, documents), kept
in `persistence.sqlite` (0600). It stores and returns raw certificates only; checking them is
the state's job.
"""
from __future__ import annotations

import os
import sqlite3

STORE_FILE = "persistence.sqlite"
SCHEMA_VERSION = 0


class StoreError(RuntimeError):
    """The persistence file cannot be opened or written (fatal to the authority)."""


class AuthorityStore:
    def __init__(self, path: str) -> None:
        self.path = path
        try:
            if not os.path.exists(path):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._create_schema()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"authority store: cannot open {path}: {exc}") from None

    @classmethod
    def open_in(cls, data_dir: str) -> "AuthorityStore":
        return cls(os.path.join(data_dir, STORE_FILE))

    def _create_schema(self) -> None:
        self._db.executescript(
            "CREATE TABLE IF NOT EXISTS metadata (key TEXT PRIMARY KEY, value BLOB NOT NULL);"
            "CREATE TABLE IF NOT EXISTS descriptors (epoch INTEGER NOT NULL, identity BLOB NOT NULL,"
            " raw BLOB NOT NULL, PRIMARY KEY (epoch, identity));"
            "CREATE TABLE IF NOT EXISTS documents (epoch INTEGER PRIMARY KEY, raw BLOB NOT NULL);")
        row = self._db.execute("SELECT value FROM metadata WHERE key='version'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO metadata VALUES ('version', ?)", (bytes([SCHEMA_VERSION]),))
        elif bytes(row[0]) != bytes([SCHEMA_VERSION]):
            raise StoreError(f"authority store: {self.path} has schema version {bytes(row[0]).hex()}"
                             f", expected {SCHEMA_VERSION}")

    def _write(self, sql: str, args: tuple) -> None:
        try:
            self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise StoreError(f"authority store: write to {self.path} failed: {exc}") from None

    # Epochs are stored as signed 64-bit integers; real epochs stay far below 2**63.
    def put_descriptor(self, epoch: int, identity: bytes, raw: bytes) -> None:
        self._write("INSERT OR REPLACE INTO descriptors VALUES (?, ?, ?)", (epoch, identity, raw))

    def put_document(self, epoch: int, raw: bytes) -> None:
        self._write("INSERT OR REPLACE INTO documents VALUES (?, ?)", (epoch, raw))

    def _read(self, sql: str, args: tuple) -> list:
        # A damaged file fails on read too; that is as fatal as a failed write, never a traceback.
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"authority store: read from {self.path} failed: {exc}") from None

    def descriptors(self, epoch: int) -> dict[bytes, bytes]:
        rows = self._read("SELECT identity, raw FROM descriptors WHERE epoch = ?", (epoch,))
        return {bytes(identity): bytes(raw) for identity, raw in rows}

    def document(self, epoch: int) -> bytes | None:
        rows = self._read("SELECT raw FROM documents WHERE epoch = ?", (epoch,))
        return bytes(rows[0][0]) if rows else None

    def prune_before(self, epoch: int) -> None:
        self._write("DELETE FROM descriptors WHERE epoch < ?", (epoch,))
        self._write("DELETE FROM documents WHERE epoch < ?", (epoch,))

    def delete_descriptor(self, epoch: int, identity: bytes) -> None:
        self._write("DELETE FROM descriptors WHERE epoch = ? AND identity = ?", (epoch, identity))

    def close(self) -> None:
        self._db.close()
