"""The CBOR plugin client against real processes: the shipped echo plugin, and bad plugins
written here (crashes, hangs, garbage CBOR, no socket path). Nothing may hang the provider."""
from __future__ import annotations

import asyncio
import os
import shutil
import sys
import textwrap
import time

import cbor2
import pytest

from katzenpost.provider.kaetzchen.cborplugin import (CBORPluginService, PluginError, encode_request,
                                                      plugin_argv)
from katzenpost.provider.kaetzchen.http11 import HTTPError, ResponseParser
from katzenpost.provider.payload import reply_payload

ECHO = shutil.which("katzenpost-echo-plugin") or os.path.join(os.path.dirname(sys.executable),
                                                              "katzenpost-echo-plugin")


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def echo_service(tmp_path, concurrency=1, **kwargs):
    return CBORPluginService("echo", "+echo", ECHO, {"log_dir": str(tmp_path)}, concurrency, **kwargs)


def script(tmp_path, name, body) -> str:
    """An executable Python plugin written for one test."""
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


# A tiny plugin skeleton: a UNIX-socket HTTP server whose /request answer the test chooses.
SERVER = """
import os, sys, tempfile, socketserver, time
from http.server import BaseHTTPRequestHandler
import cbor2
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        answer = respond(self.path, body)
        if answer is None:
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
    def log_message(self, *a):
        pass
d = tempfile.mkdtemp()
path = os.path.join(d, "p.sock")
server = socketserver.ThreadingUnixStreamServer(path, H)
server.daemon_threads = True
print(path, flush=True)
server.serve_forever()
"""


def test_plugin_argv_passes_config_as_go_flags():
    assert plugin_argv("/bin/p", {"log_dir": "/tmp", "x": "1"}) == ["/bin/p", "-log_dir", "/tmp", "-x", "1"]


def test_request_encoding_matches_the_reference_example():
    expected = bytes.fromhex("a3 62 4944 07 67 5061796c6f6164 43 010203 67 48617353555242 f5")
    assert encode_request(7, b"\x01\x02\x03", True) == expected


def test_echo_plugin_round_trip_parameters_and_concurrency(tmp_path):
    async def scenario():
        service = echo_service(tmp_path, concurrency=2)
        await service.start()
        try:
            payloads = [os.urandom(1490) for _ in range(6)]
            answers = await asyncio.gather(*(service.on_request(i, p, True) for i, p in enumerate(payloads)))
            params = await service.refresh_parameters()
            return payloads, answers, params, [p.socket_path for p in service._slots]
        finally:
            await service.halt()

    payloads, answers, params, sockets = run(scenario())
    assert answers == payloads
    assert params == {}  # the echo plugin answers CBOR null
    assert len(set(sockets)) == 2 and all(not os.path.exists(s) for s in sockets)  # cleaned up on halt


def test_echo_plugin_requires_an_existing_log_dir(tmp_path):
    async def scenario():
        service = CBORPluginService("echo", "+echo", ECHO, {"log_dir": str(tmp_path / "missing")}, 1,
                                    startup_timeout=10)
        await service.start()

    with pytest.raises(PluginError, match="socket path"):
        run(scenario())


def test_a_command_that_cannot_be_executed_aborts_the_start(tmp_path):
    service = CBORPluginService("x", "+x", str(tmp_path / "nonexistent"), {}, 1)
    with pytest.raises(PluginError, match="failed to execute"):
        run(service.start())


