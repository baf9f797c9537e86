"""Opening the embedded SQLite databases (users.db, spool.db): mode 0600, WAL journal with
synchronous=FULL so a commit is on disk when it returns (a stored message is acknowledged right
after), and the schema version check. Shared by the embedded user database and spool."""
from __future__ import annotations

import os
import sqlite3

SCHEMA_VERSION = 0  # the reference's metadata "version" byte


class SQLiteSchemaError(Exception):
    """The file is not one of our databases, or has another schema version."""


def open_database(path: str, kind: str, schema: str) -> sqlite3.Connection:
    """Open (creating 0600 if absent) the database at `path`, apply `schema`, check the version.

    `kind` ("userdb"/"spool") is stored in the metadata so the two files cannot be swapped.
    The connection is shared between threads; callers serialise access with their own lock.
    """
    if not os.path.exists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as err:
        raise SQLiteSchemaError(f"{kind}: failed to open '{path}': {err}") from None
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsynced at every commit, so a returned store survives power loss,
        # not only a process crash (NORMAL would only guarantee the latter).
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE IF NOT EXISTS metadata (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
        conn.execute("INSERT OR IGNORE INTO metadata VALUES ('version', ?), ('kind', ?)",
                     (bytes([SCHEMA_VERSION]), kind.encode()))
        for statement in _statements(schema):
            conn.execute(statement)
        rows = dict(conn.execute("SELECT key, value FROM metadata"))
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as err:
        conn.close()
        raise SQLiteSchemaError(f"{kind}: '{path}' is not a usable database: {err}") from None
    if rows.get("version") != bytes([SCHEMA_VERSION]) or rows.get("kind") != kind.encode():
        conn.close()
        raise SQLiteSchemaError(f"{kind}: '{path}' has schema {rows.get('kind')!r} version "
                                f"{rows.get('version')!r}, expected {kind!r} version {SCHEMA_VERSION}")
    return conn


def _statements(schema: str):
    return [part.strip() for part in schema.split(";") if part.strip()]
