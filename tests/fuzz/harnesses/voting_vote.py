"""A peer authority's Vote payload and a signed consensus (`voting.vote.parse_vote`,
`voting.tally.tally_votes`, `voting.consensus.verify_consensus`, `vote_commit`).

Modes: raw certificate bytes; a fuzzed JSON document signed by the peer's key (the fuzzer reaches
the document rules and, for a vote that passes them, the tally and the consensus acceptance).
Documented outcome: a `Document` / `TallyResult` / `AcceptedConsensus`, or a `VotingError`
subclass (`VoteError`, `TallyError`, `ConsensusError`, `SharedRandomError`); `vote_commit`
returns bytes or None and never raises."""
from katzenpost.pki import cert
from katzenpost.voting import consensus, srv, tally, vote
from katzenpost.voting.errors import VotingError
from tests.fuzz.harnesses.pki_document import sample_descriptor, sample_document
from tests.fuzz.material import (AUTHORITY_SEED, EPOCH, EXPIRATION, NOW, certificate_input,
                                 derive, ed25519_public)

MAX_LEN = 16384
PEER_PUBLIC = ed25519_public(AUTHORITY_SEED)
COMMIT, REVEAL = srv.commit_and_reveal(EPOCH, derive("voting random"))


def _check(raw: bytes) -> None:
    commit = vote.vote_commit(raw)
    assert commit is None or isinstance(commit, bytes)
    try:
        doc = vote.parse_vote(raw, PEER_PUBLIC, NOW)
    except VotingError:
        return
    assert doc.epoch >= 0
    try:
        tally.tally_votes(doc.epoch, {PEER_PUBLIC: raw}, {PEER_PUBLIC: REVEAL}, 1, NOW)
    except VotingError:
        pass
    try:
        accepted = consensus.verify_consensus(raw, [PEER_PUBLIC], 1, None, NOW)
    except VotingError:
        return
    assert accepted.document == doc


def TestOneInput(data: bytes) -> None:
    raw = certificate_input(data, AUTHORITY_SEED)
    if raw is not None:
        _check(raw)


def seeds():
    descriptors = [sample_descriptor(f"mix{i}", 0) for i in range(3)]
    descriptors.append(sample_descriptor("provider1", 255))
    parameters = vote.VotingParameters.of(sample_document())
    doc = vote.build_vote(EPOCH, descriptors, parameters, COMMIT, genesis_epoch=EPOCH,
                          prior_shared_random=None, layers=3)
    payload = doc.to_json()
    return {"vote-raw": b"\x00" + cert.sign(AUTHORITY_SEED, payload, EXPIRATION, now=NOW),
            "vote-signed": b"\x01" + payload,
            "document-signed": b"\x01" + sample_document().to_json()}
