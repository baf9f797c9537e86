"""Incoming sessions: the command loop (SendPacket batched into the pipeline, NoOp, Disconnect,
anything else), commands ignored while the peer may not send, CloseOldConns, re-authentication,
the connection and handshake bounds, the provider's client seam, and a busy port."""
import asyncio
import os
import socket
import time

import pytest

from node_support import free_port
from katzenpost import keys
from katzenpost.sphinx.geometry import PACKET_LENGTH
from katzenpost.wire import ConnectionClosed, WireError, connect
from katzenpost.wire.commands import Disconnect, NoOp, RetrieveMessage, SendPacket
from katzenpost.server.incoming import ListenerError, Listeners, ListenerSettings

NODE = keys.IdentityKey.generate()
NODE_LINK = keys.LinkKey.generate()
PEER = keys.IdentityKey.generate()
PEER_LINK = keys.LinkKey.generate()


class FakePKI:
    def __init__(self):
        self.verdict = (True, True)
        self.asked = []

    def authenticate_connection(self, creds, is_outgoing):
        assert not is_outgoing
        self.asked.append(creds)
        return self.verdict if creds.additional_data == PEER.public else (False, False)


class FakePipeline:
    def __init__(self):
        self.submitted = []
        self.reads = 0

    def submit(self, packet, recv_at_ns, from_client=False, *, caller_flushes=False):
        assert caller_flushes and len(packet) == PACKET_LENGTH
        self.submitted.append((bytes(packet[:8]), from_client))

    def end_of_read(self):
        self.reads += 1


def packet(i):
    return i.to_bytes(8, "big") + os.urandom(PACKET_LENGTH - 8)


async def until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def started(settings=None, **kwargs):
    port = free_port()
    listeners = Listeners([f"127.0.0.1:{port}"], link_key=NODE_LINK.private, identity_public=NODE.public,
                          pki=kwargs.pop("pki", FakePKI()), pipeline=kwargs.pop("pipeline", FakePipeline()),
                          settings=settings or ListenerSettings(handshake_timeout=2, reauth_interval=60),
                          **kwargs)
    await listeners.start()
    return listeners, port


async def dial(port, identity=PEER, link=PEER_LINK):
    return await connect("127.0.0.1", port, link_key=link.private, additional_data=identity.public,
                         authenticator=lambda c: c.additional_data == NODE.public, handshake_timeout=3)


async def closed(session, timeout=5.0):
    try:
        await session.recv_command(timeout=timeout)
    except ConnectionClosed:
        return True
    return False


def test_send_packets_reach_the_pipeline_one_flush_per_read_and_noop_is_ignored():
    async def scenario():
        listeners, port = await started()
        session = await dial(port)
        for i in range(20):
            await session.send_command(NoOp() if i % 5 == 0 else SendPacket(packet(i)))
        pipeline = listeners.pipeline
        await until(lambda: len(pipeline.submitted) == 16)
        assert [int.from_bytes(p, "big") for p, _ in pipeline.submitted] == [i for i in range(20) if i % 5]
        assert all(not from_client for _, from_client in pipeline.submitted)
        assert 1 <= pipeline.reads <= 16
        await session.close()
        await listeners.stop()
    asyncio.run(scenario())


@pytest.mark.parametrize("command", [SendPacket(b"short"), RetrieveMessage(1), Disconnect()])
def test_bad_length_unexpected_commands_and_disconnect_close_the_session(command):
    async def scenario():
        listeners, port = await started()
        session = await dial(port)
        await session.send_command(command)
        assert await closed(session)
        await until(lambda: not listeners.connections)
        await listeners.stop()
    asyncio.run(scenario())


def test_commands_are_ignored_while_the_peer_may_not_send():
    async def scenario():
        pki = FakePKI()
        pki.verdict = (True, False)
        listeners, port = await started(pki=pki)
        session = await dial(port)
        await session.send_command(SendPacket(packet(1)))
        await session.send_command(RetrieveMessage(1))          # not even this closes it
        await asyncio.sleep(0.2)
        assert listeners.pipeline.submitted == [] and not session.closed
        pki.verdict = (True, True)                               # the next document lets it send
        await listeners.reauthenticate_all()
        await session.send_command(SendPacket(packet(2)))
        await until(lambda: listeners.pipeline.submitted)
        pki.verdict = (False, False)                             # delisted: disconnected
        await listeners.reauthenticate_all()
        assert await closed(session)
        await listeners.stop()
    asyncio.run(scenario())


