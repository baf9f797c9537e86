"""The client's provider session against a provider played by the test over real wire sessions:
handshake as a client, the document verified against the authority key, the provider's link key
checked against it, SURB-ACKs and service replies matched through the real Sphinx unwrap,
the retrieval sequence rule, lost replies, a dropped connection, bad input."""
import asyncio
import random

import pytest

from _pki_fixtures import AUTHORITY_SEED, CLOCK, link_private_for, make_document, public_for, seed_for
from _pki_fixtures import signed_document_bytes, wait_until
from client_support import walk
from katzenpost import keys, sphinx
from katzenpost.client.session import Client, ClientError, ClientSettings, ReplyLost, Send
from katzenpost.sphinx import geometry
from katzenpost.wire import WireError, accept
from katzenpost.wire import commands as wire

USER = "alice"
PROVIDER = "provider1"
SURB_AT = slice(2, 2 + geometry.SURB_LENGTH)


class FakeProvider:
    """One listener answering a client as a provider does: GetConsensus from `raw_doc`,
    RetrieveMessage with the sequence rule over `spool`, SendPacket recorded."""

    def __init__(self, raw_doc: bytes, *, link_private=None, consensus_status=0):
        self.raw_doc = raw_doc
        self.link_private = link_private or link_private_for(PROVIDER)
        self.consensus_status = consensus_status
        self.spool: list[wire.Command] = []       # Message / MessageACK templates (seq filled in)
        self.packets: list[bytes] = []
        self.deleted = 0
        self.requests: list[wire.Command] = []
        self.sessions = []
        self.server = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def close(self):
        for session in self.sessions:
            await session.close()
        self.server.close()
        await self.server.wait_closed()

    async def drop_connections(self):
        for session in self.sessions:
            await session.close("test drops the client")

    async def _serve(self, reader, writer):
        try:
            session = await accept(reader, writer, link_key=self.link_private,
                                   additional_data=public_for(seed_for(PROVIDER)),
                                   authenticator=lambda c: c.additional_data == USER.encode(),
                                   handshake_timeout=5)
        except WireError:
            return
        self.sessions.append(session)
        retr = 0
        try:
            while True:
                cmd = await session.recv_command()
                self.requests.append(cmd)
                if isinstance(cmd, wire.GetConsensus):
                    ok = self.consensus_status == 0
                    await session.send_command(wire.Consensus(self.consensus_status, self.raw_doc if ok else b""))
                elif isinstance(cmd, wire.SendPacket):
                    self.packets.append(cmd.sphinx_packet)
                elif isinstance(cmd, wire.RetrieveMessage):
                    if cmd.sequence == (retr + 1) & 0xFFFFFFFF:
                        retr = cmd.sequence
                        if self.spool:
                            self.spool.pop(0)
                            self.deleted += 1
                    elif cmd.sequence != retr:
                        await session.close("out of sequence")
                        return
                    await session.send_command(self._head(cmd.sequence))
        except WireError:
            return

    def _head(self, seq):
        if not self.spool:
            return wire.MessageEmpty(seq)
        head, hint = self.spool[0], min(len(self.spool) - 1, 255)
        if isinstance(head, wire.MessageACK):
            return wire.MessageACK(hint, seq, head.surb_id, head.payload)
        return wire.Message(hint, seq, head.payload)

    def answer(self, pending, response: bytes) -> None:
        """What the far provider and the mixes would do: unwrap the forward packet, reply
        through its SURB, unwrap the reply to its last hop and spool it for the client."""
        terminal = walk(pending.outgoing.packet, pending.outgoing.forward)
        reply_packet, _ = sphinx.new_packet_from_surb(terminal.payload[SURB_AT], response)
        back = walk(reply_packet, pending.outgoing.reply)
        self.spool.append(wire.MessageACK(0, 0, pending.surb_id, back.payload))


