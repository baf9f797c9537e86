"""The tally of the voting authorities (voting/server `tallyVotes`) and the thresholds.

Consensus membership is "at least T counted votes carried these exact descriptor bytes"; the
parameters are the tuple at least T counted votes agree on. A vote counts only if its author's
reveal opens the vote's commit. Pure: the stored tables and the time are arguments.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from katzenpost.pki.descriptor import (
    DescriptorError,
    MixDescriptor,
    get_verifier_from_descriptor,
    verify_and_parse_descriptor,
)
from katzenpost.voting.errors import TallyError, VoteError
from katzenpost.voting.srv import valid_reveals
from katzenpost.voting.vote import VotingParameters, parse_vote, vote_commit


def authority_threshold(n_authorities: int) -> int:
    """T = N // 2 + 1 (N = configured peers + self): votes per descriptor, votes per parameter
    set, signatures to publish or restore a consensus."""
    return n_authorities // 2 + 1


def dissent_bound(n_authorities: int) -> int:
    """D = (N − 1) // 2 − 1, the reference's "partition" bound (≤ 0 for N ≤ 4)."""
    return (n_authorities - 1) // 2 - 1


def client_threshold(n_peers: int) -> int:
    """Signatures a node or client needs: n // 2 + 1 over its configured authorities."""
    return n_peers // 2 + 1


def fetch_threshold(n_authorities: int) -> int:
    """An authority's background fetch: (N − 1) // 2 + 1 over its peers only (self excluded)."""
    return (n_authorities - 1) // 2 + 1


@dataclass
class TallyResult:
    entries: list[MixDescriptor]  # consensus descriptors, ascending identity key
    parameters: VotingParameters
    counted: list[bytes]  # authorities whose votes counted, ascending
    skipped: dict[bytes, str] = field(default_factory=dict)  # pk -> why its vote did not count


def _counted_votes(epoch: int, votes: Mapping[bytes, bytes], reveals: Mapping[bytes, bytes],
                   now: float | None, skipped: dict[bytes, str]) -> dict:
    """The votes that count, in the reference's order of checks: the author's reveal must open
    the vote's commit (`srv.valid_reveals`), then the vote must still verify and decode."""
    opened, unopened = valid_reveals({pk: vote_commit(raw) for pk, raw in votes.items()},
                                     reveals)
    skipped.update(unopened)
    counted = {}
    for pk in sorted(opened):
        try:
            doc = parse_vote(votes[pk], pk, now)
        except VoteError as exc:
            skipped[pk] = f"failed to decode: {exc}"
            continue
        if doc.epoch != epoch:
            skipped[pk] = f"vote is for epoch {doc.epoch}"
            continue
        counted[pk] = doc
    return counted


def _consensus_entries(epoch: int, counted: dict, threshold: int,
                       now: float | None) -> list[MixDescriptor]:
    counts: dict[bytes, int] = {}
    for doc in counted.values():
        for desc in doc.all_nodes():
            counts[desc.raw] = counts.get(desc.raw, 0) + 1
    entries = []
    for raw in sorted(raw for raw, count in counts.items() if count >= threshold):
        try:
            verifier = get_verifier_from_descriptor(raw, now)
            entries.append(verify_and_parse_descriptor(verifier, raw, epoch, now))
        except DescriptorError as exc:
            raise TallyError(str(exc)) from None
    entries.sort(key=lambda d: bytes(d.identity_key))
    return entries


def _winning_parameters(counted: dict, threshold: int, dissent: int) -> VotingParameters:
    groups: dict[tuple, list[VotingParameters]] = {}
    for doc in counted.values():
        params = VotingParameters.of(doc)
        groups.setdefault(params.tally_key(), []).append(params)
    # The reference visits the groups in random order and may report a partition before it
    # reaches the winner; looking for the winner first yields the same document, never a
    # spurious failure. Without a winner its verdict does not depend on the order.
    for members in groups.values():
        if len(members) >= threshold:
            return members[0]
    if any(len(members) >= dissent for members in groups.values()):
        raise TallyError("a consensus partition")
    raise TallyError("consensus failure")


def tally_votes(epoch: int, votes: Mapping[bytes, bytes], reveals: Mapping[bytes, bytes],
                n_authorities: int, now: float | None = None) -> TallyResult:
    """Tally the stored votes of `epoch`.

    `votes`: pk -> raw vote certificate (own included); `reveals`: pk -> 40-byte reveal (own
    raw, peers' certified payloads); `n_authorities` = configured peers + 1. A vote counts if it
    still verifies (an expired one is skipped) and its author's reveal opens its commit.
    Raises TallyError (`no votes for epoch`, `not enough votes for epoch`, a descriptor error,
    `a consensus partition`, `consensus failure`)."""
    threshold = authority_threshold(n_authorities)
    if not votes:
        raise TallyError(f"no votes for epoch {epoch}")
    # Counted before any vote is discarded, as the reference does (only the text differs).
    if len(votes) < threshold:
        raise TallyError(f"not enough votes for epoch {epoch}")
    skipped: dict[bytes, str] = {}
    counted = _counted_votes(epoch, votes, reveals, now, skipped)
    entries = _consensus_entries(epoch, counted, threshold, now)
    parameters = _winning_parameters(counted, threshold, dissent_bound(n_authorities))
    return TallyResult(entries=entries, parameters=parameters, counted=sorted(counted),
                       skipped=skipped)
