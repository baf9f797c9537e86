"""The rules for a peer's Vote and Reveal, in the reference's evaluation order (v0.0.15).

Pure checks: they read the state's tables and return (status code, reason, accepted value);
storing is the state's job. Vote status codes keep the reference's numbers, whose names are
swapped (an old epoch is answered 2, "TooEarly"; a future one 1, "TooLate"). Two checks the
reference lacks are added, each answered with a code it already sends: the Vote's key must be
the authenticated session's (else NotAuthorized), and the vote document's epoch must be the
Vote's (else NotSigned, the code every unusable payload gets); a Reveal payload shorter than
8 bytes (a crash in the reference) is NotAuthorized.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from katzenpost.pki.document import Document
from katzenpost.voting import srv
from katzenpost.voting.errors import RevealError, VoteError
from katzenpost.voting.vote import parse_vote as verify_vote
from katzenpost.wire.commands import RevealStatusCode, VoteStatusCode

if TYPE_CHECKING:  # the state passes itself in; no import cycle at run time
    from katzenpost.authority.voting.state import VotingState


def parse_vote(raw: bytes, signer: bytes, now: float) -> Document | None:
    """A vote or single-signed consensus certificate verified with `signer` (document rules of
    the PKI: signature, expiry, JSON, shared-random lengths, well-formed, descriptors valid)."""
    try:
        return verify_vote(raw, signer, now)
    except VoteError:
        return None


def check_vote(state: "VotingState", epoch: int, sender: bytes, payload: bytes,
               session_identity: bytes,
               now: float) -> tuple[VoteStatusCode, str, Document | None]:
    voting = state.voting_epoch
    if epoch < voting:
        return VoteStatusCode.TOO_EARLY, f"Received Vote too early: {epoch} < {voting}", None
    if epoch > voting:
        return VoteStatusCode.TOO_LATE, f"Received Vote too late: {epoch} > {voting}", None
    if sender not in state.peers:
        return VoteStatusCode.NOT_AUTHORIZED, "Voter not white-listed.", None
    if sender != session_identity:
        return VoteStatusCode.NOT_AUTHORIZED, "Vote key is not the session's identity", None
    doc = parse_vote(payload, sender, now)
    if doc is None:
        return VoteStatusCode.NOT_SIGNED, "Vote failed signature verification.", None
    if doc.epoch != epoch:
        return (VoteStatusCode.NOT_SIGNED,
                f"Vote document is for epoch {doc.epoch}, not {epoch}", None)
    if sender in state.votes.get(epoch, {}) and sender in state.certificates.get(epoch, {}):
        return (VoteStatusCode.ALREADY_RECEIVED,
                "Vote command invalid: more than one vote from same peer is not allowed.", None)
    return VoteStatusCode.OK, "", doc


def check_reveal(state: "VotingState", sender: bytes, payload: bytes,
                 now: float) -> tuple[RevealStatusCode, str, bytes | None, int | None]:
    """(code, reason, the certified reveal to store, its epoch). The command's own epoch field
    is ignored, as in the reference: the epoch is the first 8 certified bytes."""
    if sender not in state.peers:
        return RevealStatusCode.NOT_AUTHORIZED, "Voter not white-listed.", None, None
    try:
        epoch, reveal = srv.open_signed_reveal(payload, sender, now)
    except RevealError as exc:  # a bad signature, or fewer than 8 certified bytes
        return RevealStatusCode.NOT_AUTHORIZED, f"Reveal failed to verify: {exc}", None, None
    voting = state.voting_epoch
    if epoch < voting:
        return RevealStatusCode.TOO_LATE, f"Received Reveal too late: {epoch} < {voting}", None, epoch
    if epoch > voting:
        return RevealStatusCode.TOO_EARLY, f"Received Reveal too early: {epoch} > {voting}", None, epoch
    votes = state.votes.get(epoch, {})
    if not votes:
        return RevealStatusCode.TOO_EARLY, "Reveal received before any votes!?.", None, epoch
    if sender not in votes:
        return RevealStatusCode.TOO_EARLY, "Reveal received before peer's vote?.", None, epoch
    if sender in state.reveals.get(epoch, {}):
        return RevealStatusCode.ALREADY_RECEIVED, "Reveal already received", None, epoch
    return RevealStatusCode.OK, "", reveal, epoch
