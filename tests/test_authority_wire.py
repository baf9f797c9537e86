"""The authority over real TCP on 127.0.0.1 (in-process): node clients post and fetch through the
wire protocol, every refusal path, and hostile peers that must not hurt the daemon."""
import asyncio
import os
import time

import pytest

from _pki_fixtures import (
    AUTHORITY_SEED,
    MIXES,
    PROVIDERS,
    authority_config_text,
    make_descriptor,
    public_for,
    seed_for,
    wait_until,
)
from katzenpost.authority import config as ac
from katzenpost.authority.daemon import AuthorityServer
from katzenpost.authority.state import AuthorityState
from katzenpost.authority.store import AuthorityStore
from katzenpost.pki.client import (
    AuthorityClient,
    AuthorityUnreachableError,
    DocumentGoneError,
    DocumentNotFoundError,
    PostConflictError,
    PostRejectedError,
)
from katzenpost.pki.descriptor import sign_descriptor
from katzenpost.pki.epochtime import EpochClock
from katzenpost.pki.keyconv import x25519_private_from_ed25519_seed
from katzenpost.wire import session as wire_session
from katzenpost.wire.commands import GetConsensus, PostDescriptor
from katzenpost.wire.errors import WireError

AUTHORITY = public_for(AUTHORITY_SEED)
CLOCK = EpochClock()  # 20-minute epochs: no rollover inside a test unless we are very unlucky


def config(data_dir):
    return ac.parse(authority_config_text(data_dir))


class Running:
    def __init__(self, tmp_path, handshake_timeout=30.0, max_connections=256, clock=CLOCK):
        self.data_dir = str(tmp_path)
        self.clock = clock
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections

    async def __aenter__(self):
        cfg = config(self.data_dir)
        self.store = AuthorityStore.open_in(self.data_dir)
        self.state = AuthorityState(cfg, AUTHORITY_SEED, AUTHORITY, self.store, self.clock)
        self.state.restore(self.clock.unix_now())
        self.server = AuthorityServer(self.state, AUTHORITY_SEED, AUTHORITY,
                                      x25519_private_from_ed25519_seed(AUTHORITY_SEED),
                                      handshake_timeout=self.handshake_timeout,
                                      max_connections=self.max_connections)
        [(self.host, self.port)] = await self.server.start([("127.0.0.1", 0)])
        return self

    async def __aexit__(self, *exc):
        await self.server.stop()
        self.store.close()

    async def connect(self, additional_data):
        """A raw wire session to the authority with a random link key (not ToECDH of anything)."""
        return await wire_session.connect(
            self.host, self.port, link_key=os.urandom(32), additional_data=additional_data,
            authenticator=self.client()._authenticator, handshake_timeout=5)

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
            # The upload wakes the worker, which bootstraps the document.
            await wait_until(lambda: epoch in auth.state.documents)
            doc = await auth.client().get_document(epoch)
            assert doc.epoch == epoch and doc.genesis_epoch == epoch
            assert sorted(d.name for layer in doc.topology for d in layer) == list(MIXES)
            assert sorted(d.name for d in doc.providers) == list(PROVIDERS)
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


@pytest.mark.parametrize("node,epoch_offset,overrides,status", [
    ("mix0", 5, {}, "Invalid"),  # not now-1, now or now+1
    ("provider1", 0, {"provider": True, "name": "provider9"}, "Forbidden"),  # not its Identifier
], ids=["epoch-out-of-range-is-invalid", "provider-with-another-name-is-forbidden"])
def test_rejected_post_names_the_status(tmp_path, node, epoch_offset, overrides, status):
    async def scenario():
        async with Running(tmp_path) as auth:
            epoch = CLOCK.current() + epoch_offset
            desc = make_descriptor(node, epoch, **overrides)
            with pytest.raises(PostRejectedError, match=f"rejected by authority: {status}"):
                await auth.client().post_descriptor(epoch, seed_for(node), desc)
            assert auth.state.descriptors == {}
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
            session = await auth.connect(additional_data=b"")
            await session.send_command(PostDescriptor(epoch=CLOCK.current(), payload=b"x"))
            with pytest.raises(WireError):
                await session.recv_command(timeout=5)
            assert auth.state.descriptors == {}
    run(scenario())


