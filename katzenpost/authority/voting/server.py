"""The voting authority daemon's network side: the non-voting listeners (one command per
connection, concurrent, bounded; `katzenpost.authority.daemon`) with the voting classes of
peer and commands, the timer-driven state machine, and the sends to the peers.

Allowed commands by class: a client may GetConsensus; a node also PostDescriptor; a peer
authority GetConsensus, Vote and Reveal. Anything else gets no reply and the connection closes.
"""
from __future__ import annotations

import asyncio
import logging

from katzenpost.authority.daemon import AuthorityServer
from katzenpost.authority.store import StoreError
from katzenpost.authority.voting.peers import Classifier, PeerClass
from katzenpost.authority.voting.sender import PeerLink, shuffled
from katzenpost.authority.voting.state import FatalError, Outgoing, VotingState
from katzenpost.wire.commands import (
    GetConsensus,
    PostDescriptor,
    Reveal,
    RevealStatus,
    Vote,
    VoteStatus,
)
from katzenpost.wire.handshake import PeerCredentials

log = logging.getLogger("katzenpost.authority")
WAKE_MARGIN = 0.005  # woken just after a deadline, never just before it
STEP_RETRY = 1.0  # after an unexpected error in a step, try the machine again this much later


class VotingServer(AuthorityServer):
    def __init__(self, state: VotingState, identity_seed: bytes, identity_public: bytes,
                 link_private: bytes, **kwargs) -> None:
        super().__init__(state, identity_seed, identity_public, link_private, **kwargs)
        self.state: VotingState = state
        self._classifier = Classifier(state.is_whitelisted, state.peers)
        self._authenticator = self._classifier
        clock = state.clock.unix_now
        self.links = [PeerLink(peer, link_private, identity_public, clock)
                      for peer in state.peers.values()]
        self._sends: set[asyncio.Task] = set()

    async def stop(self) -> None:
        for task in list(self._sends):
            task.cancel()
        await asyncio.gather(*self._sends, return_exceptions=True)
        await super().stop()

    # --- the state machine -----------------------------------------------------------------

    async def _run_worker(self) -> None:
        while not self._stopping.is_set():
            delay = self.state.wake_at - self.state.clock.unix_now()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay + WAKE_MARGIN)
                except asyncio.TimeoutError:
                    pass
                continue
            now = self.state.clock.unix_now()
            try:
                outgoing = self.state.step(now)
            except (StoreError, FatalError) as exc:
                self._fatal(exc)
                return
            except Exception as exc:  # a bug in one step must not end the daemon unseen
                log.error("Voting state machine step failed: %r", exc)
                self.state.wake_at = now + STEP_RETRY
                continue
            for item in outgoing:
                self._spawn(self._carry_out(item))

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _carry_out(self, item: Outgoing) -> None:
        if item.kind == "fetch":
            await self._fetch(item.epoch)
            return
        command_type = Reveal if item.kind == "reveal" else Vote
        command = command_type(epoch=item.epoch, public_key=self._identity_public,
                               payload=item.payload)
        resend = item.kind != "vote"
        results = await asyncio.gather(*(link.deliver(command, item.until, resend)
                                         for link in self.links))
        for link, error in zip(self.links, results):
            if error is not None:
                log.info("Sending the %s for epoch %d to %s failed: %s", item.kind, item.epoch,
                         link.name, error)

    async def _fetch(self, epoch: int) -> None:
        for link in shuffled(self.links):
            raw, why = await link.fetch(epoch)
            if raw is None:
                log.info("Peer %s: Failed to retrieve document for epoch '%d': %s", link.name,
                         epoch, why)
                continue
            if self.state.adopt_fetched(raw, epoch, self.state.clock.unix_now()):
                return

    # --- connections -----------------------------------------------------------------------

    def _dispatch(self, command, creds: PeerCredentials):
        kind = self._classifier.classify(creds)
        if isinstance(command, GetConsensus):
            return super()._dispatch(command, creds)
        if isinstance(command, PostDescriptor) and kind is PeerClass.NODE:
            return super()._dispatch(command, creds)
        if kind is PeerClass.AUTHORITY and isinstance(command, (Vote, Reveal)):
            return self._on_peer_command(command, creds.additional_data)
        if isinstance(command, (VoteStatus, RevealStatus)) and kind is PeerClass.AUTHORITY:
            log.error("%s command is not allowed on Authority wire service listener.",
                      type(command).__name__)
            return None
        log.info("%s from a %s is not allowed: closing", type(command).__name__, kind.value)
        return None

    def _on_peer_command(self, command, session_identity: bytes):
        now = self.state.clock.unix_now()
        try:
            if isinstance(command, Vote):
                code = self.state.on_vote(command.epoch, command.public_key, command.payload,
                                          session_identity, now)
                return VoteStatus(error_code=int(code))
            code = self.state.on_reveal(command.public_key, command.payload, now)
            return RevealStatus(error_code=int(code))
        except StoreError as exc:
            self._fatal(exc)
            return None
