"""The management socket, the metrics endpoint and the drop report on uvloop, the node's
preferred event loop (the other tests use the stock loop; KATZENPOST_TEST_LOOP=uvloop runs them
all on uvloop)."""
import asyncio
import logging
import os
import stat

import pytest

from katzenpost.log import NOTICE
from katzenpost.server.drop_report import DropReporter
from katzenpost.server.management import ManagementServer
from katzenpost.server.node_commands import register_node_commands
from management_support import Client, FakeControl, add_drops, run, scrape_once, value

pytest.importorskip("uvloop")


def test_management_session_on_uvloop(tmp_path):
    control = FakeControl(is_provider=True)

    async def body():
        server = ManagementServer(str(tmp_path / "management_sock"), control.identifier, write_timeout=0.5)
        register_node_commands(server, control)
        await server.start()
        try:
            assert stat.S_IMODE(os.lstat(server.path).st_mode) == 0o600
            client = await Client.connect(server.path)
            assert await client.command("send_rate 12") == "250 12"
            assert (await client.command("STATUS")).startswith("250 {")
            client.send(b"\xff\n")
            assert await client.line() == "501 Syntax error in parameters or arguments"
            client.send("X" * 5000 + "\n")
            assert await client.line() == "501 Syntax error in parameters or arguments"
            assert await client.at_eof()
            other = await Client.connect(server.path)
            assert await other.command("QUIT") == "250 Requested action ok, completed"
            assert await other.at_eof()
        finally:
            await server.stop()
        assert not os.path.exists(server.path)
    run(body(), loop="uvloop")
    assert control.send_rate == 12


def test_metrics_scrape_on_uvloop():
    control = FakeControl()
    add_drops(control.counters, "worker-0", replay=2)
    samples = scrape_once(control, loop="uvloop")
    assert value(samples, "katzenpost_dropped_packets_total", reason="replay") == 2


def test_drop_report_on_uvloop(caplog):
    caplog.set_level(NOTICE, logger="katzenpost.test.uvdrops")
    control = FakeControl()
    reporter = DropReporter(control.counters, interval=3600, logger=logging.getLogger("katzenpost.test.uvdrops"))

    async def body():
        reporter.start()
        add_drops(control.counters, "io", send_slack=1)
        await asyncio.sleep(0)
        await reporter.stop()
    run(body(), loop="uvloop")
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records if r.levelno == NOTICE] == ["send_slack=1"]
