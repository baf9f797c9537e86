"""Sending a voting authority's messages to its peers, and fetching documents from them.

Every vote, reveal and signature goes to every peer in parallel, one fresh connection each,
authenticated with the own link key and identity (the peer is pinned to its configured keys).
Unlike the reference, which tries once with no timeout, each send is retried until the
message's phase ends, with bounded connect, handshake and reply waits; the retry rules keep
the protocol's meaning: a reveal or signature may be resent (a duplicate is answered
AlreadyReceived and changes nothing), a Vote #1 only while it cannot have been delivered (a
second copy would be stored as this authority's signature).
"""
from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
import time

from katzenpost.authority.config import Peer
from katzenpost.authority.voting.peers import PinnedPeer
from katzenpost.wire import session as wire_session
from katzenpost.wire.commands import (
    Consensus,
    ConsensusStatus,
    GetConsensus,
    Reveal,
    RevealStatus,
    RevealStatusCode,
    Vote,
    VoteStatus,
    VoteStatusCode,
)
from katzenpost.wire.errors import WireError

log = logging.getLogger("katzenpost.authority")

CONNECT_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 30.0
REPLY_TIMEOUT = 60.0
FETCH_TIMEOUT = 30.0  # per peer, as the reference's background fetch
RETRY_PAUSE = 1.0

_VOTE_ERRORS = {VoteStatusCode.TOO_LATE: "vote was too late",
                VoteStatusCode.TOO_EARLY: "vote was too early"}
_REVEAL_ERRORS = {RevealStatusCode.TOO_LATE: "reveal was too late",
                  RevealStatusCode.TOO_EARLY: "reveal was too early",
                  RevealStatusCode.ALREADY_RECEIVED: "reveal already received by authority",
                  RevealStatusCode.NOT_AUTHORIZED: "reveal rejected by authority: Not Authorized"}


_REPLIES = {Vote: ("vote", VoteStatus, VoteStatusCode.OK, _VOTE_ERRORS),
            Reveal: ("reveal", RevealStatus, RevealStatusCode.OK, _REVEAL_ERRORS)}


def reply_error(command, reply) -> str | None:
    """None for an Ok reply, else the reference's error text for it."""
    what, status_type, ok, errors = _REPLIES[type(command)]
    if not isinstance(reply, status_type):
        return (f"{what.capitalize()} response resulted in unexpected reply: "
                f"{type(reply).__name__}")
    if reply.error_code == ok:
        return None
    return errors.get(reply.error_code, f"{what} rejected by authority: unknown error code received")


class PeerLink:
    """Dialling one peer authority (its addresses in configured order)."""

    def __init__(self, peer: Peer, link_private: bytes, identity_public: bytes,
                 clock=time.time, retry_pause: float = RETRY_PAUSE) -> None:
        self.peer = peer
        self._link_private = link_private
        self._identity_public = identity_public
        self._authenticator = PinnedPeer(peer)
        self._clock = clock
        self.retry_pause = retry_pause

    @property
    def name(self) -> str:
        return base64.b64encode(self.peer.identity_public_key).decode()[:12]

    async def _connect(self, anonymous: bool, budget: float):
        """A session with the peer over the first address that answers; None if none did."""
        for host, port in self.peer.dial_addresses():
            try:
                return await wire_session.connect(
                    host, port,
                    link_key=os.urandom(32) if anonymous else self._link_private,
                    additional_data=b"" if anonymous else self._identity_public,
                    authenticator=self._authenticator,
                    connect_timeout=min(CONNECT_TIMEOUT, budget),
                    handshake_timeout=min(HANDSHAKE_TIMEOUT, budget))
            except (WireError, OSError, ValueError) as exc:
                log.debug("Peer %s at %s:%d: %s", self.name, host, port, exc)
        return None

    async def deliver(self, command, until: float, resend: bool) -> str | None:
        """Send `command` until it is answered or `until` (Unix time) passes. Returns None
        when the peer answered Ok, else the last reason. With `resend` False the command is
        never sent twice (a lost reply ends the attempts)."""
        reason = "not attempted"
        while True:
            budget = until - self._clock()
            if budget <= 0:
                return reason
            session = await self._connect(False, budget)
            if session is None:
                reason = "unreachable"
            else:
                sent = False
                try:
                    session.write_timeout = min(REPLY_TIMEOUT, max(budget, 0.1))
                    await session.send_command(command)
                    sent = True
                    reply = await session.recv_command(timeout=min(REPLY_TIMEOUT,
                                                                   max(budget, 0.1)))
                    return reply_error(command, reply)
                except WireError as exc:
                    reason = f"no reply: {exc}"
                    if sent and not resend:
                        return reason
                finally:
                    await session.close()
            await asyncio.sleep(min(self.retry_pause, max(0.0, until - self._clock())))

    async def fetch(self, epoch: int) -> tuple[bytes | None, str]:
        """(certificate, "") or (None, why) for the peer's document of `epoch`, anonymously."""
        session = await self._connect(True, FETCH_TIMEOUT)
        if session is None:
            return None, "unreachable"
        try:
            await session.send_command(GetConsensus(epoch=epoch))
            reply = await session.recv_command(timeout=FETCH_TIMEOUT)
        except WireError as exc:
            return None, str(exc)
        finally:
            await session.close()
        if not isinstance(reply, Consensus):
            return None, f"unexpected reply {type(reply).__name__}"
        if reply.error_code == ConsensusStatus.OK:
            return reply.payload, ""
        if reply.error_code == ConsensusStatus.GONE:
            return None, "authority: Requested epoch will never get a Document"
        return None, "authority: Document is not ready yet"


def shuffled(links: list[PeerLink]) -> list[PeerLink]:
    """Peers in a random order: a fetch fails over from one to the next."""
    order = list(links)
    random.shuffle(order)
    return order
