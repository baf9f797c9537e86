"""PostgreSQL going away under a running provider: while it is down, stores fail without a
SURB-ACK, retrievals close the session and authentication is refused (no crash); after the
restart the pool reconnects and nothing acknowledged is lost."""
from __future__ import annotations

import asyncio

import pytest

from katzenpost.provider import postgres
from katzenpost.provider.postgres import load_schema
from katzenpost.server import workers
from katzenpost.wire import commands as wire
from tests.provider_support import FakeSession, PrivatePostgres, SurbEndpoint, forward_payload, provider_config
from tests.test_provider_core import Harness, body, local_batch


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setattr(postgres, "CONNECT_TIMEOUT", 2.0)  # fail fast while the server is down
    pg = PrivatePostgres(tmp_path)
    try:
        load_schema(pg.dsn)
        yield pg
    finally:
        pg.close()


def test_provider_survives_a_postgres_restart_without_losing_acknowledged_messages(tmp_path, server):
    sender = SurbEndpoint()

    def deliver(h, n):
        h.provider.on_local(local_batch([(workers.KIND_TO_USER, b"alice", 10, None,
                                          forward_payload(body(n), sender.surb))]))

    async def scenario():
        cfg = provider_config(tmp_path, userdb="sql", spool="sql", dsn=server.dsn)
        async with Harness(cfg) as h:
            link = await h.add_user("alice")
            session = FakeSession(b"alice", link)
            deliver(h, 1)
            await h.provider.writer.flush(20)
            acked_before = len(h.schedule.sent)

            server.stop()
            deliver(h, 2)
            await h.provider.writer.flush(20)
            acked_down = len(h.schedule.sent) - acked_before
            retrieve_down = await h.provider.handle_client_command(session, wire.RetrieveMessage(0))
            auth_down = await h.provider.authenticate_client(session.peer_credentials)
            mgmt_down = await h.provider.user_commands.handle(["USER_LINK", "alice"])

            server.start()
            # The pool reconnects with back-off: retry as a sender without a SURB-ACK would.
            for _ in range(30):
                deliver(h, 3)
                await h.provider.writer.flush(20)
                acked_after = len(h.schedule.sent) - acked_before - acked_down
                if acked_after:
                    break
                await asyncio.sleep(1)
            fresh = FakeSession(b"alice", link)
            auth_up = await h.provider.authenticate_client(fresh.peer_credentials)
            for seq in (0, 1, 2):
                assert await h.provider.handle_client_command(fresh, wire.RetrieveMessage(seq))
            return (acked_before, acked_down, retrieve_down, auth_down, mgmt_down, acked_after, auth_up,
                    fresh.sent, h.provider.drops)

    (acked_before, acked_down, retrieve_down, auth_down, mgmt_down, acked_after, auth_up, sent,
     drops) = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert (acked_before, acked_down, acked_after) == (1, 0, 1)
    assert retrieve_down is False and auth_down == (False, False) and mgmt_down.startswith("554")
    assert drops["spool_write_failed"] >= 1
    assert auth_up == (True, True)
    # Both acknowledged messages are there; the unacknowledged one was never stored.
    assert [getattr(c, "payload", None) for c in sent] == [body(1), body(3), None]
