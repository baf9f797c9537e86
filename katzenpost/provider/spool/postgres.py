"""The SQL spool: the schema's spool_* functions; a batch of stores is one transaction."""
from __future__ import annotations

from typing import Iterable

from katzenpost.provider.postgres import SQLDatabase
from katzenpost.provider.spool.base import EMPTY, Spool, SpoolEntry, SpoolError, SpoolRecord, check_record


class PostgresSpool(Spool):
    def __init__(self, db: SQLDatabase):
        self._db = db

    def _connection(self):
        return self._db.pool.connection()

    def store_batch(self, records: Iterable[SpoolRecord]) -> None:
        records = [tuple(check_record(SpoolRecord(*record))) for record in records]
        if not records:
            return
        try:
            with self._connection() as conn, conn.cursor() as cur:
                # The pool's `with` commits on a clean exit: returning means committed.
                cur.executemany("SELECT spool_store(%s, %s, %s)", records)
        except self._db.Error as err:
            raise SpoolError(f"spool: sql: {err}") from None

    def get(self, user: bytes, advance: bool) -> SpoolEntry:
        try:
            with self._connection() as conn:
                row = conn.execute("SELECT * FROM spool_get(%s, %s) AS r(message_body bytea, "
                                   "surb_id bytea, remaining integer)", (bytes(user), advance)).fetchone()
        except self._db.Error as err:
            raise SpoolError(f"spool: sql: {err}") from None
        body, surb_id, remaining = row
        if body is None:
            return EMPTY
        return SpoolEntry(bytes(body), None if surb_id is None else bytes(surb_id), int(remaining))

    def remove(self, user: bytes) -> None:
        try:
            with self._connection() as conn:
                if self._db.spool_only:
                    conn.execute("DELETE FROM users WHERE user_name = %s", (bytes(user),))
                else:
                    conn.execute("DELETE FROM spool WHERE user_id = (SELECT user_id FROM users "
                                 "WHERE user_name = %s)", (bytes(user),))
        except self._db.Error as err:
            raise SpoolError(f"spool: sql: {err}") from None

    def spooled_users(self) -> list[bytes]:
        try:
            with self._connection() as conn:
                rows = conn.execute("SELECT u.user_name FROM users u WHERE EXISTS "
                                    "(SELECT 1 FROM spool s WHERE s.user_id = u.user_id)").fetchall()
        except self._db.Error as err:
            raise SpoolError(f"spool: sql: {err}") from None
        return [bytes(row[0]) for row in rows]

    def vacuum(self, userdb) -> int:
        # In a full database the spool hangs off the user rows (ON DELETE CASCADE): nothing to do.
        return super().vacuum(userdb) if self._db.spool_only else 0
