"""The HTTP user registration listener (EnableUserRegistrationHTTP): the reference's form fields
and commands, OK on success, 500 for every refusal, 404 elsewhere; nothing written on refusal."""
from __future__ import annotations

import asyncio
import base64
import socket
import urllib.error
import urllib.parse
import urllib.request

import pytest

from katzenpost.provider.provider import Provider
from tests.provider_support import key, provider_config


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(url: str, fields: dict | None, method: str = "POST") -> tuple[int, bytes]:
    data = urllib.parse.urlencode(fields).encode() if fields is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture
def registration(tmp_path):
    port = free_port()
    extra = f'EnableUserRegistrationHTTP = true\nUserRegistrationHTTPAddresses = ["127.0.0.1:{port}"]'
    cfg = provider_config(tmp_path, extra_provider=extra)
    return cfg, f"http://127.0.0.1:{port}/registration"


def test_registration_creates_users_and_refuses_bad_requests(registration):
    cfg, url = registration
    link, link2, identity = key(), key(), key()

    async def scenario():
        provider = Provider(cfg, schedule=None, get_raw_consensus=None, submit_packet=None)
        await provider.start()
        try:
            calls = [
                ({"version": "0", "command": "register_link_key", "user": "Alice", "link_key": link.hex()}, "POST"),
                ({"version": "0", "command": "register_link_key", "user": "alice", "link_key": link.hex()}, "POST"),
                ({"version": "0", "command": "register_link_and_identity_key", "user": "bob",
                  "link_key": base64.b64encode(link2).decode(), "identity_key": identity.hex()}, "POST"),
                ({"version": "1", "command": "register_link_key", "user": "carol", "link_key": link.hex()}, "POST"),
                ({"version": "0", "command": "register_link_key", "user": "", "link_key": link.hex()}, "POST"),
                ({"version": "0", "command": "frobnicate", "user": "dave", "link_key": link.hex()}, "POST"),
                ({"version": "0", "command": "register_link_key", "user": "erin", "link_key": "zz"}, "POST"),
                ({"version": "0", "command": "register_link_key", "user": "a b", "link_key": link.hex()}, "POST"),
                (None, "GET"),
            ]
            answers = [await asyncio.to_thread(post, url, fields, method) for fields, method in calls]
            answers.append(await asyncio.to_thread(post, url.replace("/registration", "/other"), {}))
            userdb = provider.storage.userdb
            state = (userdb.link(b"alice"), userdb.link(b"bob"), userdb.identity(b"bob"),
                     [userdb.exists(n) for n in (b"carol", b"dave", b"erin")])
            return answers, state
        finally:
            await provider.halt()

    answers, state = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert [status for status, _ in answers] == [200, 500, 200, 500, 500, 500, 500, 500, 500, 404]
    assert answers[0][1] == b"OK\n"
    assert state == (link, link2, identity, [False, False, False])


def test_registration_listener_is_closed_at_halt(registration):
    cfg, url = registration

    async def scenario():
        provider = Provider(cfg, schedule=None, get_raw_consensus=None, submit_packet=None)
        await provider.start()
        await provider.halt()

    asyncio.run(asyncio.wait_for(scenario(), 30))
    port = int(url.split(":")[2].split("/")[0])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_garbage_requests_get_an_error_and_the_listener_stays_up(registration):
    cfg, url = registration
    port = int(url.split(":")[2].split("/")[0])

    def raw(data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
            return conn.recv(4096)

    async def scenario():
        provider = Provider(cfg, schedule=None, get_raw_consensus=None, submit_packet=None)
        await provider.start()
        try:
            garbage = await asyncio.to_thread(raw, b"\x00\xff nonsense\r\n\r\n")
            huge = await asyncio.to_thread(
                raw, b"POST /registration HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")
            truncated = await asyncio.to_thread(raw, b"POST /registration HTTP/1.1\r\nHost")
            still_up = await asyncio.to_thread(post, url, {"version": "0", "command": "register_link_key",
                                                          "user": "zed", "link_key": key().hex()})
            return garbage, huge, truncated, still_up
        finally:
            await provider.halt()

    garbage, huge, truncated, still_up = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert garbage.startswith(b"HTTP/1.1 400") and huge.startswith(b"HTTP/1.1 400")
    assert truncated == b"" and still_up[0] == 200
