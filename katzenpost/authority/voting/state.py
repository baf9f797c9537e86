"""The voting authority's state machine (v0.0.15 of the 2021 Katzenpost voting authority).

Sans-I/O like the non-voting state it extends (uploads, whitelist and descriptor persistence
are that code): every entry point takes the Unix time, `step` returns what must be sent, and
the daemon (`server.py`) does the sending, the fetching and the sleeping. The protocol's
algorithms (commit and reveal, tally, consensus, signature combination) are the voting library
(`katzenpost.voting`), called through `protocol.py`.

A round for epoch V runs in epoch V-1: vote at P/2, reveal at 5P/8, tabulate and sign at 3P/4,
combine and publish at 7P/8 (`schedule.py`). Docs: docs/authority.md, "Voting authorities".
"""
from __future__ import annotations

import base64
import logging
import os
import random
from collections import Counter
from dataclasses import dataclass

from katzenpost.authority.config import AuthorityConfig
from katzenpost.authority.state import AuthorityState, PostResult
from katzenpost.authority.voting import handler
from katzenpost.authority.voting.schedule import Phase, Schedule
from katzenpost.authority.voting.store import VotingStore
from katzenpost.log import NOTICE
from katzenpost.pki.document import Document
from katzenpost.pki.epochtime import EpochClock
from katzenpost.voting import consensus, srv, tally
from katzenpost.voting.errors import ConsensusError, VotingError
from katzenpost.voting.vote import build_vote, sign_vote
from katzenpost.wire.commands import ConsensusStatus, RevealStatusCode, VoteStatusCode

log = logging.getLogger("katzenpost.authority")


class FatalError(RuntimeError):
    """The reference shuts down on these (its own vote cannot be signed or re-verified)."""


@dataclass(frozen=True)
class Outgoing:
    """Something the daemon must do for the state: send a vote, reveal or signature (Vote #2)
    to every peer until `until` (Unix time), or fetch the document of `epoch` from the peers."""
    kind: str  # "vote", "reveal", "signature" or "fetch"
    epoch: int
    payload: bytes = b""
    until: float = 0.0


