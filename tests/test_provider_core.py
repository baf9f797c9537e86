"""The Provider assembled from a configuration, with fakes for the node around it: delivery
into the spool and SURB-ACKs after the commit, retrieval with the reference's sequence rules,
GetConsensus, the rate limiter, Kaetzchen through on_local, bad input, start failures."""
from __future__ import annotations

import asyncio
import os
import time

import pytest

from katzenpost.provider.provider import Provider, ProviderError
from katzenpost.server import workers
from katzenpost.sphinx.geometry import PACKET_LENGTH, SPRP_PAYLOAD_LENGTH
from katzenpost.wire import commands as wire
from tests.test_pipeline_flow import wait_for
from tests.provider_support import (FakeSession, PostgresSchema, ScheduleRecorder, SurbEndpoint, body,
                                    forward_payload, key, local_batch, provider_config)

KAETZCHEN = """
[[Provider.Kaetzchen]]
Capability = "loop"
Endpoint = "+loop"
[[Provider.Kaetzchen]]
Capability = "keyserver"
Endpoint = "+keyserver"
"""


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(params=["sqlite", "postgres"])
def backends(request, tmp_path):
    """Config keyword arguments for the embedded or the PostgreSQL storage."""
    if request.param == "sqlite":
        yield {}
        return
    schema = PostgresSchema()
    try:
        yield {"userdb": "sql", "spool": "sql", "dsn": schema.dsn}
    finally:
        schema.drop()


class Harness:
    def __init__(self, cfg, consensus=None):
        self.schedule = ScheduleRecorder()
        self.submitted = []
        self.provider = Provider(cfg, schedule=self.schedule, submit_packet=self.submitted.append,
                                 get_raw_consensus=consensus or (lambda epoch: (wire.ConsensusStatus.NOT_FOUND, b"")))

    async def __aenter__(self):
        await self.provider.start()
        return self

    async def __aexit__(self, *exc):
        await self.provider.halt()

    async def add_user(self, name: str, link: bytes | None = None) -> bytes:
        link = link or key()
        assert await self.provider.user_commands.handle(["ADD_USER", name, link.hex()]) == \
            "250 Requested action ok, completed"
        return link


def test_delivery_stores_then_acks_and_retrieval_follows_the_reference(tmp_path, backends):
    sender = SurbEndpoint()
    reply_id = os.urandom(16)
    reply = os.urandom(SPRP_PAYLOAD_LENGTH)

    async def scenario():
        async with Harness(provider_config(tmp_path, **backends)) as h:
            link = await h.add_user("alice")
            batch = local_batch([
                (workers.KIND_TO_USER, b"Alice", 700, None, forward_payload(body(1), sender.surb)),
                (workers.KIND_UNRELIABLE_TO_USER, b"alice", 0, None, forward_payload(body(2), sender.surb)),
                (workers.KIND_SURB_REPLY, b"alice", 0, reply_id, reply),
                (workers.KIND_TO_USER, b"nobody", 700, None, forward_payload(body(3), sender.surb)),
            ])
            h.provider.on_local(batch)
            await h.provider.writer.flush(10)
            session = FakeSession(b"alice", link)
            assert await h.provider.authenticate_client(session.peer_credentials) == (True, True)
            for seq in (0, 0, 1, 2, 3, 3):
                assert await h.provider.handle_client_command(session, wire.RetrieveMessage(seq))
            closes = await h.provider.handle_client_command(session, wire.RetrieveMessage(5))
            return h, session.sent, closes

    h, sent, closes = run(scenario())
    # Only the reliable, known-recipient message is acknowledged, after its commit.
    assert len(h.schedule.sent) == 1
    packet, delay, hop = h.schedule.sent[0]
    assert delay == 700 and hop == sender.node_id and sender.open(packet) == bytes(2048)
    assert h.provider.drops["unknown_recipient"] == 1
    kinds = [(type(c).__name__, c.sequence, getattr(c, "queue_size_hint", 0)) for c in sent]
    assert kinds == [("Message", 0, 1), ("Message", 0, 1), ("Message", 1, 1), ("MessageACK", 2, 0),
                     ("MessageEmpty", 3, 0), ("MessageEmpty", 3, 0)]
    assert sent[0].payload == body(1) and sent[2].payload == body(2)
    assert sent[3].surb_id == reply_id and sent[3].payload == reply
    assert closes is False  # out of sequence: the connection is closed


