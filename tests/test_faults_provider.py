"""Provider storage faults with real processes (docs/reliability.md, "Faults"): a provider killed
with SIGKILL while messages stream in, and a provider whose DataDir fills up. What must hold:
every message whose SURB-ACK left is retrievable afterwards (acknowledged and lost: 0), a store
that fails is counted and never acknowledged, the databases stay intact, and storing resumes when
space returns. (PostgreSQL restarted under a provider: tests/test_provider_pg_restart.py; one
message and kill -9: tests/test_provider_durability.py.)"""
from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from fault_support import fill_up, kill_9, small_tmpfs
from katzenpost.server import workers
from katzenpost.wire import commands as wire
from tests.provider_support import (FakeSession, PostgresSchema, SurbEndpoint, forward_payload, local_batch,
                                    provider_config, reap)
from tests.test_provider_core import Harness

KILL_AFTER_ACKS = 150           # SURB-ACKs seen before the SIGKILL
MESSAGES = 30000                # offered in batches of BATCH, without waiting for commits
BATCH = 10


def message_body(index: int) -> bytes:
    return b"msg %08d " % index


def index_of(payload: bytes) -> int:
    assert payload.startswith(b"msg "), payload[:16]
    return int(payload[4:12])


def deliveries(first: int, count: int, endpoints: dict) -> object:
    """A LocalBatch of `count` reliable messages to alice, each with its own SURB (its first hop,
    a random node ID, tells which message a SURB-ACK acknowledges: endpoints[node_id] = index)."""
    rows = []
    for index in range(first, first + count):
        surb = SurbEndpoint()
        endpoints[surb.node_id] = index
        rows.append((workers.KIND_TO_USER, b"alice", 5, None, forward_payload(message_body(index), surb.surb)))
    return local_batch(rows)


# The provider under load in a child process; each SURB-ACK it hands to the scheduler is
# printed as its message's index.
CHILD = textwrap.dedent("""
    import asyncio, pathlib, sys
    sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
    from tests.provider_support import provider_config
    from tests.test_provider_core import Harness
    from test_faults_provider import BATCH, MESSAGES, deliveries

    backend = eval(sys.argv[3])
    endpoints = {}

    def acked(packets, delay_ms, node_ids):
        print(" ".join(str(endpoints[bytes(node_ids[i])]) for i in range(len(packets))), flush=True)

    async def main():
        async with Harness(provider_config(pathlib.Path(sys.argv[2]), **backend)) as h:
            h.provider.writer._schedule = acked
            await h.add_user("alice")
            print("ready", flush=True)
            for start in range(0, MESSAGES, BATCH):  # built as they go: ~1,500 messages/s
                h.provider.on_local(deliveries(start, BATCH, endpoints))
                await asyncio.sleep(0)
            await h.provider.writer.flush(60)
            print("done", flush=True)
            await asyncio.sleep(60)
    asyncio.run(main())
""")


async def retrieve_everything(provider, user: bytes = b"alice") -> list[bytes]:
    """Every Message in the user's spool, in order: the same sequence number peeks at the head,
    the next one deletes it and answers the new head (the client specification's rule)."""
    session = FakeSession(user)
    sequence = 0
    while True:
        assert await provider.handle_client_command(session, wire.RetrieveMessage(sequence))
        if isinstance(session.sent[-1], wire.MessageEmpty):
            return [m.payload for m in session.sent if isinstance(m, wire.Message)]
        sequence += 1


def retrieve_after_restart(tmp_path, backend) -> list[int]:
    async def go():
        async with Harness(provider_config(tmp_path, **backend)) as h:
            return await retrieve_everything(h.provider)
    return [index_of(p) for p in asyncio.run(asyncio.wait_for(go(), 120))]


