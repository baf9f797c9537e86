"""The management socket's line protocol (the reference's thwack): banner, replies, QUIT, case,
field splitting, handler errors, socket file mode and replacement."""
import asyncio
import os
import socket
import stat

import pytest

from katzenpost.server.management import (
    ManagementFailure, ManagementServer, ManagementSyntaxError,
)
from management_support import Client, run, serve

BANNER = "220 mix1.example.org Katzenpost Management Interface Service ready"


async def started(tmp_path, **kwargs):
    server = ManagementServer(str(tmp_path / "management_sock"), "mix1.example.org", **kwargs)
    seen = []

    async def echo(fields):
        seen.append(fields)
        return "250 " + "|".join(fields)

    async def syntax(fields):
        raise ManagementSyntaxError()

    async def fail(fields):
        raise ManagementFailure()

    async def fail_detail(fields):
        raise ManagementFailure("no such user")

    async def crash(fields):
        raise RuntimeError("handler bug")

    def sync_reply(fields):
        return "250 sync"

    async def silent(fields):
        return None

    async def bad_reply(fields):
        return "250 one\r\n250 two"

    for verb, handler in [("ECHO", echo), ("SYNTAX", syntax), ("FAIL", fail), ("DETAIL", fail_detail),
                          ("CRASH", crash), ("SYNC", sync_reply), ("SILENT", silent), ("BAD", bad_reply)]:
        server.register(verb, handler)
    await server.start()
    return server, seen


def test_banner_and_reply_codes(tmp_path):
    async def body(server, seen):
        client = await Client.connect(server.path)
        assert client.banner == BANNER
        assert await client.command("ECHO a B c") == "250 ECHO|a|B|c"
        assert await client.command("echo MiXeD case") == "250 echo|MiXeD|case"
        assert await client.command("SYNTAX x") == "501 Syntax error in parameters or arguments"
        assert await client.command("FAIL") == "554 Transaction failed"
        assert await client.command("DETAIL") == "554 Transaction failed: no such user"
        assert await client.command("NOPE") == "500 Syntax error, command unrecognised"
        assert await client.command("") == "500 Syntax error, command unrecognised"
        assert await client.command("SYNC") == "250 sync"
        assert seen[0] == ["ECHO", "a", "B", "c"]
        client.close()
    serve(lambda: started(tmp_path), body)


def test_line_endings_trim_and_single_space_split(tmp_path):
    async def body(server, _):
        client = await Client.connect(server.path)
        assert await client.command("ECHO lf", end="\n") == "250 ECHO|lf"
        assert await client.command("  ECHO trimmed \t", end="\r\n") == "250 ECHO|trimmed"
        # Double spaces give empty fields, as the reference's handlers see them.
        assert await client.command("ECHO  x") == "250 ECHO||x"
        # Several commands in one write are answered in order.
        client.send("ECHO 1\nECHO 2\r\nECHO 3\n")
        assert [await client.line() for _ in range(3)] == ["250 ECHO|1", "250 ECHO|2", "250 ECHO|3"]
        client.close()
    serve(lambda: started(tmp_path), body)


def test_quit_replies_then_closes(tmp_path):
    async def body(server, _):
        client = await Client.connect(server.path)
        assert await client.command("quit") == "250 Requested action ok, completed"
        assert await client.at_eof()
        # The server keeps serving new sessions.
        other = await Client.connect(server.path)
        assert await other.command("ECHO") == "250 ECHO"
        other.close()
    serve(lambda: started(tmp_path), body)


def test_handler_exception_and_invalid_reply_give_554(tmp_path, caplog):
    async def body(server, _):
        client = await Client.connect(server.path)
        assert await client.command("CRASH") == "554 Transaction failed"
        assert await client.command("BAD") == "554 Transaction failed"
        assert await client.command("ECHO still") == "250 ECHO|still"
        client.close()
    serve(lambda: started(tmp_path), body)
    assert any("CRASH failed" in r.getMessage() and r.exc_info for r in caplog.records)


def test_no_reply_handler_keeps_session(tmp_path):
    async def body(server, _):
        client = await Client.connect(server.path)
        client.send("SILENT\r\nECHO after\r\n")
        assert await client.line() == "250 ECHO|after"
        client.close()
    serve(lambda: started(tmp_path), body)


def test_slow_handler_times_out_with_554(tmp_path):
    async def body():
        server = ManagementServer(str(tmp_path / "s"), "x", handler_timeout=0.2)

        async def slow(fields):
            await asyncio.sleep(30)

        server.register("SLOW", slow)
        await server.start()
        try:
            client = await Client.connect(server.path)
            assert await client.command("SLOW") == "554 Transaction failed"
            client.close()
        finally:
            await server.stop()
    run(body())


def test_socket_mode_0600_and_existing_file_replaced(tmp_path):
    async def body():
        path = tmp_path / "management_sock"
        path.write_text("stale")
        os.chmod(path, 0o644)
        server = ManagementServer(str(path), "x")
        await server.start()
        try:
            info = os.lstat(path)
            assert stat.S_ISSOCK(info.st_mode)
            assert stat.S_IMODE(info.st_mode) == 0o600
            assert sorted(os.listdir(tmp_path)) == ["management_sock"]     # no staging left
            client = await Client.connect(str(path))
            assert client.banner.startswith("220 x ")
            client.close()
        finally:
            await server.stop()
        assert not path.exists()
    run(body())


def test_stale_socket_from_a_dead_node_is_replaced(tmp_path):
    async def body():
        path = tmp_path / "management_sock"
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(path))
        stale.close()
        server = ManagementServer(str(path), "x")
        await server.start()
        try:
            client = await Client.connect(str(path))
            assert await client.command("QUIT") == "250 Requested action ok, completed"
        finally:
            await server.stop()
    run(body())


def test_long_path_binds_in_place_with_mode_0600(tmp_path):
    async def body():
        # Long enough that the staging directory would not fit in sun_path, short enough to bind.
        base = tmp_path / ("d" * max(1, 100 - len(str(tmp_path)) - 8))
        base.mkdir()
        path = base / "ms"
        assert len(str(path)) <= 107
        server = ManagementServer(str(path), "x")
        await server.start()
        try:
            assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
            client = await Client.connect(str(path))
            client.close()
        finally:
            await server.stop()
    if len(str(tmp_path)) > 90:
        pytest.skip("tmp_path too long to build the case")
    run(body())


def test_directory_at_path_is_refused(tmp_path):
    async def body():
        (tmp_path / "sock").mkdir()
        server = ManagementServer(str(tmp_path / "sock"), "x")
        with pytest.raises(IsADirectoryError):
            await server.start()
        assert sorted(os.listdir(tmp_path)) == ["sock"]
    run(body())


def test_stop_closes_open_sessions_and_leaves_a_successor_socket(tmp_path):
    async def body():
        server, _ = await started(tmp_path)
        client = await Client.connect(server.path)
        successor = None
        try:
            # A second server took over the path (a restarted node): stop() must not unlink it.
            successor = ManagementServer(server.path, "next")
            await successor.start()
            await server.stop()
            assert await client.at_eof()
            assert os.path.exists(server.path)
            other = await Client.connect(server.path)
            assert other.banner.startswith("220 next ")
            other.close()
        finally:
            if successor is not None:
                await successor.stop()
            await server.stop()
    run(body())


def test_register_refuses_bad_verbs():
    server = ManagementServer("/tmp/unused", "x")
    for verb in ("", "TWO WORDS", "quit"):
        with pytest.raises(ValueError):
            server.register(verb, lambda f: None)