def test_a_plugin_that_never_prints_a_socket_path_times_out(tmp_path):
    silent = script(tmp_path, "silent", "import time\ntime.sleep(60)\n")
    service = CBORPluginService("x", "+x", silent, {}, 1, startup_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(PluginError, match="no socket path"):
        run(service.start())
    assert time.monotonic() - started < 10


def test_garbage_cbor_and_wrong_shapes_drop_the_request(tmp_path):
    garbage = script(tmp_path, "garbage", """
def respond(path, body):
    request = cbor2.loads(body) if body else None
    if path == "/parameters":
        return b"\\xff\\xff"
    kind = request["Payload"][:1]
    return {b"g": b"\\x9f\\xff\\xff garbage", b"t": cbor2.dumps({"Payload": "text"}),
            b"l": cbor2.dumps([1, 2]), b"e": cbor2.dumps({"Payload": b""})}[kind]
""" + SERVER)

    async def scenario():
        service = CBORPluginService("g", "+g", garbage, {}, 1)
        await service.start()  # undecodable parameters: logged, nothing advertised but endpoint
        try:
            results = []
            for kind in (b"g", b"t", b"l"):
                with pytest.raises(PluginError):
                    await service.on_request(1, kind + bytes(1489), True)
            results.append(await service.on_request(2, b"e" + bytes(1489), True))
            return results, service.parameters()
        finally:
            await service.halt()

    results, params = run(scenario())
    assert results == [None]  # an empty plugin payload: no reply
    assert params == {}


def test_a_plugin_that_never_answers_times_out_and_the_next_request_works(tmp_path):
    slow = script(tmp_path, "slow", """
def respond(path, body):
    if path == "/parameters":
        return cbor2.dumps({"k": "v"})
    request = cbor2.loads(body)
    if request["Payload"][:1] == b"h":
        time.sleep(30)
        return None
    return cbor2.dumps({"Payload": request["Payload"][:3]})
""" + SERVER)

    async def scenario():
        service = CBORPluginService("s", "+s", slow, {}, 1, request_timeout=0.5)
        await service.start()
        try:
            started = time.monotonic()
            with pytest.raises(PluginError, match="did not answer"):
                await service.on_request(1, b"h" + bytes(1489), True)
            elapsed = time.monotonic() - started
            answer = await service.on_request(2, b"ok!" + bytes(1487), True)
            return elapsed, answer, service.parameters()
        finally:
            await service.halt()

    elapsed, answer, params = run(scenario())
    assert elapsed < 5 and answer == b"ok!" and params == {"k": "v"}


def test_a_crashed_plugin_drops_requests_and_is_restarted_with_backoff(tmp_path):
    marker = tmp_path / "crashed-once"
    crashy = script(tmp_path, "crashy", f"""
def respond(path, body):
    if path == "/parameters":
        return cbor2.dumps(None)
    request = cbor2.loads(body)
    if request["Payload"][:1] == b"c" and not os.path.exists({str(marker)!r}):
        open({str(marker)!r}, "w").close()
        os._exit(3)
    return cbor2.dumps({{"Payload": b"alive"}})
""" + SERVER)

    async def scenario():
        service = CBORPluginService("c", "+c", crashy, {}, 1, backoff_initial=0.1)
        await service.start()
        try:
            with pytest.raises(PluginError):
                await service.on_request(1, b"c" + bytes(1489), True)
            deadline = time.monotonic() + 10
            while service.restarts == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return service.restarts, await service.on_request(2, b"x" + bytes(1489), True)
        finally:
            await service.halt()

    restarts, answer = run(scenario())
    assert restarts == 1 and answer == b"alive"


def test_halt_kills_a_plugin_that_ignores_sigterm(tmp_path):
    stubborn = script(tmp_path, "stubborn", """
import signal
signal.signal(signal.SIGTERM, signal.SIG_IGN)
def respond(path, body):
    return cbor2.dumps(None)
""" + SERVER)

    async def scenario():
        service = CBORPluginService("t", "+t", stubborn, {}, 1)
        await service.start()
        process = service._slots[0].proc
        await service.halt()
        return process.returncode

    assert run(scenario()) is not None


@pytest.mark.parametrize("chunks, body", [
    ([b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcEXTRA"], b"abc"),
    ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", b"2\r\nde\r\n0\r\n\r\n"], b"abcde"),
    ([b"HTTP/1.0 500 Oops\r\n\r\nbody", None], b"body"),
])
def test_response_parser(chunks, body):
    parser = ResponseParser()
    for chunk in chunks:
        parser.feed_eof() if chunk is None else parser.feed(chunk)
    assert parser.done and parser.body == body


@pytest.mark.parametrize("data", [b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                                  b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n"])
def test_response_parser_rejects_garbage(data):
    with pytest.raises(HTTPError):
        parser = ResponseParser()
        parser.feed(data)
        parser.feed_eof()


def test_provider_routes_requests_to_the_echo_plugin_and_advertises_it(tmp_path):
    from katzenpost.provider.provider import Provider
    from katzenpost.server import workers
    from tests.provider_support import ScheduleRecorder, SurbEndpoint, forward_payload, provider_config
    from tests.test_pipeline_flow import wait_for
    from tests.test_provider_core import local_batch

    client = SurbEndpoint()
    schedule = ScheduleRecorder()
    plugin = (f'[[Provider.CBORPluginKaetzchen]]\nCapability = "echo"\nEndpoint = "+echo"\n'
              f'Command = "{ECHO}"\nMaxConcurrency = 2\n[Provider.CBORPluginKaetzchen.Config]\n'
              f'log_dir = "{tmp_path}"\n')

    async def scenario():
        provider = Provider(provider_config(tmp_path, kaetzchen=plugin), schedule=schedule,
                            get_raw_consensus=None)
        await provider.start()
        try:
            assert provider.kaetzchen_for_pki() == {"echo": {"endpoint": "+echo"}}
            provider.on_local(local_batch([(workers.KIND_KAETZCHEN, b"+echo", 55, None,
                                            forward_payload(b"hello plugin", client.surb))]))
            await wait_for(lambda: schedule.sent, 10)
        finally:
            await provider.halt()

    run(scenario())
    packet, delay, hop = schedule.sent[0]
    assert delay == 55 and hop == client.node_id
    assert client.open(packet) == reply_payload(b"hello plugin".ljust(1490, b"\x00"))