def test_authentication_rules(tmp_path):
    async def scenario():
        cfg = provider_config(tmp_path, extra_provider="")
        async with Harness(cfg) as h:
            link = await h.add_user("alice")
            auth = h.provider.authenticate_client
            results = [await auth(FakeSession(name, k).peer_credentials) for name, k in [
                (b"alice", link), (b"ALICE", link), (b"alice", key()), (b"bob", link),
                (b"\xff\xfe", link), (b"x" * 65, link), (b"al ice", link), (os.urandom(32), link)]]
            return results

    assert [valid for valid, _ in run(scenario())] == [True, True, False, False, False, False, False, False]


def test_trust_on_first_use_registers_clients_but_never_32_byte_peers(tmp_path):
    async def scenario():
        cfg = provider_config(tmp_path, extra_provider="TrustOnFirstUse = true")
        async with Harness(cfg) as h:
            auth = h.provider.authenticate_client
            first = await auth(FakeSession(b"carol", b"\x01" * 32).peer_credentials)
            again = await auth(FakeSession(b"carol", b"\x01" * 32).peer_credentials)
            other = await auth(FakeSession(b"carol", b"\x02" * 32).peer_credentials)
            peer = await auth(FakeSession(b"p" * 32, b"\x03" * 32).peer_credentials)
            return first, again, other, peer

    assert run(scenario()) == ((True, True), (True, True), (False, False), (False, False))


def test_send_packet_goes_through_the_rate_limiter_and_bad_sizes_close(tmp_path):
    async def scenario():
        async with Harness(provider_config(tmp_path)) as h:
            link = await h.add_user("alice")
            session = FakeSession(b"alice", link)
            packet = wire.SendPacket(bytes(PACKET_LENGTH))
            unlimited = [await h.provider.handle_client_command(session, packet) for _ in range(5)]
            h.provider.set_send_rate(60)                  # SEND_RATE / SEND_BURST (node commands)
            h.provider.set_send_burst(2)
            assert await h.provider.reauthenticate_client(session)
            limited = [await h.provider.handle_client_command(session, packet) for _ in range(5)]
            short = await h.provider.handle_client_command(session, wire.SendPacket(bytes(100)))
            return h, unlimited, limited, short

    h, unlimited, limited, short = run(scenario())
    assert unlimited == [True] * 5 and limited == [True] * 5  # drops keep the session
    assert len(h.submitted) == 5 + 1 and h.provider.drops["rate_limited"] == 4
    assert short is False


def test_get_consensus_answers_from_the_callable_and_mix_commands_close(tmp_path):
    async def scenario():
        consensus = lambda epoch: (wire.ConsensusStatus.OK, b"doc%d" % epoch) if epoch == 7 else \
            (wire.ConsensusStatus.GONE, b"")
        async with Harness(provider_config(tmp_path), consensus) as h:
            link = await h.add_user("alice")
            session = FakeSession(b"alice", link)
            await h.provider.handle_client_command(session, wire.GetConsensus(7))
            await h.provider.handle_client_command(session, wire.GetConsensus(8))
            unexpected = await h.provider.handle_client_command(session, wire.PostDescriptor(1, b""))
            return session.sent, unexpected

    sent, unexpected = run(scenario())
    assert [(c.error_code, c.payload) for c in sent] == [(0, b"doc7"), (2, b"")]
    assert unexpected is False


