"""Fake voting authorities on 127.0.0.1 for the node-side voting tests: each speaks the wire
protocol with its own identity and (separate) X25519 link key, answers one command per
connection as a voting authority does, and serves whatever consensus the test gives it."""
from __future__ import annotations

import asyncio
import contextlib

from _pki_fixtures import CLOCK, link_private_for, make_document, public_for, seed_for, x25519_public
from katzenpost.pki import cert
from katzenpost.pki.voting_client import VotingAuthority, VotingClient
from katzenpost.wire import WireError, accept
from katzenpost.wire.commands import (
    Consensus,
    ConsensusStatus,
    DescriptorStatus,
    GetConsensus,
    PostDescriptor,
    PostDescriptorStatus,
)


class FakeAuthority:
    def __init__(self, name: str) -> None:
        self.name = name
        self.seed = seed_for(f"authority-{name}")
        self.identity = public_for(self.seed)
        self.link_private = link_private_for(f"authority-{name}")
        self.link_public = x25519_public(self.link_private)
        self.consensus: dict[int, tuple[int, bytes]] = {}   # epoch -> (status, payload)
        self.post_status = DescriptorStatus.OK
        self.posts: list[tuple[int, bytes, bytes]] = []      # (epoch, raw, the poster's AD)
        self.gets: list[int] = []
        self.answer = None          # a command sent instead of the proper reply
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    def authority(self, port: int | None = None) -> VotingAuthority:
        return VotingAuthority(self.identity, self.link_public, (("127.0.0.1", port or self.port),))

    async def start(self, port: int = 0) -> "FakeAuthority":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader, writer) -> None:
        try:
            session = await accept(reader, writer, link_key=self.link_private,
                                   additional_data=self.identity, authenticator=lambda c: True,
                                   handshake_timeout=5)
        except WireError:
            return
        try:
            command = await session.recv_command(timeout=5)
            await session.send_command(self.answer or self._reply(command, session))
        except WireError:
            pass
        finally:
            await session.close()

    def _reply(self, command, session):
        if isinstance(command, GetConsensus):
            self.gets.append(command.epoch)
            status, payload = self.consensus.get(command.epoch, (ConsensusStatus.NOT_FOUND, b""))
            return Consensus(error_code=status, payload=payload)
        if isinstance(command, PostDescriptor):
            self.posts.append((command.epoch, command.payload, session.peer_credentials.additional_data))
            return PostDescriptorStatus(error_code=self.post_status)
        raise WireError(f"unexpected {type(command).__name__}")


def signed_consensus(epoch: int, now: float, signers, **overrides) -> bytes:
    """A document for `epoch` signed by each of `signers` (FakeAuthority or a raw seed)."""
    doc = make_document(epoch, now, **overrides)
    seeds = [s.seed if isinstance(s, FakeAuthority) else s for s in signers]
    return cert.sign_multi(seeds, doc.to_json(), int(now) + CLOCK.document_lifetime(), now)


@contextlib.asynccontextmanager
async def fake_authorities(count: int = 3):
    fakes = [await FakeAuthority(f"a{i}").start() for i in range(count)]
    try:
        yield fakes
    finally:
        for fake in fakes:
            await fake.stop()


def voting_client(fakes, **kwargs) -> VotingClient:
    kwargs.setdefault("connect_timeout", 3)
    kwargs.setdefault("handshake_timeout", 3)
    kwargs.setdefault("response_timeout", 3)
    return VotingClient([f.authority() for f in fakes], clock=CLOCK, **kwargs)
