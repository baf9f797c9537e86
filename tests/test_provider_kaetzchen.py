"""The built-in Kaetzchen (loop, keyserver) and the dispatcher: endpoint match, replies through
the SURB with the request's delay, the drop paths (malformed, stale, no SURB, failing agent)."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from katzenpost.provider.kaetzchen.base import KaetzchenService
from katzenpost.provider.kaetzchen.dispatcher import KaetzchenDispatcher, endpoint_id
from katzenpost.provider.kaetzchen.echo import EchoService
from katzenpost.provider.kaetzchen.keyserver import KeyserverService, encode_reply, parse_request
from katzenpost.provider.kaetzchen.loop import LoopService
from katzenpost.provider.payload import MAX_REPLY_LENGTH, PayloadError, reply_payload
from tests.test_pipeline_flow import wait_for
from tests.provider_support import ScheduleRecorder, SurbEndpoint, forward_payload


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def lookup(keys: dict):
    async def find(user: bytes):
        return keys.get(user)
    return find


def test_builtin_echo_returns_the_padded_plaintext_with_a_surb_only():
    echo = EchoService("+echo")
    payload = b"hello".ljust(1490, b"\x00")
    assert run(echo.on_request(1, payload, True)) == payload
    assert run(echo.on_request(1, payload, False)) is None
    assert len(reply_payload(payload)) == 2048  # 1492 bytes before padding


def test_loop_answers_empty_with_a_surb_and_nothing_without():
    loop = LoopService("+loop")
    assert run(loop.on_request(1, b"x" * 1490, True)) == b""
    assert run(loop.on_request(1, b"x" * 1490, False)) is None


@pytest.mark.parametrize("payload, user", [
    (b'{"Version":0,"User":"alice"}', "alice"),
    (b'{"User":"alice","Version":0}' + b"\x00" * 100, "alice"),
    (b'{"Version":1,"User":"alice"}', None),
    (b'{"Version":0,"User":"alice","Extra":1}', None),
    (b'{"Version":"0","User":"alice"}', None),
    (b"\xff\xfe", None),
    (b"[]", None),
])
def test_keyserver_request_parsing_is_strict(payload, user):
    assert parse_request(payload) == user


def test_keyserver_replies_status_and_key_in_canonical_json():
    identity = bytes(range(32))
    keys = {b"alice": identity}

    async def scenario():
        service = KeyserverService("+keyserver", await lookup(keys))
        ok = await service.on_request(1, b'{"Version":0,"User":"alice"}'.ljust(1490, b"\x00"), True)
        unknown = await service.on_request(2, b'{"Version":0,"User":"bob"}', True)
        bad = await service.on_request(3, b"not json", True)
        silent = await service.on_request(4, b'{"Version":0,"User":"alice"}', False)
        return ok, unknown, bad, silent

    ok, unknown, bad, silent = run(scenario())
    import base64
    assert json.loads(ok) == {"PublicKey": base64.b64encode(identity).decode(), "StatusCode": 0,
                              "User": "alice", "Version": 0}
    assert ok.startswith(b'{"PublicKey":') and b" " not in ok  # sorted keys, compact
    assert json.loads(unknown)["StatusCode"] == 2 and json.loads(unknown)["PublicKey"] == ""
    assert bad == encode_reply("", 1, None)
    assert silent is None


def test_reply_payload_limits_and_layout():
    assert reply_payload(b"hi")[:4] == b"\x01\x00hi" and len(reply_payload(b"hi")) == 2048
    assert reply_payload(None) == b"\x01\x00" + bytes(2046)
    reply_payload(bytes(MAX_REPLY_LENGTH))
    with pytest.raises(PayloadError):
        reply_payload(bytes(MAX_REPLY_LENGTH + 1))


class Agent(KaetzchenService):
    capability = "test"

    def __init__(self, endpoint="+test", response=b"pong", fail=False):
        self.endpoint, self.response, self.fail = endpoint, response, fail
        self.seen = []

    def parameters(self):
        return {"flavour": "plain"}

    async def on_request(self, request_id, payload, has_surb):
        self.seen.append((payload, has_surb))
        if self.fail:
            raise RuntimeError("agent broke")
        return self.response


def test_dispatcher_answers_through_the_surb_with_the_request_delay():
    client = SurbEndpoint()
    schedule = ScheduleRecorder()

    async def scenario():
        agent = Agent()
        dispatcher = KaetzchenDispatcher([agent], kaetzchen_delay_ms=750, schedule=schedule)
        await dispatcher.start()
        try:
            assert dispatcher.submit(endpoint_id("+test"), forward_payload(b"ping", client.surb), 1234, True,
                                     time.monotonic_ns())
            await wait_for(lambda: schedule.sent)
        finally:
            await dispatcher.halt()
        return agent, dispatcher

    agent, dispatcher = run(scenario())
    assert agent.seen == [(b"ping".ljust(1490, b"\x00"), True)]
    packet, delay, hop = schedule.sent[0]
    assert delay == 1234 and hop == client.node_id
    assert client.open(packet) == reply_payload(b"pong")
    assert dispatcher.kaetzchen_for_pki() == {"test": {"flavour": "plain", "endpoint": "+test"}}


def test_dispatcher_drop_paths_are_counted_and_never_answered():
    client = SurbEndpoint()
    schedule = ScheduleRecorder()

    async def scenario():
        ok, failing = Agent(), Agent("+fail", fail=True)
        failing.capability = "fail"
        dispatcher = KaetzchenDispatcher([ok, failing], kaetzchen_delay_ms=750, schedule=schedule)
        await dispatcher.start()
        now = time.monotonic_ns()
        try:
            bad = bytearray(forward_payload(b"x", client.surb))
            bad[1] = 1  # reserved byte
            assert not dispatcher.submit(endpoint_id("+test"), bytes(bad), 10, True, now)
            assert not dispatcher.submit(endpoint_id("+test"), bytes(100), 10, True, now)
            assert not dispatcher.submit(endpoint_id("+nobody"), forward_payload(b"x", client.surb), 10, True, now)
            stale = now - 2_000_000_000
            dispatcher.submit(endpoint_id("+test"), forward_payload(b"stale", client.surb), 10, True, stale)
            dispatcher.submit(endpoint_id("+fail"), forward_payload(b"x", client.surb), 10, True, now)
            dispatcher.submit(endpoint_id("+test"), forward_payload(b"nosurb", None), 10, True, now)
            dispatcher.submit(endpoint_id("+test"), forward_payload(b"unreliable", client.surb), 0, False, now)
            await wait_for(lambda: dispatcher.drops["kaetzchen_failed"] == 1 and len(ok.seen) == 2)
            await asyncio.sleep(0.05)
        finally:
            await dispatcher.halt()
        return ok, dispatcher

    ok, dispatcher = run(scenario())
    assert schedule.sent == []
    assert [seen[1] for seen in ok.seen] == [False, False]  # no SURB / no NodeDelay: not answerable
    assert dispatcher.drops == {"kaetzchen_malformed": 2, "kaetzchen_unknown_endpoint": 1,
                                "kaetzchen_delay": 1, "kaetzchen_failed": 1}


def test_dispatcher_refuses_duplicate_and_oversized_endpoints():
    with pytest.raises(ValueError):
        KaetzchenDispatcher([Agent(), Agent()], kaetzchen_delay_ms=1, schedule=None)
    with pytest.raises(ValueError):
        endpoint_id("x" * 65)
