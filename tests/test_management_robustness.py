"""The management socket under bad input and bad clients: long and non-UTF-8 lines, half-closed
and idle sessions, clients that never read, too many sessions; none may hurt another session."""
import asyncio
import os
import socket

from katzenpost.server.management import ManagementServer
from management_support import Client, run, serve

SYNTAX = "501 Syntax error in parameters or arguments"


async def echo_server(tmp_path, **kwargs):
    server = ManagementServer(str(tmp_path / "management_sock"), "x", **kwargs)

    async def echo(fields):
        return "250 " + "|".join(fields[1:])

    server.register("ECHO", echo)
    await server.start()
    return server


def test_overlong_line_gets_501_and_close(tmp_path):
    async def body(server):
        client = await Client.connect(server.path)
        assert await client.command("ECHO " + "a" * 59) == "250 " + "a" * 59       # 64 bytes: fits
        client.send("ECHO " + "b" * 5000 + "\r\n")
        assert await client.line() == SYNTAX
        assert await client.at_eof()
        # A line with no newline at all, larger than the limit, is refused the same way.
        other = await Client.connect(server.path)
        other.send(b"c" * 1000)
        assert await other.line() == SYNTAX
        assert await other.at_eof()
    serve(lambda: echo_server(tmp_path, max_line_bytes=64), body)


def test_non_utf8_and_nul_get_501_and_session_goes_on(tmp_path):
    async def body(server):
        client = await Client.connect(server.path)
        client.send(b"ECHO \xff\xfe\r\n")
        assert await client.line() == SYNTAX
        client.send(b"ECHO a\x00b\r\n")
        assert await client.line() == SYNTAX
        assert await client.command("ECHO ok") == "250 ok"
        assert await client.command("ECHO gr\u00fc\u00df") == "250 gr\u00fc\u00df"
        client.close()
    serve(lambda: echo_server(tmp_path), body)


def test_half_closed_client_gets_replies_including_unterminated_last_line(tmp_path):
    async def body(server):
        client = await Client.connect(server.path)
        client.send("ECHO one\nECHO two")
        client.writer.write_eof()
        assert await client.line() == "250 one"
        assert await client.line() == "250 two"
        assert await client.at_eof()
    serve(lambda: echo_server(tmp_path), body)


def test_idle_session_is_closed(tmp_path):
    async def body(server):
        client = await Client.connect(server.path)
        assert await client.at_eof()
    serve(lambda: echo_server(tmp_path, idle_timeout=0.2), body)


def test_session_limit_refuses_extra_sessions_only(tmp_path):
    async def body():
        server = await echo_server(tmp_path, max_sessions=3)
        clients = []
        try:
            clients = [await Client.connect(server.path) for _ in range(3)]
            extra = await Client.connect(server.path, banner=False)
            assert await extra.line() == "554 Transaction failed: too many management sessions"
            assert await extra.at_eof()
            for i, client in enumerate(clients):
                assert await client.command(f"ECHO {i}") == f"250 {i}"
            clients.pop().close()
            for _ in range(100):                 # the slot is freed once the server sees the close
                again = await Client.connect(server.path, banner=False)
                first = await again.line()
                if first.startswith("220 "):
                    break
                again.close()
                await asyncio.sleep(0.02)
            assert await again.command("ECHO back") == "250 back"
            again.close()
        finally:
            for client in clients:
                client.close()
            await server.stop()
    run(body())


def test_client_that_never_reads_is_cut_off_without_hurting_others(tmp_path):
    async def body():
        server = await echo_server(tmp_path, write_timeout=0.5)
        hog = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.setblocking(False)
        try:
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(loop.sock_connect(hog, server.path), 5)
            # Many commands with long replies, never reading one of them.
            line = ("ECHO " + "z" * 4000 + "\n").encode()
            closed = False
            for _ in range(2000):
                try:
                    hog.send(line * 4)
                except BlockingIOError:
                    await asyncio.sleep(0.01)
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                # Meanwhile a well-behaved session is served promptly.
                good = await Client.connect(server.path)
                assert await good.command("ECHO fine") == "250 fine"
                good.close()
            assert closed, "the server kept a session whose client never reads"
        finally:
            hog.close()
            await server.stop()
    run(body())


def test_abrupt_disconnects_do_not_disturb_the_server(tmp_path):
    async def body(server):
        for _ in range(20):
            client = await Client.connect(server.path, banner=False)
            client.send("ECHO half")
            client.close()
        good = await Client.connect(server.path)
        assert await good.command("ECHO alive") == "250 alive"
        good.close()
    serve(lambda: echo_server(tmp_path), body)


def test_many_concurrent_sessions(tmp_path):
    async def body(server):
        async def session(i):
            client = await Client.connect(server.path)
            replies = [await client.command(f"ECHO {i} {j}") for j in range(5)]
            assert await client.command("QUIT") == "250 Requested action ok, completed"
            return replies

        results = await asyncio.gather(*(session(i) for i in range(20)))
        assert results[7] == [f"250 7|{j}" for j in range(5)]
    serve(lambda: echo_server(tmp_path), body)


def test_overlong_last_line_before_eof_gets_501(tmp_path):
    async def body(server):
        client = await Client.connect(server.path)
        client.send("ECHO " + "d" * 61)              # 66 bytes, no newline, then EOF
        client.writer.write_eof()
        assert await client.line() == SYNTAX
        assert await client.at_eof()
    serve(lambda: echo_server(tmp_path, max_line_bytes=64), body)


def test_a_handler_that_stops_the_server_does_not_hang(tmp_path):
    async def body():
        server = ManagementServer(str(tmp_path / "management_sock"), "x")

        async def halt(fields):
            await server.stop()
            return "250 halted"

        server.register("HALT", halt)
        await server.start()
        client = await Client.connect(server.path)
        client.send("HALT\r\n")
        assert await client.line() == "250 halted"
        assert await client.at_eof()
        assert not os.path.exists(server.path)
        await server.stop()
    run(body())