def test_node_key_that_is_not_toecdh_of_its_identity_is_refused(tmp_path):
    async def scenario():
        async with Running(tmp_path) as auth:
            with pytest.raises(WireError):
                await auth.connect(additional_data=public_for(seed_for("mix0")))
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
            silent = await auth.connect(additional_data=b"")
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
            await wait_until(lambda: auth.server.active_connections == 3)
            with pytest.raises(AuthorityUnreachableError):
                await auth.client().get_document(CLOCK.current())
            for _, writer in hogs:
                writer.close()
            await wait_until(lambda: auth.server.active_connections == 0)
            with pytest.raises(DocumentNotFoundError):
                await auth.client().get_document(CLOCK.current())
    run(scenario())


def test_get_consensus_for_a_far_epoch_is_not_found(tmp_path):
    async def scenario():
        async with Running(tmp_path) as auth:
            session = await auth.connect(additional_data=b"")
            await session.send_command(GetConsensus(epoch=2**64 - 1))
            reply = await session.recv_command(timeout=5)
            assert reply.error_code == 1 and reply.payload == b""
            await session.close()
    run(scenario())


def test_a_failing_worker_tick_is_logged_and_the_worker_keeps_ticking(tmp_path, caplog):
    async def scenario():
        async with Running(tmp_path) as auth:
            real_tick, calls = auth.state.tick, []

            def flaky_tick(now):
                calls.append(now)
                if len(calls) == 1:
                    raise RuntimeError("boom in tick")
                return real_tick(now)

            auth.state.tick = flaky_tick
            auth.server._wake.set()  # the worker's wake-up (a stored post sets it)
            await wait_until(lambda: len(calls) >= 1, "the failing tick")
            auth.server._wake.set()
            await wait_until(lambda: len(calls) >= 2, "the next tick")
            assert auth.server.fatal_error is None and not auth.server._worker.done()
            session = await auth.connect(additional_data=b"")  # still serving
            await session.send_command(GetConsensus(epoch=2**64 - 1))
            assert (await session.recv_command(timeout=5)).error_code == 1
            await session.close()
    run(scenario())
    assert "boom in tick" in caplog.text


def test_store_that_cannot_be_created_is_a_store_error(tmp_path):
    from katzenpost.authority.store import StoreError
    with pytest.raises(StoreError, match="cannot open"):
        AuthorityStore(str(tmp_path / "missing-dir" / "persistence.sqlite"))


@pytest.mark.parametrize("mark, missing", [(1 / 2, []), (3 / 8, ["provider2"])])
def test_the_worker_wakes_at_the_generation_deadline_not_only_at_its_tick(tmp_path, mark, missing):
    """20-minute epochs (a 60-s tick): the clock is set 0.3 s before the deadline, and the
    document must follow within seconds, without an upload to wake the worker."""
    period = CLOCK.period
    epoch = CLOCK.current() + 10
    shift = CLOCK.epoch_start(epoch) + period * (1 - mark) - 0.3 - time.time()
    clock = EpochClock(period, clock=lambda: time.time() + shift)

    async def scenario():
        async with Running(tmp_path, clock=clock) as auth:
            now = clock.unix_now()
            for name in [n for n in MIXES + PROVIDERS if n not in missing]:
                desc = make_descriptor(name, epoch + 1, provider=name.startswith("provider"))
                raw = sign_descriptor(seed_for(name), desc, clock, now)
                assert auth.state.post_descriptor(epoch + 1, raw, desc.identity_key, now).stored
            assert epoch + 1 not in auth.state.documents
            await wait_until(lambda: epoch + 1 in auth.state.documents, "the next document", 3.0)
            assert clock.epoch_at(clock.unix_now())[2] < period * mark
    run(scenario())
