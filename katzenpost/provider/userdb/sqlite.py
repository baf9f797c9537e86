"""The embedded user database: an SQLite file (`users.db` in DataDir, not a bbolt file) with the
reference's logical schema — users: name → link key, identities: name → identity key."""
from __future__ import annotations

import contextlib
import hmac
import sqlite3
import threading

from katzenpost.provider.sqlite_store import open_database
from katzenpost.provider.userdb.base import (NoIdentity, NoSuchUser, UserDB, UserDBError, UserExists,
                                             check_key, check_user)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (name BLOB PRIMARY KEY, link_key BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS identities (name BLOB PRIMARY KEY, identity_key BLOB NOT NULL) WITHOUT ROWID
"""


@contextlib.contextmanager
def _sql_errors():
    """A database error (a full disk: "database or disk is full") is the contract's UserDBError,
    as the PostgreSQL backend's: the management command answers 554, nothing changed."""
    try:
        yield
    except sqlite3.Error as err:
        raise UserDBError(f"userdb: sqlite: {err}") from None


class SQLiteUserDB(UserDB):
    def __init__(self, path: str, *, trust_on_first_use: bool = False):
        self._conn = open_database(path, "userdb", _SCHEMA)
        self._lock = threading.Lock()
        self._tofu = trust_on_first_use
        # Exists() is asked for every delivered packet: answered from memory, as the reference does.
        self._names = {bytes(row[0]) for row in self._conn.execute("SELECT name FROM users")}

    def exists(self, user: bytes) -> bool:
        return bytes(user) in self._names

    def is_valid(self, user: bytes, link_key: bytes) -> bool:
        user, link_key = bytes(user), bytes(link_key)
        with self._lock:
            row = self._conn.execute("SELECT link_key FROM users WHERE name = ?", (user,)).fetchone()
            if row is None and self._tofu:
                try:
                    self._add_locked(check_user(user), check_key(link_key, "link key"), False)
                except Exception:
                    return False
                return True
        return row is not None and hmac.compare_digest(bytes(row[0]), link_key)

    def link(self, user: bytes) -> bytes:
        with self._lock:
            row = self._conn.execute("SELECT link_key FROM users WHERE name = ?", (bytes(user),)).fetchone()
        if row is None:
            raise NoSuchUser()
        return bytes(row[0])

    def add(self, user: bytes, link_key: bytes, update: bool = False) -> None:
        user, link_key = check_user(user), check_key(link_key, "link key")
        with self._lock, _sql_errors():
            self._add_locked(user, link_key, update)

    def _add_locked(self, user: bytes, link_key: bytes, update: bool) -> None:
        if update:
            cursor = self._conn.execute("UPDATE users SET link_key = ? WHERE name = ?", (link_key, user))
            if cursor.rowcount == 0:
                raise NoSuchUser()
            return
        if user in self._names:
            raise UserExists()
        self._conn.execute("INSERT INTO users VALUES (?, ?)", (user, link_key))
        self._names.add(user)

    def set_identity(self, user: bytes, identity_key: bytes | None) -> None:
        user = bytes(user)
        key = None if identity_key is None else check_key(identity_key, "identity key")
        with self._lock, _sql_errors():
            if user not in self._names:
                raise NoSuchUser()
            if key is None:
                self._conn.execute("DELETE FROM identities WHERE name = ?", (user,))
            else:
                self._conn.execute("INSERT OR REPLACE INTO identities VALUES (?, ?)", (user, key))

    def identity(self, user: bytes) -> bytes:
        user = bytes(user)
        with self._lock:
            if user not in self._names:
                raise NoSuchUser()
            row = self._conn.execute("SELECT identity_key FROM identities WHERE name = ?", (user,)).fetchone()
        if row is None:
            raise NoIdentity()
        return bytes(row[0])

    def remove(self, user: bytes) -> None:
        user = bytes(user)
        with self._lock, _sql_errors():
            if user not in self._names:
                raise NoSuchUser()
            # Unlike the reference, the identity goes too: a re-added user must not inherit it.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("DELETE FROM users WHERE name = ?", (user,))
                self._conn.execute("DELETE FROM identities WHERE name = ?", (user,))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._names.discard(user)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
