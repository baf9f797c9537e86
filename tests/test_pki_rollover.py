"""Nodes' PKI workers and the authority over real TCP on 127.0.0.1, driven through an epoch
rollover by one injected clock (no sleeping): bootstrap, publication for the next epoch with the
upcoming mix keys, generation and fetch of the next document, and the rollover itself."""
import asyncio

import pytest

from _pki_fixtures import (
    AUTHORITY_SEED,
    MIXES,
    PROVIDERS,
    MemoryMixKeys,
    authority_config_text,
    node_self,
    public_for,
    wait_until,
)
from katzenpost.authority import config as ac
from katzenpost.authority.daemon import AuthorityServer
from katzenpost.authority.state import AuthorityState
from katzenpost.authority.store import AuthorityStore
from katzenpost.pki.client import AuthorityClient, DocumentGoneError, DocumentNotFoundError
from katzenpost.pki.epochtime import EpochClock
from katzenpost.pki.keyconv import x25519_private_from_ed25519_seed
from katzenpost.pki.worker import PKIWorker
from katzenpost.wire.handshake import PeerCredentials

AUTHORITY = public_for(AUTHORITY_SEED)
E = 5_000_000


class FakeTime:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def node_worker(name, port, clock, handed_over):
    client = AuthorityClient("127.0.0.1", port, AUTHORITY, clock=clock,
                             connect_timeout=5, handshake_timeout=5, response_timeout=5)
    return PKIWorker(node_self(name), client, MemoryMixKeys(name), clock,
                     on_epoch_change=lambda doc: handed_over.append((name, doc.epoch)))


def test_nodes_follow_the_authority_through_an_epoch_rollover(tmp_path):
    time = FakeTime(EpochClock().epoch_start(E) + 30)
    clock = EpochClock(clock=time)
    period = clock.period

    async def scenario():
        store = AuthorityStore.open_in(str(tmp_path))
        state = AuthorityState(ac.parse(authority_config_text(tmp_path)), AUTHORITY_SEED, AUTHORITY, store,
                               clock)
        state.restore(clock.unix_now())
        server = AuthorityServer(state, AUTHORITY_SEED, AUTHORITY,
                                 x25519_private_from_ed25519_seed(AUTHORITY_SEED))
        [(_, port)] = await server.start([("127.0.0.1", 0)])
        handed_over = []
        workers = [node_worker(name, port, clock, handed_over) for name in MIXES + PROVIDERS]
        try:
            # 30 s into E: the first tick posts for E; the last upload bootstraps document E.
            for worker in workers:
                await worker.tick()
            assert [w.last_published_epoch for w in workers] == [E] * 5
            await wait_until(lambda: E in state.documents, "the bootstrap document")

            # A minute later: every node fetches E and publishes for E+1 with keys E+1..E+3.
            time.now += 60
            for worker in workers:
                await worker.tick()
            assert all(E in w.documents for w in workers)
            assert sorted(handed_over) == sorted((n, E) for n in MIXES + PROVIDERS)
            assert {w.last_published_epoch for w in workers} == {E + 1}
            uploaded = state.descriptors[E + 1]
            assert len(uploaded) == 5
            assert all(sorted(d.mix_keys) == [E + 1, E + 2, E + 3] for d in uploaded.values())
            with_next_key = {d.identity_key: d.mix_keys[E + 1] for d in uploaded.values()}
            assert all(w.mix_keys.public_key(E + 1) == with_next_key[w.node.identity_public]
                       for w in workers)

            # 4 minutes before the rollover the authority (its 60 s tick) builds E+1, and the
            # nodes, now asking for the next epoch too, fetch it.
            time.now = clock.epoch_start(E) + period - 240
            with_next = state.tick(clock.unix_now())
            assert with_next == [E + 1]
            for worker in workers:
                await worker.tick()
            raws = {w.documents[E + 1].doc.raw for w in workers}
            assert len(raws) == 1
            layers = lambda doc: {d.name: i for i, layer in enumerate(doc.topology) for d in layer}
            assert layers(workers[0].documents[E + 1].doc) == layers(workers[0].documents[E].doc)

            # After the rollover the document for E+1 is handed over and E+2 is published.
            time.now = clock.epoch_start(E + 1) + 30
            for worker in workers:
                await worker.tick()
            assert sorted(e for _, e in handed_over).count(E + 1) == 5
            assert {w.last_published_epoch for w in workers} == {E + 2}
            assert len(state.descriptors[E + 2]) == 5
            for worker in workers:  # neighbours authenticate each other by the new document
                for peer in worker.documents[E + 1].incoming.values():
                    creds = PeerCredentials(peer.identity_key, peer.link_key)
                    assert worker.authenticate_connection(creds, False) == (True, True)

            client = workers[0].client
            with pytest.raises(DocumentNotFoundError):  # E+2 cannot exist yet
                await client.get_document(E + 2)
            with pytest.raises(DocumentGoneError):  # E-1 predates the network
                await client.get_document(E - 1)
        finally:
            await server.stop()
            store.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
