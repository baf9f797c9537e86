"""The authority over real TCP on 127.0.0.1 (in-process): node clients post and fetch through the
wire protocol, every refusal path, and hostile peers that must not hurt the daemon."""
import asyncio
import os
import time

import pytest

from _pki_fixtures import AUTHORITY_SEED, make_descriptor, public_for, seed_for
from katzenpost.pki import authority_config as ac
from katzenpost.pki.authority import AuthorityServer
from katzenpost.pki.authority_state import AuthorityState
from katzenpost.pki.authority_store import AuthorityStore
from katzenpost.pki.client import (
    AuthorityClient,
    AuthorityUnreachableError,
    DocumentGoneError,
    DocumentNotFoundError,
    PostConflictError,
    PostRejectedError,
)
from katzenpost.pki.epochtime import EpochClock
from katzenpost.pki.keyconv import x25519_private_from_ed25519_seed
from katzenpost.wire import session as wire_session
from katzenpost.wire.commands import GetConsensus, PostDescriptor
from katzenpost.wire.errors import WireError

MIXES = ["mix0", "mix1", "mix2"]
PROVIDERS = ["provider1", "provider2"]
AUTHORITY = public_for(AUTHORITY_SEED)
CLOCK = EpochClock()  # 20-minute epochs: no rollover inside a test unless we are very unlucky


def config(data_dir):
    text = (f'[Authority]\nAddresses = ["127.0.0.1:29999"]\nDataDir = "{data_dir}"\n'
            "[Debug]\nLayers = 3\nMinNodesPerLayer = 1\n")
    for name in MIXES:
        text += f'[[Mixes]]\nIdentityKey = "{public_for(seed_for(name)).hex()}"\n'
    for name in PROVIDERS:
        text += (f'[[Providers]]\nIdentifier = "{name}"\n'
                 f'IdentityKey = "{public_for(seed_for(name)).hex()}"\n')
    return ac.parse(text)


class Running:
    def __init__(self, tmp_path, handshake_timeout=30.0, max_connections=256):
        self.data_dir = str(tmp_path)
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections

    async def __aenter__(self):
        cfg = config(self.data_dir)
        self.store = AuthorityStore.open_in(self.data_dir)
        self.state = AuthorityState(cfg, AUTHORITY_SEED, AUTHORITY, self.store, CLOCK)
        self.state.restore(time.time())
        self.server = AuthorityServer(self.state, AUTHORITY_SEED, AUTHORITY,
                                      x25519_private_from_ed25519_seed(AUTHORITY_SEED),
                                      handshake_timeout=self.handshake_timeout,
                                      max_connections=self.max_connections)
        [(self.host, self.port)] = await self.server.start([("127.0.0.1", 0)])
        return self

    async def __aexit__(self, *exc):
        await self.server.stop()
        self.store.close()

    def client(self, identity=AUTHORITY, **kwargs):
        return AuthorityClient(self.host, self.port, identity, clock=CLOCK,
                               connect_timeout=5, handshake_timeout=5, response_timeout=5, **kwargs)


async def post_all(auth, epoch, names=MIXES + PROVIDERS):
    client = auth.client()
    for name in names:
        desc = make_descriptor(name, epoch, provider=name.startswith("provider"))
        await client.post_descriptor(epoch, seed_for(name), desc)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_nodes_post_and_everyone_fetches_the_signed_document(tmp_path):
    async def scenario():
        async with Running(tmp_path) as auth:
            epoch = CLOCK.current()
            with pytest.raises(DocumentNotFoundError):
                await auth.client().get_document(epoch)
            await post_all(auth, epoch)
            for _ in range(50):  # the upload wakes the worker, which bootstraps the document
                if epoch in auth.state.documents:
                    break
                await asyncio.sleep(0.05)
            doc = await auth.client().get_document(epoch)
            assert doc.epoch == epoch and doc.genesis_epoch == epoch
            assert sorted(d.name for layer in doc.topology for d in layer) == MIXES
            assert sorted(d.name for d in doc.providers) == PROVIDERS
            assert all(len(layer) == 1 for layer in doc.topology)
            with pytest.raises(DocumentGoneError):
                await auth.client().get_document(epoch - 1)
    run(scenario())


def test_second_post_for_the_same_epoch_conflicts(tmp_path):
    async def scenario():
        async with Running(tmp_path) as auth:
            epoch = CLOCK.current()
            desc = make_descriptor("mix0", epoch)
            await auth.client().post_descriptor(epoch, seed_for("mix0"), desc)
            with pytest.raises(PostConflictError):
                await auth.client().post_descriptor(epoch, seed_for("mix0"), desc, time.time() + 1)
    run(scenario())


def test_invalid_epoch_is_rejected_as_invalid(tmp_path):
    async def scenario():
        async with Running(tmp_path) as auth:
            epoch = CLOCK.current() + 5
            desc = make_descriptor("mix0", epoch)
            with pytest.raises(PostRejectedError, match="Invalid"):
                await auth.client().post_descriptor(epoch, seed_for("mix0"), desc)
    run(scenario())