def test_stale_batches_and_malformed_payloads_are_dropped_without_ack(tmp_path):
    sender = SurbEndpoint()

    async def scenario():
        async with Harness(provider_config(tmp_path, debug="ProviderDelay = 100")) as h:
            await h.add_user("alice")
            stale = local_batch([(workers.KIND_TO_USER, b"alice", 5, None, forward_payload(body(1), sender.surb))],
                                dispatch_ns=time.monotonic_ns() - 1_000_000_000)
            bad = bytearray(forward_payload(body(1), sender.surb))
            bad[0] = 7
            h.provider.on_local(stale)
            h.provider.on_local(local_batch([
                (workers.KIND_TO_USER, b"alice", 5, None, bytes(bad)),
                (workers.KIND_TO_USER, b"bad name", 5, None, forward_payload(body(1), sender.surb)),
                (workers.KIND_TO_USER, b"\xff" * 8, 5, None, forward_payload(body(1), sender.surb))]))
            await h.provider.writer.flush(10)
            session = FakeSession(b"alice")
            await h.provider.handle_client_command(session, wire.RetrieveMessage(0))
            return h, session.sent

    h, sent = run(scenario())
    assert h.schedule.sent == [] and isinstance(sent[0], wire.MessageEmpty)
    assert h.provider.drops == {"provider_delay": 1, "malformed_payload": 1, "invalid_recipient": 2}


def test_recipient_delimiter_and_case_fix_up(tmp_path):
    async def scenario():
        cfg = provider_config(tmp_path, extra_provider='RecipientDelimiter = "+"')
        async with Harness(cfg) as h:
            await h.add_user("alice")
            h.provider.on_local(local_batch([
                (workers.KIND_UNRELIABLE_TO_USER, b"ALICE+news", 0, None, forward_payload(body(9), None))]))
            await h.provider.writer.flush(10)
            session = FakeSession(b"alice")
            await h.provider.handle_client_command(session, wire.RetrieveMessage(0))
            return session.sent

    assert run(scenario())[0].payload == body(9)


def test_kaetzchen_requests_reach_the_built_ins_and_answer_through_the_surb(tmp_path):
    client = SurbEndpoint()
    identity = key()

    async def scenario():
        async with Harness(provider_config(tmp_path, kaetzchen=KAETZCHEN)) as h:
            await h.add_user("alice")
            assert await h.provider.user_commands.handle(["SET_USER_IDENTITY", "alice", identity.hex()]) == \
                "250 Requested action ok, completed"
            assert h.provider.kaetzchen_for_pki() == {"loop": {"endpoint": "+loop"},
                                                      "keyserver": {"endpoint": "+keyserver"}}
            request = b'{"Version":0,"User":"alice"}'
            h.provider.on_local(local_batch([
                (workers.KIND_KAETZCHEN, b"+keyserver", 321, None, forward_payload(request, client.surb))]))
            await wait_for(lambda: h.schedule.sent, 10)
            return h

    h = run(scenario())
    packet, delay, _ = h.schedule.sent[0]
    import base64
    import json
    answer = client.open(packet)
    assert delay == 321 and answer[:2] == b"\x01\x00"
    assert json.loads(answer[2:].rstrip(b"\x00")) == {
        "PublicKey": base64.b64encode(identity).decode(), "StatusCode": 0, "User": "alice", "Version": 0}


def start_and_halt(cfg):
    """Start a provider (expected to fail) and always halt it."""
    async def scenario():
        provider = Provider(cfg, schedule=None, get_raw_consensus=None, submit_packet=None)
        try:
            await provider.start()
        finally:
            await provider.halt()

    run(scenario())


def test_unsupported_capability_and_a_bad_plugin_stop_the_start(tmp_path):
    bad_builtin = '[[Provider.Kaetzchen]]\nCapability = "panda"\nEndpoint = "+panda"\n'
    with pytest.raises(ProviderError, match="Unsupported capability 'panda'"):
        Provider(provider_config(tmp_path, kaetzchen=bad_builtin), schedule=None, get_raw_consensus=None,
                 submit_packet=None)
    bad_plugin = (f'[[Provider.CBORPluginKaetzchen]]\nCapability = "echo"\nEndpoint = "+echo"\n'
                  f'Command = "{tmp_path}/missing"\nMaxConcurrency = 1\n')
    with pytest.raises(ProviderError, match="failed to execute plugin"):
        start_and_halt(provider_config(tmp_path, kaetzchen=bad_plugin))


