"""The node's management commands over a real socket with a fake node: SHUTDOWN, SEND_RATE,
SEND_BURST, STATUS and the provider-only user commands on a mix and on a provider."""
import json

import pytest

from katzenpost.server.management import ManagementFailure, ManagementServer, ManagementSyntaxError
from katzenpost.server.node_commands import USER_VERBS, parse_uint64, register_node_commands
from management_support import Client, FakeControl, run

OK = "250 Requested action ok, completed"
SYNTAX = "501 Syntax error in parameters or arguments"
NOT_PROVIDER = "554 Transaction failed: not a provider"


def session(tmp_path, control, body):
    async def wrapper():
        server = ManagementServer(str(tmp_path / "management_sock"), control.identifier)
        register_node_commands(server, control)
        await server.start()
        client = None
        try:
            client = await Client.connect(server.path)
            await body(client)
        finally:
            if client is not None:
                client.close()
            await server.stop()
    run(wrapper())


def test_shutdown_has_no_reply_and_asks_the_node_to_halt(tmp_path):
    control = FakeControl()

    async def body(client):
        client.send("shutdown\r\nSTATUS\r\n")
        reply = await client.line()              # the STATUS reply comes first: SHUTDOWN has none
        assert reply.startswith("250 {")
    session(tmp_path, control, body)
    assert control.shutdown_reasons == ["user requested shutdown via mgmt interface"]


def test_send_rate_and_burst_on_a_provider(tmp_path):
    control = FakeControl(is_provider=True)

    async def body(client):
        assert await client.command("SEND_RATE 30") == "250 30"
        assert await client.command("send_burst 0007") == "250 7"
        assert await client.command(f"SEND_RATE {2**64 - 1}") == f"250 {2**64 - 1}"
        for bad in ("SEND_RATE", "SEND_RATE -1", "SEND_RATE 1 2", "SEND_RATE  5", "SEND_RATE x",
                    f"SEND_RATE {2**64}", "SEND_BURST 1.5", "SEND_BURST +3", "SEND_BURST \u0663",
                    "SEND_RATE " + "9" * 4000):
            assert await client.command(bad) == SYNTAX, bad
    session(tmp_path, control, body)
    assert control.send_rate == 2**64 - 1 and control.send_burst == 7


def test_send_rate_and_burst_on_a_mix_are_stored(tmp_path):
    control = FakeControl()

    async def body(client):
        assert await client.command("SEND_RATE 30") == "250 30"
        assert await client.command("SEND_BURST 4") == "250 4"
        assert await client.command("SEND_BURST nope") == SYNTAX
        assert await client.command("ADD_USER alice " + "00" * 32) == NOT_PROVIDER
    session(tmp_path, control, body)
    assert control.send_rate == 30 and control.send_burst == 4


def test_status_is_one_line_of_json(tmp_path):
    status = {"identifier": "mix1.example.org", "queues": {"ingress": 1}, "note": "two\nlines",
              "blob": b"\x01"}
    control = FakeControl(status=status)

    async def body(client):
        reply = await client.command("status")
        assert reply.startswith("250 ")
        decoded = json.loads(reply[4:])
        assert decoded["queues"] == {"ingress": 1}
        assert decoded["note"] == "two\nlines"          # escaped, so still one line
        assert await client.command("STATUS extra") == SYNTAX
    session(tmp_path, control, body)


def test_status_failure_is_554_and_the_session_goes_on(tmp_path):
    control = FakeControl()
    control.status = lambda: 1 / 0

    async def body(client):
        assert await client.command("STATUS") == "554 Transaction failed"
        assert await client.command("QUIT") == OK
    session(tmp_path, control, body)


@pytest.mark.parametrize("verb", USER_VERBS)
def test_user_commands_on_a_mix_say_not_a_provider(tmp_path, verb):
    async def body(client):
        assert await client.command(f"{verb} alice") == NOT_PROVIDER
    session(tmp_path, FakeControl(), body)


def test_user_commands_on_a_provider_are_delegated(tmp_path):
    control = FakeControl(is_provider=True)

    async def body(client):
        for verb in USER_VERBS:
            assert await client.command(f"{verb.lower()} Alice KEY") == OK
    session(tmp_path, control, body)
    assert control.user_commands.calls == [[verb.lower(), "Alice", "KEY"] for verb in USER_VERBS]


def test_user_command_errors_map_to_501_and_554(tmp_path):
    control = FakeControl(is_provider=True)

    class Users:
        def handle(self, fields):                  # a plain (not async) implementation is fine
            if len(fields) != 2:
                raise ManagementSyntaxError()
            if fields[1] == "ghost":
                raise ManagementFailure()
            return "250 AAAA"

    control.user_commands = Users()

    async def body(client):
        assert await client.command("USER_LINK alice") == "250 AAAA"
        assert await client.command("USER_LINK  alice") == SYNTAX
        assert await client.command("USER_LINK ghost") == "554 Transaction failed"
    session(tmp_path, control, body)


def test_parse_uint64():
    assert parse_uint64(["X", "0"]) == 0
    assert parse_uint64(["X", "000000000000000000000000001"]) == 1
    for fields in (["X"], ["X", ""], ["X", "1", "2"], ["X", " 1"], ["X", "1_000"], ["X", "0x10"]):
        with pytest.raises(ManagementSyntaxError):
            parse_uint64(fields)