def test_provider_with_the_wrong_name_is_forbidden(tmp_path):
    async def scenario():
        async with Running(tmp_path) as auth:
            epoch = CLOCK.current()
            desc = make_descriptor("provider1", epoch, provider=True, name="provider9")
            with pytest.raises(PostRejectedError, match="Forbidden"):
                await auth.client().post_descriptor(epoch, seed_for("provider1"), desc)
    run(scenario())


def test_node_that_is_not_whitelisted_cannot_even_connect(tmp_path):
    async def scenario():
        async with Running(tmp_path) as auth:
            epoch = CLOCK.current()
            desc = make_descriptor("stranger", epoch)
            with pytest.raises(AuthorityUnreachableError):
                await auth.client().post_descriptor(epoch, seed_for("stranger"), desc)
            assert auth.state.descriptors == {}
    run(scenario())


def test_client_refuses_an_authority_with_another_identity(tmp_path):
    async def scenario():
        async with Running(tmp_path) as auth:
            with pytest.raises(AuthorityUnreachableError):
                await auth.client(identity=public_for(seed_for("impostor"))).get_document(1)
    run(scenario())


def test_anonymous_post_gets_no_reply(tmp_path):
    async def scenario():
        async with Running(tmp_path) as auth:
            session = await wire_session.connect(
                auth.host, auth.port, link_key=os.urandom(32), additional_data=b"",
                authenticator=auth.client()._authenticator, handshake_timeout=5)
            await session.send_command(PostDescriptor(epoch=CLOCK.current(), payload=b"x"))
            with pytest.raises(WireError):
                await session.recv_command(timeout=5)
            assert auth.state.descriptors == {}
    run(scenario())


def test_node_key_that_is_not_toecdh_of_its_identity_is_refused(tmp_path):
    async def scenario():
        async with Running(tmp_path) as auth:
            with pytest.raises(WireError):
                await wire_session.connect(
                    auth.host, auth.port, link_key=os.urandom(32),
                    additional_data=public_for(seed_for("mix0")),
                    authenticator=auth.client()._authenticator, handshake_timeout=5)
    run(scenario())


def test_garbage_and_half_open_connections_do_not_hurt_the_daemon(tmp_path):
    async def scenario():
        async with Running(tmp_path, handshake_timeout=1.0) as auth:
            idle = [await asyncio.open_connection(auth.host, auth.port) for _ in range(5)]
            async def garbage(size):
                reader, writer = await asyncio.open_connection(auth.host, auth.port)
                writer.write(os.urandom(size))
                await writer.drain()
                try:  # closed by the daemon: EOF, or a reset if our bytes were left unread
                    closed = await asyncio.wait_for(reader.read(), 5) == b""
                except ConnectionResetError:
                    closed = True
                writer.close()
                return closed

            assert all(await asyncio.gather(*(garbage(n) for n in (1, 100, 5000, 70000))))
            # A peer that completes the handshake but never sends its command.
            silent = await wire_session.connect(
                auth.host, auth.port, link_key=os.urandom(32), additional_data=b"",
                authenticator=auth.client()._authenticator, handshake_timeout=5)
            epoch = CLOCK.current()
            with pytest.raises(DocumentNotFoundError):
                await auth.client().get_document(epoch)  # served while the others hang
            for reader, _ in idle:  # half-open handshakes are cut at the deadline
                assert await asyncio.wait_for(reader.read(), 5) == b""
            with pytest.raises(WireError):
                await silent.recv_command(timeout=5)
            for _, writer in idle:
                writer.close()
            await silent.close()
    run(scenario())


def test_connection_limit_refuses_the_excess_and_recovers(tmp_path):
    async def scenario():
        async with Running(tmp_path, handshake_timeout=2.0, max_connections=3) as auth:
            hogs = [await asyncio.open_connection(auth.host, auth.port) for _ in range(3)]
            await asyncio.sleep(0.1)
            with pytest.raises(AuthorityUnreachableError):
                await auth.client().get_document(CLOCK.current())
            for _, writer in hogs:
                writer.close()
            await asyncio.sleep(0.2)
            with pytest.raises(DocumentNotFoundError):
                await auth.client().get_document(CLOCK.current())
    run(scenario())


def test_get_consensus_for_a_far_epoch_is_not_found(tmp_path):
    async def scenario():
        async with Running(tmp_path) as auth:
            session = await wire_session.connect(
                auth.host, auth.port, link_key=os.urandom(32), additional_data=b"",
                authenticator=auth.client()._authenticator, handshake_timeout=5)
            await session.send_command(GetConsensus(epoch=2**64 - 1))
            reply = await session.recv_command(timeout=5)
            assert reply.error_code == 1 and reply.payload == b""
            await session.close()
    run(scenario())
