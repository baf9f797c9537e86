"""One contract for every spool (embedded SQLite, PostgreSQL full and spool-only): FIFO order,
the reference's Get(advance) semantics, SURB replies, sizes, vacuum, and durability of a
returned store across kill -9."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import textwrap

import pytest

from katzenpost.provider.postgres import SQLDatabase
from katzenpost.provider.spool.base import SpoolError, SpoolRecord
from katzenpost.provider.spool.postgres import PostgresSpool
from katzenpost.provider.spool.sqlite import SQLiteSpool
from katzenpost.provider.userdb.postgres import PostgresUserDB
from katzenpost.provider.userdb.sqlite import SQLiteUserDB
from katzenpost.sphinx.geometry import SPRP_PAYLOAD_LENGTH, USER_FORWARD_PAYLOAD_LENGTH
from tests.provider_support import PostgresSchema, key


def message(n: int) -> bytes:
    return n.to_bytes(4, "big") * (USER_FORWARD_PAYLOAD_LENGTH // 4) + b"\x00" * (USER_FORWARD_PAYLOAD_LENGTH % 4)


def reply(n: int) -> bytes:
    return n.to_bytes(4, "big") * (SPRP_PAYLOAD_LENGTH // 4)


class SpoolUnderTest:
    def __init__(self, spool, users, reopen):
        self.spool, self.users, self._reopen = spool, users, reopen

    def reopen(self):
        self.spool = self._reopen(self.spool)
        return self.spool


@pytest.fixture(params=["sqlite", "postgres", "postgres-spool-only"])
def spool(request, tmp_path):
    kind = request.param
    if kind == "sqlite":
        users = SQLiteUserDB(str(tmp_path / "users.db"))
        path = str(tmp_path / "spool.db")

        def reopen(old):
            old.close()
            return SQLiteSpool(path)

        under_test = SpoolUnderTest(SQLiteSpool(path), users, reopen)
        yield under_test
        under_test.spool.close()
        users.close()
        return
    schema = PostgresSchema(spool_only=kind.endswith("spool-only"))
    database = SQLDatabase(schema.dsn)
    users_db = None if database.spool_only else PostgresUserDB(database)
    users = users_db or SQLiteUserDB(str(tmp_path / "users.db"))
    try:
        yield SpoolUnderTest(PostgresSpool(database), users, lambda old: PostgresSpool(database))
    finally:
        database.close()
        schema.drop()


def register(under_test, *names):
    for name in names:
        under_test.users.add(name, key())


def test_message_then_surb_reply_with_get_and_advance_as_the_reference(spool):
    """The reference's TestBoltSpool, on every backend."""
    register(spool, b"alice")
    surb_id = secrets.token_bytes(16)
    spool.spool.store_message(b"alice", message(1))
    spool.spool.store_surb_reply(b"alice", surb_id, reply(2))
    s = spool.reopen()
    head = s.get(b"alice", False)
    assert (head.message, head.surb_id, head.remaining) == (message(1), None, 1)
    assert s.get(b"alice", False) == head  # a peek does not consume
    second = s.get(b"alice", True)
    assert (second.message, second.surb_id, second.remaining) == (reply(2), surb_id, 0)
    assert s.get(b"alice", False) == second
    assert s.get(b"alice", True).is_empty
    assert s.get(b"alice", True).is_empty  # advancing an empty spool stays empty


def test_fifo_order_per_user_and_sequence_restart(spool):
    register(spool, b"alice", b"bob")
    s = spool.spool
    s.store_batch([SpoolRecord(b"alice", None, message(i)) for i in range(5)]
                  + [SpoolRecord(b"bob", None, message(100))])
    got = [s.get(b"alice", False).message]
    for _ in range(4):
        got.append(s.get(b"alice", True).message)
    assert got == [message(i) for i in range(5)]
    assert s.get(b"alice", True).is_empty
    s.store_message(b"alice", message(7))  # after the spool emptied (the sequence restarts)
    s.store_message(b"alice", message(8))
    assert s.get(b"alice", False).message == message(7)
    assert s.get(b"alice", True).message == message(8)
    assert s.get(b"bob", False).message == message(100)


def test_wrong_sizes_and_missing_surb_ids_are_refused_and_nothing_is_stored(spool):
    register(spool, b"alice")
    s = spool.spool
    bad = [
        lambda: s.store_message(b"alice", message(1)[:-1]),
        lambda: s.store_surb_reply(b"alice", secrets.token_bytes(16), reply(1)[:-1]),
        lambda: s.store_surb_reply(b"alice", secrets.token_bytes(15), reply(1)),
        lambda: s.store_surb_reply(b"alice", None, reply(1)),
        lambda: s.store_message(b"", message(1)),
        lambda: s.store_message(b"x" * 65, message(1)),
        # one bad record fails the whole batch: all or nothing
        lambda: s.store_batch([SpoolRecord(b"alice", None, message(1)), SpoolRecord(b"alice", None, b"x")]),
    ]
    for call in bad:
        with pytest.raises(SpoolError):
            call()
    assert s.get(b"alice", False).is_empty


def test_remove_and_vacuum_drop_spools_of_removed_users(spool):
    register(spool, b"alice", b"bob", b"carol")
    s = spool.spool
    s.store_messages([(b"alice", message(1)), (b"bob", message(2)), (b"carol", message(3))])
    s.remove(b"alice")
    assert s.get(b"alice", False).is_empty
    s.remove(b"nobody")  # no error
    spool.users.remove(b"bob")
    s.vacuum(spool.users)
    assert s.get(b"bob", False).is_empty
    assert s.get(b"carol", False).message == message(3)


DURABILITY_CHILD = textwrap.dedent("""
    import sys
    from katzenpost.provider.spool.sqlite import SQLiteSpool
    from katzenpost.provider.spool.postgres import PostgresSpool
    from katzenpost.provider.postgres import SQLDatabase
    kind, where = sys.argv[1], sys.argv[2]
    spool = SQLiteSpool(where) if kind == "sqlite" else PostgresSpool(SQLDatabase(where))
    body = bytes([7]) * 1490
    spool.store_batch([(b"alice", None, body), (b"alice", None, bytes([8]) * 1490)])
    print("stored", flush=True)
    import time
    time.sleep(60)
""")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_returned_store_survives_kill_9(tmp_path, kind):
    schema = None
    if kind == "sqlite":
        where = str(tmp_path / "spool.db")
    else:
        schema = PostgresSchema(spool_only=True)
        where = schema.dsn
    child = subprocess.Popen([sys.executable, "-c", DURABILITY_CHILD, kind, where],
                             stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        line = child.stdout.readline()
        assert line.strip() == "stored"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        spool = SQLiteSpool(where) if kind == "sqlite" else PostgresSpool(SQLDatabase(where))
        assert spool.get(b"alice", False).message == bytes([7]) * 1490
        assert spool.get(b"alice", True).message == bytes([8]) * 1490
        spool.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        if schema is not None:
            schema.drop()