def test_postgres_schema_mismatch_stops_the_start(tmp_path):
    schema = PostgresSchema()
    try:
        schema.execute("UPDATE metadata SET schema_version = 3")
        with pytest.raises(ProviderError, match="schema version 3 is not supported"):
            start_and_halt(provider_config(tmp_path, userdb="sql", spool="sql", dsn=schema.dsn))
    finally:
        schema.drop()


def test_full_sql_spool_with_an_embedded_userdb_is_refused(tmp_path):
    schema = PostgresSchema()
    try:
        with pytest.raises(ProviderError, match="spool-only"):
            start_and_halt(provider_config(tmp_path, spool="sql", dsn=schema.dsn))
    finally:
        schema.drop()


def test_spools_of_removed_users_are_vacuumed_at_start(tmp_path):
    async def first():
        async with Harness(provider_config(tmp_path)) as h:
            await h.add_user("alice")
            await h.add_user("bob")
            h.provider.on_local(local_batch([
                (workers.KIND_UNRELIABLE_TO_USER, b"alice", 0, None, forward_payload(body(1), None)),
                (workers.KIND_UNRELIABLE_TO_USER, b"bob", 0, None, forward_payload(body(2), None))]))
            await h.provider.writer.flush(10)
            # Remove bob behind the provider's back (as an offline userdb edit would).
            await h.provider.storage.run(h.provider.storage.userdb.remove, b"bob")

    async def second():
        async with Harness(provider_config(tmp_path)) as h:
            return sorted(await h.provider.storage.run(h.provider.storage.spool.spooled_users))

    run(first())
    assert run(second()) == [b"alice"]


def test_ephemeral_clients_are_forgotten_unless_connected(tmp_path):
    async def scenario(extra, where):
        where.mkdir()
        async with Harness(provider_config(where, extra_provider=extra)) as h:
            links = {name: await h.add_user(name) for name in ("alice", "bob", "carol")}
            h.provider.on_local(local_batch([
                (workers.KIND_UNRELIABLE_TO_USER, name.encode(), 0, None, forward_payload(body(1), None))
                for name in ("alice", "bob")]))
            await h.provider.writer.flush(10)
            online = FakeSession(b"alice", links["alice"])
            await h.provider.handle_client_command(online, wire.RetrieveMessage(0))
            removed = await h.provider.vacuum_expired()
            exists = h.provider.storage.userdb.exists
            return removed, [exists(n) for n in (b"alice", b"bob", b"carol")]

    # bob has a spool and is offline: forgotten; alice is connected; carol has no spool.
    assert run(scenario("EnableEphemeralClients = true", tmp_path / "on")) == (1, [True, False, True])
    assert run(scenario("", tmp_path / "off")) == (0, [True, True, True])


def test_a_spool_backlog_drops_new_rows_without_ack(tmp_path, monkeypatch):
    from katzenpost.provider import delivery

    monkeypatch.setattr(delivery, "MAX_PENDING", 3)
    sender = SurbEndpoint()

    async def scenario():
        async with Harness(provider_config(tmp_path)) as h:
            await h.add_user("alice")
            rows = [(workers.KIND_TO_USER, b"alice", 5, None, forward_payload(body(i), sender.surb))
                    for i in range(5)]
            h.provider.on_local(local_batch(rows))  # one on_local call: the writer has not run yet
            await h.provider.writer.flush(10)
            return h

    h = run(scenario())
    assert h.provider.drops["spool_backlog"] == 2
    assert h.provider.writer.stored == 3 and len(h.schedule.sent) == 3
