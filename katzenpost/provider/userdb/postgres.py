"""The SQL user database: the schema's user_* functions over the shared connection pool."""
from __future__ import annotations

import hmac

from katzenpost.provider.postgres import SQLDatabase, SQLDatabaseError
from katzenpost.provider.userdb.base import (NoIdentity, NoSuchUser, UserDB, UserDBError,
                                             UserExists, check_key, check_user)


class PostgresUserDB(UserDB):
    def __init__(self, db: SQLDatabase):
        if db.spool_only:
            raise SQLDatabaseError("sqldb: a spool-only database cannot be the user database")
        self._db = db

    def _call(self, query: str, args: tuple):
        errors = self._db.errors
        try:
            with self._db.pool.connection() as conn:
                return conn.execute(query, args).fetchone()
        except errors.NoDataFound:
            raise NoSuchUser() from None
        except errors.UniqueViolation:
            raise UserExists() from None
        except self._db.Error as err:
            raise UserDBError(f"userdb: sql: {err}") from None

    def _link_or_none(self, user: bytes) -> bytes | None:
        try:
            return bytes(self._call("SELECT user_get_authentication_key(%s)", (bytes(user),))[0])
        except NoSuchUser:
            return None

    def exists(self, user: bytes) -> bool:
        return self._link_or_none(user) is not None

    def is_valid(self, user: bytes, link_key: bytes) -> bool:
        key = self._link_or_none(user)
        return key is not None and hmac.compare_digest(key, bytes(link_key))

    def link(self, user: bytes) -> bytes:
        key = self._link_or_none(user)
        if key is None:
            raise NoSuchUser()
        return key

    def add(self, user: bytes, link_key: bytes, update: bool = False) -> None:
        self._call("SELECT user_set_authentication_key(%s, %s, %s)",
                   (check_user(user), check_key(link_key, "link key"), update))

    def set_identity(self, user: bytes, identity_key: bytes | None) -> None:
        key = None if identity_key is None else check_key(identity_key, "identity key")
        self._call("SELECT user_set_identity_key(%s, %s)", (bytes(user), key))

    def identity(self, user: bytes) -> bytes:
        key = self._call("SELECT user_get_identity_key(%s)", (bytes(user),))[0]
        if key is None:
            raise NoIdentity()
        return bytes(key)

    def remove(self, user: bytes) -> None:
        self._call("SELECT user_delete(%s)", (bytes(user),))

    def close(self) -> None:
        """The pool belongs to the SQLDatabase, closed by its owner."""