class VotingState(AuthorityState):
    def __init__(self, cfg: AuthorityConfig, identity_seed: bytes, identity_public: bytes,
                 store: VotingStore, clock: EpochClock, rng: random.Random | None = None):
        super().__init__(cfg, identity_seed, identity_public, store, clock, rng)
        self.peers = {p.identity_public_key: p for p in cfg.authorities or ()}
        self.schedule = Schedule(clock)
        self.phase = Phase.BOOTSTRAP
        self.voting_epoch = 0
        self.wake_at = 0.0  # Unix time of the next step
        self.votes: dict[int, dict[bytes, Document]] = {}
        self.reveals: dict[int, dict[bytes, bytes]] = {}
        self.certificates: dict[int, dict[bytes, bytes]] = {}
        self.combined: set[int] = set()  # epochs whose combining step has run
        self.refused: Counter[str] = Counter()  # refused votes/reveals by reason (logged)
        self.prior_srv: list[bytes] | None = None  # null in a vote until a chain is known
        self._restart_fetches: list[int] = []  # a resumed round's bootstrap fetches, still due

    # --- thresholds (simple majority over the list lengths) --------------------------------

    @property
    def authority_count(self) -> int:
        return len(self.peers) + 1

    @property
    def threshold(self) -> int:
        return tally.authority_threshold(self.authority_count)

    def verifiers(self) -> list[bytes]:
        """All peers plus self: the signers a published document is checked against."""
        return [*self.peers, self.identity_public]

    # --- restore and resume ----------------------------------------------------------------

    def restore(self, now: float) -> None:
        """Documents and descriptors of now-1..now+1, then the round in progress if this
        authority had voted in it (resumed where the schedule now is); else bootstrap."""
        current = self.clock.epoch_at(now)[0]
        for epoch in (current - 1, current, current + 1):
            self._restore_document(epoch, now)
            self._restore_descriptors(epoch, now)
        self.wake_at = now
        if not self._resume_round(current + 1, now):
            self.phase = Phase.BOOTSTRAP
            return
        # A resumed round skips the bootstrap step, whose fetches it still needs: a document
        # fetched before the restart was held in memory only, and without the previous one
        # this authority would chain another shared random value than its peers.
        self._restart_fetches = [e for e in (current - 1, current) if e not in self.documents]

    def _restore_document(self, epoch: int, now: float) -> None:
        """Threshold-verified against all peers plus self (a failure skips only this epoch,
        where the reference stops restoring altogether)."""
        raw = self.store.document(epoch)
        if raw is None:
            return
        doc = self._verify_consensus(raw, self.verifiers(), self.threshold, epoch, now)
        if doc is None:
            log.warning("Failed to verify the persisted document for epoch %d: skipped", epoch)
            return
        self._hold_document(doc)

    def _resume_round(self, epoch: int, now: float) -> bool:
        votes = self.store.round_items("votes", epoch)
        chain = self.store.chain(epoch)
        if self.identity_public not in votes or chain is None or epoch in self.documents:
            return False
        for pk, raw in votes.items():
            doc = handler.parse_vote(raw, pk, now)
            if doc is not None:
                self.votes.setdefault(epoch, {})[pk] = doc
        if self.identity_public not in self.votes.get(epoch, {}):
            return False  # our own vote expired or no longer verifies: vote again later
        self.reveals[epoch] = self.store.round_items("reveals", epoch)
        self.certificates[epoch] = self.store.round_items("certificates", epoch)
        self.genesis_epoch, self.prior_srv = chain
        self.voting_epoch = epoch
        self.phase = Phase.ACCEPT_VOTE
        self.wake_at = self.schedule.at(epoch - 1, Phase.ACCEPT_VOTE)
        log.log(NOTICE, "Resuming the round for epoch %d after a restart", epoch)
        return True

    # --- uploads ---------------------------------------------------------------------------

    def post_descriptor(self, epoch: int, payload: bytes, peer_identity: bytes,
                        now: float) -> PostResult:
        result = super().post_descriptor(epoch, payload, peer_identity, now)
        if result.stored and self.identity_public in self.votes.get(epoch, {}):
            # Accepted as the reference does (a Go node posts once per epoch anyway), but it
            # enters no document: the vote for its epoch is cast.
            log.info("Descriptor for epoch %d arrived after this authority voted: it enters no"
                     " document", epoch)
        return result

    # --- votes and reveals from peers (rules in handler.py) --------------------------------

    def on_vote(self, epoch: int, sender: bytes, payload: bytes, session_identity: bytes,
                now: float) -> VoteStatusCode:
        code, reason, doc = handler.check_vote(self, epoch, sender, payload, session_identity,
                                               now)
        if doc is None:
            self._refused("vote", code.name, epoch, sender, reason)
            return code
        if sender not in self.votes.setdefault(epoch, {}):
            self._keep("votes", self.votes, epoch, sender, doc, payload)
            log.info("Vote OK (epoch %d, from %s).", epoch, _short(sender))
        else:
            self._keep("certificates", self.certificates, epoch, sender, payload, payload)
            log.info("Signature OK (epoch %d, from %s).", epoch, _short(sender))
        return VoteStatusCode.OK

    def on_reveal(self, sender: bytes, payload: bytes, now: float) -> RevealStatusCode:
        code, reason, reveal, epoch = handler.check_reveal(self, sender, payload, now)
        if reveal is None:
            self._refused("reveal", code.name, epoch, sender, reason)
            return code
        self._keep("reveals", self.reveals, epoch, sender, reveal, reveal)
        log.info("Reveal OK (epoch %d, from %s).", epoch, _short(sender))
        return RevealStatusCode.OK

    def _keep(self, table: str, memory: dict, epoch: int, pk: bytes, value, raw: bytes) -> None:
        self.store.put_round_item(table, epoch, pk, raw)  # a StoreError is fatal (daemon)
        memory.setdefault(epoch, {})[pk] = value

    def _refused(self, what: str, code: str, epoch: int | None, sender: bytes,
                 reason: str) -> None:
        key = f"{what}_{code.lower()}"
        self.refused[key] += 1
        log.warning("Refused a %s for epoch %s from %s: %s (%s; %s refused so far: %d)", what,
                    epoch if epoch is not None else "?", _short(sender), code, reason, key,
                    self.refused[key])

    # --- serving ---------------------------------------------------------------------------

    def document_for_epoch(self, epoch: int, now: float) -> tuple[ConsensusStatus, bytes]:
        """GetConsensus: no bootstrap grace (the current epoch without a document is Gone).
        The next epoch turns Gone after 7P/8 only once this authority's combining step for it
        has run, not while it may still publish (a Go node never asks again after Gone)."""
        doc = self.documents.get(epoch)
        if doc is not None:
            return ConsensusStatus.OK, doc.raw
        current, elapsed, _ = self.clock.epoch_at(now)
        if epoch <= current:
            return ConsensusStatus.GONE, b""
        if (epoch == current + 1 and elapsed > self.schedule.publish
                and (epoch in self.combined or self.voting_epoch != epoch)):
            return ConsensusStatus.GONE, b""
        return ConsensusStatus.NOT_FOUND, b""

    # --- documents from elsewhere ----------------------------------------------------------

    def adopt_fetched(self, raw: bytes, epoch: int, now: float) -> bool:
        """A document fetched from a peer at bootstrap: kept (in memory, as the reference) if
        none is held for its epoch and a majority of the peers signed it."""
        if epoch in self.documents or not self.peers:
            return False
        doc = self._verify_consensus(raw, list(self.peers),
                                     tally.fetch_threshold(self.authority_count), epoch, now)
        if doc is None:
            return False
        self._hold_document(doc)
        log.log(NOTICE, "Adopted the consensus for epoch %d fetched from a peer", epoch)
        return True

    def _verify_consensus(self, raw: bytes, verifiers: list[bytes], threshold: int,
                          epoch: int, now: float) -> Document | None:
        try:
            accepted = consensus.verify_consensus(raw, verifiers, threshold, epoch, now)
        except ConsensusError as exc:
            log.info("Consensus certificate for epoch %d rejected: %s", epoch, exc)
            return None
        accepted.document.raw = accepted.raw
        return accepted.document

    def _hold_document(self, doc: Document) -> None:
        self.documents[doc.epoch] = doc

    # --- the state machine -----------------------------------------------------------------

    def step(self, now: float) -> list[Outgoing]:
        """Run the step due at `wake_at` (call when now >= wake_at); sets the next wake_at."""
        current, elapsed, till = self.clock.epoch_at(now)
        log.debug("Current epoch %d, remaining time: %.3f s", current, till)
        if self.phase is not Phase.BOOTSTRAP and not self._round_alive(current):
            # Woken an epoch late (a suspended process): bootstrap now, as after a restart.
            log.warning("The round for epoch %d was missed (now epoch %d): bootstrapping",
                        self.voting_epoch, current)
            self._fail_round(current, now)
        out = [Outgoing("fetch", e) for e in self._restart_fetches if e not in self.documents]
        self._restart_fetches = []
        out += getattr(self, f"_step_{self.phase.value}")(current, elapsed, now)
        self._prune(current)
        log.info("authority: FSM in state %s until %.3f (in %.3f s)", self.phase.value,
                 self.wake_at, self.wake_at - now)
        return out

    def _round_alive(self, current: int) -> bool:
        """A round runs in epoch V-1; combining may still run late, in V itself."""
        if self.phase is Phase.ACCEPT_SIGNATURE:
            return current in (self.voting_epoch - 1, self.voting_epoch)
        return current == self.voting_epoch - 1

    def _step_bootstrap(self, current: int, elapsed: float, now: float) -> list[Outgoing]:
        log.log(NOTICE, "Bootstrapping for %d", current)
        fetches = [Outgoing("fetch", e) for e in (current - 1, current)
                   if e not in self.documents]
        if elapsed > self.schedule.vote:
            self.voting_epoch = current + 2
            self.wake_at = self.clock.epoch_start(current + 1)
            log.log(NOTICE, "Too late to vote this round, sleeping until %.3f", self.wake_at)
            return fetches
        self.voting_epoch = current + 1
        self.phase = Phase.ACCEPT_DESC
        self.wake_at = self.schedule.at(current, Phase.ACCEPT_DESC)
        return fetches

    def _step_accept_desc(self, current: int, elapsed: float, now: float) -> list[Outgoing]:
        epoch = self.voting_epoch
        if not self._enough_nodes(epoch):
            log.warning("Not voting because insufficient descriptors uploaded for epoch %d!",
                        epoch)
            self._fail_round(current, now, reset_chain=False)
            return []
        self._take_chain(epoch)
        self.phase = Phase.ACCEPT_VOTE
        self.wake_at = self.schedule.at(epoch - 1, Phase.ACCEPT_VOTE)
        if self.identity_public in self.votes.get(epoch, {}):
            return []  # already voted (a resumed round): never send a second, different vote
        log.log(NOTICE, "Voting for epoch %d", epoch)
        raw = self._make_vote(epoch, now)
        log.log(NOTICE, "Sending Document for epoch %d, to all Directory Authorities.", epoch)
        return [Outgoing("vote", epoch, raw, until=self.wake_at)]

    def _take_chain(self, epoch: int) -> None:
        """Genesis epoch and PriorSharedRandom follow the held document for epoch-1 whenever
        there is one (also one adopted from peers, which the reference never re-reads, so an
        authority that restarted its chain wrongly would stay apart); without it, after a
        failed round or at the first vote, a new chain starts at `epoch`."""
        previous = self.documents.get(epoch - 1)
        genesis = 0 if previous is not None else self.genesis_epoch
        self.genesis_epoch, self.prior_srv = srv.genesis_for_vote(
            genesis, self.prior_srv, previous, epoch)

    def _make_vote(self, epoch: int, now: float) -> bytes:
        commit, reveal = srv.commit_and_reveal(epoch, os.urandom(srv.RANDOM_LEN))
        try:
            vote = build_vote(epoch, self.descriptors.get(epoch, {}).values(),
                              self.cfg.parameters, commit, genesis_epoch=self.genesis_epoch,
                              prior_shared_random=self.prior_srv, layers=self.cfg.debug.layers,
                              previous=self.documents.get(epoch - 1))
            raw = sign_vote(self._seed, vote, now, self.clock.period)
        except VotingError as exc:
            raise FatalError(f"failure: signing vote failed: {exc}") from None
        doc = handler.parse_vote(raw, self.identity_public, now)
        if doc is None:
            raise FatalError("failure: signing vote failed")
        self.store.put_chain(epoch, self.genesis_epoch, self.prior_srv)
        self._keep("reveals", self.reveals, epoch, self.identity_public, reveal, reveal)
        self._keep("votes", self.votes, epoch, self.identity_public, doc, raw)
        return raw

    def _step_accept_vote(self, current: int, elapsed: float, now: float) -> list[Outgoing]:
        epoch = self.voting_epoch
        self.phase = Phase.ACCEPT_REVEAL
        self.wake_at = self.schedule.at(epoch - 1, Phase.ACCEPT_REVEAL)
        reveal = self.reveals.get(epoch, {}).get(self.identity_public)
        if reveal is None:
            return []
        signed = srv.sign_reveal(self._seed, reveal, srv.reveal_expiration(self.clock, now), now)
        log.log(NOTICE, "Sending Shared Random Reveal for epoch %d, to all Directory "
                "Authorities.", epoch)
        return [Outgoing("reveal", epoch, signed, until=self.wake_at)]

    def _step_accept_reveal(self, current: int, elapsed: float, now: float) -> list[Outgoing]:
        epoch = self.voting_epoch
        self.phase = Phase.ACCEPT_SIGNATURE
        self.wake_at = self.schedule.at(epoch - 1, Phase.ACCEPT_SIGNATURE)
        if epoch in self.documents:
            return []
        own = self.certificates.get(epoch, {}).get(self.identity_public)
        if own is None:
            log.log(NOTICE, "Tabulating for epoch %d", epoch)
            own = self._tabulate(epoch, now)
        if own is None:
            return []
        return [Outgoing("signature", epoch, own, until=self.wake_at)]

    def _tabulate(self, epoch: int, now: float) -> bytes | None:
        votes = {pk: doc.raw for pk, doc in self.votes.get(epoch, {}).items()}
        try:
            result = consensus.tabulate(
                epoch, votes, self.reveals.get(epoch, {}), identity_private=self._seed,
                n_authorities=self.authority_count, layers=self.cfg.debug.layers,
                genesis_epoch=self.genesis_epoch, prior_shared_random=self.prior_srv,
                previous=self.documents.get(epoch - 1),
                expiration=consensus.consensus_expiration(epoch, self.clock),
                period=self.clock.period, now=now)
        except VotingError as exc:
            log.error("No shared random for epoch %d, aborting!, %s", epoch, exc)
            return None
        self.prior_srv = list(result.prior_shared_random)
        for pk, why in sorted(result.skipped.items()):
            log.warning("Skipping vote from Authority %s: %s", _short(pk), why)
        if result.certificate is None:
            log.error("No consensus for epoch %d, aborting!, %s", epoch, result.error)
            return None
        log.log(NOTICE, "Generating Consensus Document for epoch %d.", epoch)
        raw = result.certificate
        self._keep("certificates", self.certificates, epoch, self.identity_public, raw, raw)
        return raw

    def _step_accept_signature(self, current: int, elapsed: float,
                               now: float) -> list[Outgoing]:
        epoch = self.voting_epoch
        log.log(NOTICE, "Combining signatures for epoch %d", epoch)
        if epoch not in self.documents:
            self._combine(epoch, now)
        self.combined.add(epoch)
        self._log_refusals(epoch)
        if epoch in self.documents:
            self.voting_epoch = epoch + 1
            self.phase = Phase.ACCEPT_DESC
            self.wake_at = self.schedule.at(epoch, Phase.ACCEPT_DESC)
        else:
            self._fail_round(current, now)
        return []

    def _combine(self, epoch: int, now: float) -> None:
        certificates = self.certificates.get(epoch, {})
        if not certificates:
            log.warning("No certificates for epoch %d", epoch)
            return
        try:
            accepted = consensus.combine_signatures(epoch, certificates, self.verifiers(), now,
                                                    prefer=self.identity_public)
        except ConsensusError as exc:
            log.warning("%s", exc)
            return
        self.store.put_document(epoch, accepted.raw)
        accepted.document.raw = accepted.raw
        self._hold_document(accepted.document)
        log.log(NOTICE, "Consensus made for epoch %d with %d/%d signatures", epoch,
                len(accepted.good), self.authority_count)
        for signer in accepted.good:
            log.log(NOTICE, "Consensus signed by %s", _b64(signer))

    def _fail_round(self, current: int, now: float, reset_chain: bool = True) -> None:
        """Sit out until the next epoch starts, then bootstrap; after a failed round the
        chain restarts unless a document for the previous epoch is found by then."""
        if reset_chain:
            self.genesis_epoch, self.prior_srv = 0, []
        self.voting_epoch = current + 2
        self.phase = Phase.BOOTSTRAP
        self.wake_at = self.clock.epoch_start(current + 1)

    def _log_refusals(self, epoch: int) -> None:
        if self.refused:
            summary = ", ".join(f"{k}={v}" for k, v in sorted(self.refused.items()))
            log.log(NOTICE, "Refused votes and reveals so far (round %d): %s", epoch, summary)

    def _prune(self, current: int) -> None:
        """Documents, descriptors and the round tables before now-3 (reveals too, which the
        reference never drops)."""
        super()._prune(current)
        cutoff = current - 3
        for table in (self.votes, self.reveals, self.certificates):
            for epoch in [e for e in table if e < cutoff]:
                del table[epoch]
        self.combined = {e for e in self.combined if e >= cutoff}


def _b64(pk: bytes) -> str:
    return base64.b64encode(pk).decode("ascii")


def _short(pk: bytes) -> str:
    return _b64(pk)[:12]
