"""A SURB-ACK means the message is on disk: a provider process killed with SIGKILL right after it
handed out the SURB-ACK still has the message after a restart (SQLite and PostgreSQL)."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from katzenpost.wire import commands as wire
from tests.provider_support import FakeSession, PostgresSchema, body, provider_config, reap
from tests.test_provider_core import Harness

CHILD = textwrap.dedent("""
    import asyncio, pathlib, sys, time
    sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]  # as pytest runs the tests
    from katzenpost.server import workers
    from tests.provider_support import SurbEndpoint, body, forward_payload, local_batch, provider_config
    from tests.test_provider_core import Harness

    backend = eval(sys.argv[3])
    async def main():
        async with Harness(provider_config(pathlib.Path(sys.argv[2]), **backend)) as h:
            await h.add_user("alice")
            sender = SurbEndpoint()
            h.provider.on_local(local_batch([(workers.KIND_TO_USER, b"alice", 10, None,
                                              forward_payload(body(42), sender.surb))]))
            while not h.schedule.sent:          # the SURB-ACK left: tell the parent, then hang
                await asyncio.sleep(0.001)
            print("acked", flush=True)
            await asyncio.sleep(60)
    asyncio.run(main())
""")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_an_acknowledged_message_survives_kill_9_of_the_provider(tmp_path, kind):
    schema = PostgresSchema() if kind == "postgres" else None
    backend = {"userdb": "sql", "spool": "sql", "dsn": schema.dsn} if schema else {}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child = subprocess.Popen([sys.executable, "-c", CHILD, repo, str(tmp_path), repr(backend)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "acked"
        child.send_signal(signal.SIGKILL)
        child.wait(10)

        async def retrieve():
            async with Harness(provider_config(tmp_path, **backend)) as h:
                session = FakeSession(b"alice")
                await h.provider.handle_client_command(session, wire.RetrieveMessage(0))
                return session.sent[0]

        message = asyncio.run(asyncio.wait_for(retrieve(), 60))
        assert isinstance(message, wire.Message) and message.payload == body(42)
    finally:
        reap(child, schema)
