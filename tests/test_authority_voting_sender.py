"""Sending to a peer authority: the reference's reply texts, the dialled peer pinned to its keys,
and the retry rules (a reveal or signature is resent until answered; a Vote #1 never twice)."""
import asyncio
import time

from authority_voting_support import authority_keys
from katzenpost.authority.config import Peer
from katzenpost.authority.voting.sender import PeerLink, reply_error
from katzenpost.wire import session as wire_session
from katzenpost.wire.commands import NoOp, Reveal, RevealStatus, Vote, VoteStatus

A1, A2 = authority_keys("a1"), authority_keys("a2")


def test_reply_texts_are_the_references():
    vote = Vote(epoch=1, public_key=bytes(32), payload=b"x")
    reveal = Reveal(epoch=1, public_key=bytes(32), payload=b"x")
    assert reply_error(vote, VoteStatus(error_code=0)) is None
    assert reply_error(vote, VoteStatus(error_code=1)) == "vote was too late"
    assert reply_error(vote, VoteStatus(error_code=2)) == "vote was too early"
    assert reply_error(vote, VoteStatus(error_code=6)) == \
        "vote rejected by authority: unknown error code received"
    assert reply_error(vote, NoOp()) == "Vote response resulted in unexpected reply: NoOp"
    assert reply_error(reveal, RevealStatus(error_code=8)) is None
    assert reply_error(reveal, RevealStatus(error_code=11)) == "reveal already received by authority"
    assert reply_error(reveal, RevealStatus(error_code=10)) == \
        "reveal rejected by authority: Not Authorized"


class FakePeer:
    """a2 answering on 127.0.0.1: drops the first `silent` commands without a reply."""

    def __init__(self, silent: int, identity=A2.identity, link=A2.link_private) -> None:
        self.silent, self.identity, self.link = silent, identity, link
        self.received = []

    async def handle(self, reader, writer):
        session = await wire_session.accept(reader, writer, link_key=self.link,
                                            additional_data=self.identity,
                                            authenticator=lambda creds: True)
        command = await session.recv_command(timeout=5)
        self.received.append(command)
        if len(self.received) > self.silent:
            reply = VoteStatus(error_code=0) if isinstance(command, Vote) else RevealStatus(8)
            await session.send_command(reply)
        await session.close()


async def deliver(peer: FakePeer, command, resend: bool, budget: float = 4.0):
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = PeerLink(Peer(A2.identity, A2.link_public, [f"127.0.0.1:{port}"]), A1.link_private,
                    A1.identity, retry_pause=0.05)
    try:
        return await link.deliver(command, time.time() + budget, resend)
    finally:
        server.close()
        await server.wait_closed()


def test_a_reveal_is_resent_until_answered():
    peer = FakePeer(silent=2)
    reveal = Reveal(epoch=7, public_key=A1.identity, payload=b"r" * 50)
    assert asyncio.run(deliver(peer, reveal, resend=True)) is None
    assert len(peer.received) == 3


def test_a_first_vote_that_may_have_arrived_is_never_sent_twice():
    peer = FakePeer(silent=1)
    vote = Vote(epoch=7, public_key=A1.identity, payload=b"v" * 50)
    error = asyncio.run(deliver(peer, vote, resend=False))
    assert error is not None and error.startswith("no reply")
    assert len(peer.received) == 1


def test_a_peer_with_another_link_key_gets_nothing():
    impostor = FakePeer(silent=0, link=authority_keys("mallory").link_private)
    vote = Vote(epoch=7, public_key=A1.identity, payload=b"v" * 50)
    assert asyncio.run(deliver(impostor, vote, resend=True, budget=0.5)) == "unreachable"
    assert impostor.received == []


def test_an_unreachable_peer_ends_at_the_phase_deadline():
    async def run():
        link = PeerLink(Peer(A2.identity, A2.link_public, ["127.0.0.1:1"]), A1.link_private,
                        A1.identity, retry_pause=0.05)
        started = time.monotonic()
        error = await link.deliver(Reveal(epoch=1, public_key=A1.identity, payload=b"r"),
                                   time.time() + 0.5, True)
        return error, time.monotonic() - started
    error, took = asyncio.run(run())
    assert error == "unreachable" and took < 5