def test_unknown_peers_fail_the_handshake():
    async def scenario():
        listeners, port = await started()
        with pytest.raises(WireError):
            await dial(port, identity=keys.IdentityKey.generate())
        await listeners.stop()
    asyncio.run(scenario())


def test_the_newest_connection_of_a_peer_wins():
    async def scenario():
        listeners, port = await started()
        old = await dial(port)
        await until(lambda: len(listeners.connections) == 1)
        new = await dial(port)
        assert await closed(old)
        await new.send_command(SendPacket(packet(7)))
        await until(lambda: listeners.pipeline.submitted)
        assert len(listeners.connections) == 1
        await listeners.stop()
    asyncio.run(scenario())


def test_half_open_handshakes_and_connections_are_bounded():
    async def scenario():
        settings = ListenerSettings(handshake_timeout=1.5, reauth_interval=60, max_connections=2,
                                    max_handshakes=1)
        listeners, port = await started(settings)
        stalled = socket.create_connection(("127.0.0.1", port))           # never finishes
        await until(lambda: listeners.handshaking == 1)
        with pytest.raises(WireError):
            await dial(port)                                             # refused at once
        assert listeners.refused == 1
        await until(lambda: listeners.handshaking == 0, timeout=5)       # the stalled one timed out
        stalled.close()
        first = await dial(port)
        other = keys.IdentityKey.generate()
        listeners.pki.authenticate_connection = lambda creds, out: (True, True)
        second = await dial(port, identity=other)
        await until(lambda: len(listeners.connections) == 2)
        with pytest.raises(WireError):
            await dial(port, identity=keys.IdentityKey.generate())       # over MaxIncomingConnections
        assert listeners.refused == 2
        for session in (first, second):
            await session.close()
        await listeners.stop()
    asyncio.run(scenario())


class FakeClients:
    """A provider's client service: one known client, a send gate admitting `budget` packets."""

    def __init__(self, client_id: bytes, budget: int = 1):
        self.client_id, self.budget = client_id, budget
        self.handled, self.closed, self.reauthenticated = [], [], []
        self.valid = True

    async def authenticate_client(self, creds):
        ok = self.valid and creds.additional_data == self.client_id
        return ok, ok

    async def reauthenticate_client(self, session):
        self.reauthenticated.append(session)
        return self.valid

    async def handle_client_command(self, session, command):
        self.handled.append(command)
        return command.sequence != 99           # False: the provider wants the session closed

    def client_send_gate(self, session):
        def admit():
            self.budget -= 1
            return self.budget >= 0
        return admit

    def client_closed(self, session):
        self.closed.append(session)


def test_clients_go_through_the_provider_seam():
    client = keys.IdentityKey.generate()
    clients = FakeClients(client.public, budget=1)

    async def scenario():
        listeners, port = await started(clients=clients)
        session = await dial(port, identity=client)
        await session.send_command(SendPacket(packet(3)))
        await session.send_command(SendPacket(packet(4)))                 # over the budget
        await session.send_command(RetrieveMessage(5))
        await until(lambda: clients.handled and listeners.pipeline.submitted)
        assert [p[1] for p in listeners.pipeline.submitted] == [True]     # one, from_client
        assert clients.handled == [RetrieveMessage(5)]
        await listeners.reauthenticate_all()                               # the client path
        assert len(clients.reauthenticated) == 1
        mix = await dial(port)                                           # a mix still uses the PKI
        await mix.send_command(RetrieveMessage(1))                       # which a mix may not send
        assert await closed(mix)
        await session.send_command(RetrieveMessage(99))                   # the provider refuses
        assert await closed(session)
        await until(lambda: clients.closed)
        await listeners.stop()
    asyncio.run(scenario())


def test_a_client_that_is_no_longer_valid_is_disconnected():
    client = keys.IdentityKey.generate()
    clients = FakeClients(client.public)

    async def scenario():
        listeners, port = await started(clients=clients)
        session = await dial(port, identity=client)
        await until(lambda: listeners.connections)
        clients.valid = False
        await listeners.reauthenticate_all()
        assert await closed(session)
        await listeners.stop()
    asyncio.run(scenario())


def test_a_busy_port_is_a_clear_error():
    async def scenario():
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            listeners = Listeners([f"127.0.0.1:{port}"], link_key=NODE_LINK.private,
                                  identity_public=NODE.public, pki=FakePKI(), pipeline=FakePipeline(),
                                  settings=ListenerSettings())
            with pytest.raises(ListenerError, match=f"cannot listen on 127.0.0.1:{port}"):
                await listeners.start()
    asyncio.run(scenario())