def settings(port, **overrides) -> ClientSettings:
    values = dict(user=USER, link_key=keys.LinkKey.generate(), provider=PROVIDER,
                  provider_key=public_for(seed_for(PROVIDER)), address=("127.0.0.1", port),
                  authority_key=public_for(AUTHORITY_SEED), poll_interval=0.05, reply_slack=30.0, timeout=5.0)
    values.update(overrides)
    return ClientSettings(**values)


def document_bytes(**overrides) -> bytes:
    now = CLOCK.unix_now()
    return signed_document_bytes(make_document(CLOCK.current(), now, **overrides), now)


async def with_provider(test, raw_doc=None, client_overrides=None, start=True, **provider_kwargs):
    provider = FakeProvider(raw_doc or document_bytes(), **provider_kwargs)
    port = await provider.start()
    client = Client(settings(port, **(client_overrides or {})), rng=random.Random(7))
    try:
        if start:
            await client.start()
        await test(client, provider)
    finally:
        await client.close()
        await provider.close()


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 30))


def test_message_with_surb_ack_round_trip():
    async def test(client, provider):
        doc = await client.document()
        assert doc.epoch == CLOCK.current() and len(doc.topology) == 3
        pending = await client.send_message("bob", "provider2", b"hello bob")
        await wait_until(lambda: provider.packets, "the packet at the provider")
        assert provider.packets[0] == pending.outgoing.packet
        terminal = walk(pending.outgoing.packet, pending.outgoing.forward)
        assert terminal.payload[2 + geometry.SURB_LENGTH:].rstrip(b"\x00") == b"hello bob"
        provider.answer(pending, bytes(geometry.FORWARD_PAYLOAD_LENGTH))   # a SURB-ACK: zeros
        reply = await asyncio.wait_for(pending.result, 5)
        assert reply.plaintext == bytes(geometry.FORWARD_PAYLOAD_LENGTH)
        assert client.pending_count == 0
        # The ACK was deleted by the next RetrieveMessage (sequence 1), not before.
        await wait_until(lambda: provider.deleted == 1, "the ACK's deletion")
    run(with_provider(test))


def test_service_request_and_reply_by_capability_or_endpoint():
    async def test(client, provider):
        for service in ("loop", "+loop"):
            pending = await client.request(service, "provider2", b"ping")
            terminal = walk(pending.outgoing.packet, pending.outgoing.forward)
            assert terminal.commands[-1].id.rstrip(b"\x00") == b"+loop"
            provider.answer(pending, b"\x01\x00pong".ljust(geometry.FORWARD_PAYLOAD_LENGTH, b"\x00"))
            reply = await asyncio.wait_for(pending.result, 5)
            assert reply.body.rstrip(b"\x00") == b"pong"
        with pytest.raises(ClientError, match="offers no service 'echo' \\(offered: loop\\)"):
            await client.request("echo", "provider2", b"")
        with pytest.raises(ClientError, match="provider 'nowhere' is not in the document"):
            await client.send_message("bob", "nowhere", b"")
        with pytest.raises(ClientError, match="at most 1490"):
            await client.send_message("bob", None, b"x" * 1491)
        with pytest.raises(ClientError, match="recipient must be 1..64 bytes"):
            await client.send_message("b" * 65, None, b"")
    run(with_provider(test))


def test_a_batch_built_ahead_is_sent_and_answered_packet_by_packet():
    async def test(client, provider):
        start = CLOCK.unix_now() + 1.0
        built = await client.build([Send(recipient="bob", provider="provider2", body=b"m0", start=start),
                                    *(Send(service="loop", provider="provider2", body=b"l%d" % i, start=start + i)
                                      for i in range(1, 10))])
        assert len(built) == 10 and not provider.packets and client.pending_count == 0
        assert built[3].surb.sent_at == start + 3 and built[0].surb.kind == "ack" and built[1].surb.kind == "reply"
        pendings = [await client.send_built(out) for out in built]
        await wait_until(lambda: len(provider.packets) == 10, "the batch at the provider")
        assert provider.packets == [out.packet for out in built]
        for i, pending in enumerate(pendings):
            terminal = walk(pending.outgoing.packet, pending.outgoing.forward)
            assert terminal.payload[2 + geometry.SURB_LENGTH:].rstrip(b"\x00") == (b"m0" if i == 0 else b"l%d" % i)
            provider.answer(pending, b"\x01\x00" + bytes([i]) * 2046)
        replies = await asyncio.wait_for(asyncio.gather(*(p.result for p in pendings)), 5)
        assert [r.body[:1] for r in replies] == [bytes([i]) for i in range(10)]
        with pytest.raises(ClientError, match="offers no service 'echo'"):
            await client.build([Send(service="loop", provider="provider2"), Send(service="echo", provider="provider2")])
        assert await client.build([]) == []
    run(with_provider(test))