def sqlite_intact(path) -> bool:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_kill_9_under_load_loses_no_acknowledged_message(tmp_path, kind):
    schema = PostgresSchema() if kind == "postgres" else None
    backend = {"userdb": "sql", "spool": "sql", "dsn": schema.dsn} if schema else {}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(tmp_path / "child.err", "w") as err:
        child = subprocess.Popen([sys.executable, "-c", CHILD, repo, str(tmp_path), repr(backend)],
                                 stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert child.stdout.readline().strip() == "ready", (tmp_path / "child.err").read_text()[-3000:]
        acked: set[int] = set()
        while len(acked) < KILL_AFTER_ACKS:
            line = child.stdout.readline()
            assert line and line.strip() != "done", "the stream ended before the kill: " + \
                (tmp_path / "child.err").read_text()[-3000:]
            acked.update(int(x) for x in line.split())
        assert kill_9(child) == -9                   # while messages still stream in
        acked.update(int(x) for line in child.stdout.read().splitlines() if line != "done" for x in line.split())
        stored = retrieve_after_restart(tmp_path, backend)
    finally:
        reap(child, schema)
    print(f"outcome ({kind}): acknowledged {len(acked)}, stored {len(stored)}, acknowledged and "
          f"lost {len(acked - set(stored))}")
    assert len(stored) == len(set(stored))           # nothing stored twice
    assert sorted(acked - set(stored)) == []         # acknowledged and lost: none
    assert len(acked) < MESSAGES                      # the kill came mid-stream
    if kind == "sqlite":
        data_dir = tmp_path / "provider"
        assert sqlite_intact(data_dir / "spool.db") and sqlite_intact(data_dir / "users.db")


def test_a_full_data_dir_refuses_stores_unacknowledged_and_recovers(tmp_path, caplog):
    """Embedded databases on a DataDir that fills up: SQLite says 'database or disk is full', the
    whole group commit fails, counted as spool_write_failed and never acknowledged; the user
    database refuses changes with 554; once space returns both work again, and after a restart
    the spool holds exactly the acknowledged messages."""
    base = tmp_path / "fs"
    with small_tmpfs(base / "provider", 8) as data_dir:
        endpoints: dict[bytes, int] = {}
        acked: list[int] = []

        def record(packets, delay_ms, node_ids):
            acked.extend(endpoints[bytes(node_ids[i])] for i in range(len(packets)))

        async def scenario():
            async with Harness(provider_config(base)) as h:
                h.provider.writer._schedule = record
                await h.add_user("alice")
                h.provider.on_local(deliveries(0, 20, endpoints))
                await h.provider.writer.flush(20)
                before_full = len(acked)
                filler = fill_up(data_dir)
                offered = 20
                while h.provider.drops["spool_write_failed"] == 0 and offered < 1000:
                    h.provider.on_local(deliveries(offered, 20, endpoints))
                    await h.provider.writer.flush(20)
                    offered += 20
                users = [await h.provider.user_commands.handle(["ADD_USER", f"user{i}", os.urandom(32).hex()])
                         for i in range(50)]
                full = (offered - 20, h.provider.drops["spool_write_failed"], len(acked) - before_full)
                filler.unlink()
                h.provider.on_local(deliveries(offered, 20, endpoints))
                await h.provider.writer.flush(20)
                after = await h.provider.user_commands.handle(["ADD_USER", "late", os.urandom(32).hex()])
                return before_full, full, users, after, offered + 20

        before_full, (offered_full, failed, acked_full), users, after, offered = asyncio.run(
            asyncio.wait_for(scenario(), 120))
        assert before_full == 20
        assert failed > 0 and acked_full + failed == offered_full      # every store: ACKed or counted
        assert "spool write failed" in caplog.text and "database or disk is full" in caplog.text
        refused = [i for i, reply in enumerate(users) if not reply.startswith("250")]
        assert refused and all(users[i].startswith("554") for i in refused)
        assert after.startswith("250")
        assert len(acked) == offered - failed                          # storing resumed
        stored = retrieve_after_restart(base, {})
        assert sorted(stored) == sorted(acked)                         # exactly the acknowledged ones
        assert sqlite_intact(data_dir / "spool.db") and sqlite_intact(data_dir / "users.db")

        async def exists():
            async with Harness(provider_config(base)) as h:
                return [h.provider.storage.userdb.exists(f"user{i}".encode()) for i in range(50)]
        present = asyncio.run(exists())
        assert [i for i, there in enumerate(present) if not there] == refused