def test_retrieval_delivers_messages_in_order_and_deletes_only_after_the_next_request():
    async def test(client, provider):
        await client.start(retrieve=False)      # this test drives retrieval itself
        for text in (b"one", b"two", b"three"):
            provider.spool.append(wire.Message(0, 0, text.ljust(geometry.USER_FORWARD_PAYLOAD_LENGTH, b"\x00")))
        assert await client.retrieve() == 3
        got = [client.inbox.get_nowait().text for _ in range(3)]
        assert got == [b"one", b"two", b"three"] and provider.deleted == 3 and not provider.spool
        sequences = [c.sequence for c in provider.requests if isinstance(c, wire.RetrieveMessage)]
        assert sequences == [0, 1, 2, 3]          # peek, then each request deletes the last one
        assert await client.retrieve() == 0       # the same sequence again: a peek, no deletion
        assert provider.deleted == 3
    run(with_provider(test, start=False))


def test_a_reply_that_never_comes_is_lost_after_its_slack():
    fast = document_bytes(mu=1.0, mu_max_delay=2)   # ETA a few ms away
    async def test(client, provider):
        pending = await client.send_message("bob", "provider2", b"x")
        with pytest.raises(ReplyLost):
            await asyncio.wait_for(pending.result, 5)
        assert client.pending_count == 0
    run(with_provider(test, raw_doc=fast, client_overrides={"reply_slack": 0.1}))


def test_dropped_connection_is_redialled_and_pending_replies_survive():
    async def test(client, provider):
        pending = await client.send_message("bob", "provider2", b"x")
        await wait_until(lambda: provider.packets, "the packet")
        await provider.drop_connections()
        provider.answer(pending, bytes(geometry.FORWARD_PAYLOAD_LENGTH))
        await asyncio.wait_for(pending.result, 10)
        assert client.reconnects >= 1 and len(provider.sessions) >= 2
    run(with_provider(test))


def test_document_checks():
    async def wrong_authority(client, provider):
        with pytest.raises(ClientError, match="rejected"):
            await client.start()
    run(with_provider(wrong_authority, start=False,
                      client_overrides={"authority_key": public_for(seed_for("someone else"))}))

    async def wrong_link(client, provider):
        with pytest.raises(ClientError, match="presented a link key the document does not list"):
            await client.start()
        assert not client.connected
    run(with_provider(wrong_link, start=False, link_private=link_private_for("impostor")))

    async def not_found(client, provider):
        with pytest.raises(ClientError, match="not found yet"):
            await client.start()
    run(with_provider(not_found, start=False, consensus_status=1))

    async def wrong_provider_key(client, provider):
        with pytest.raises(ClientError, match="cannot connect"):
            await client.start()
    run(with_provider(wrong_provider_key, start=False,
                      client_overrides={"provider_key": public_for(seed_for("provider2"))}))


def test_unreachable_provider_and_bad_settings():
    async def go():
        client = Client(settings(1))
        with pytest.raises(ClientError, match="cannot connect to provider provider1 at 127.0.0.1:1"):
            await client.start()
        await client.close()
    run(go())
    with pytest.raises(ClientError, match="user name"):
        settings(1, user="")
    with pytest.raises(ClientError, match="provider_key must be 32 bytes"):
        settings(1, provider_key=b"short")
    with pytest.raises(ClientError, match="poll_interval"):
        settings(1, poll_interval=0)
