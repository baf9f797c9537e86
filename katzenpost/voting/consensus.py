"""The consensus document of the voting authorities: building it byte-identically across
signers, its certificate and Expiration rule, exchanging and combining signatures, and the
threshold acceptance check of nodes and clients (Katzenpost voting authority, consensus).

Pure: the tally result, keys, the previous document and the time are arguments.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from katzenpost.pki import cert
from katzenpost.pki.document import Document, DocumentError, verify_and_parse_document
from katzenpost.voting.errors import ConsensusError, TallyError, TopologyError
from katzenpost.voting.srv import SRV_LEN, next_prior_shared_random, shared_random_value
from katzenpost.voting.tally import TallyResult, authority_threshold, tally_votes
from katzenpost.voting.topology import build_topology
from katzenpost.voting.vote import (
    VotingParameters,
    certificate_lifetime,
    split_descriptors,
    vote_commit,
)


def consensus_expiration(voting_epoch: int, clock) -> int:
    """The consensus certificate's Expiration, from the schedule rather than the clock:
    start(voting_epoch − 1) + 3P/4 + 3P + 600.

    The reference signs with floor(wall clock) + 3P + 600 at the 3P/4 wake-up, so this equals
    its value whenever a peer signs within the first second after the deadline; signatures
    only combine when the Expiration (part of the signed message) is identical."""
    if voting_epoch < 1:
        raise ConsensusError(f"voting/consensus: invalid voting epoch {voting_epoch}")
    period = clock.period
    return (clock.epoch_start(voting_epoch - 1) + (3 * period) // 4
            + certificate_lifetime(period))


def build_consensus(epoch: int, tally: TallyResult, srv: bytes, *, genesis_epoch: int,
                    prior_shared_random: Sequence[bytes], layers: int,
                    previous: Document | None = None) -> Document:
    """The consensus document for `epoch` (unsigned), identical at every authority that saw the
    same votes, reveals and previous document.

    Providers are the Layer-255 entries and the mixes the others, each in ascending
    identity-key order; the topology is laid out with the SRV as key (continuity from
    `previous`, the held document for epoch-1, else random). SharedRandomCommit is null."""
    if len(srv) != SRV_LEN:
        raise ConsensusError(f"voting/consensus: SRV must be {SRV_LEN} bytes")
    mixes, providers = split_descriptors(tally.entries)
    topology = build_topology(mixes, layers, bytes(srv),
                              previous.topology if previous is not None else None)
    return Document(epoch=epoch, genesis_epoch=genesis_epoch, topology=topology,
                    providers=providers, shared_random_commit=None,
                    shared_random_value=bytes(srv),
                    prior_shared_random=[bytes(v) for v in prior_shared_random],
                    **VotingParameters.of(tally.parameters).as_fields())


def sign_consensus(identity_private, doc: Document, expiration: int,
                   now: float | None = None) -> bytes:
    """This authority's single-signature consensus certificate (sent to peers as Vote #2).

    Not checked for well-formedness (as the reference): a document with an empty layer is
    signed, and then fails to parse when signatures are combined."""
    try:
        return cert.sign(identity_private, doc.to_json(), expiration, now)
    except (cert.CertificateError, DocumentError) as exc:
        raise ConsensusError(f"voting/consensus: signing the consensus failed: {exc}") from None


@dataclass
class Tabulation:
    """What tabulating one epoch produced. `srv` and `prior_shared_random` are updated even when
    the tally fails (`error` set, no document)."""

    epoch: int
    srv: bytes
    prior_shared_random: list[bytes]
    tally: TallyResult | None = None
    document: Document | None = None
    certificate: bytes | None = None
    error: str | None = None
    skipped: dict[bytes, str] = field(default_factory=dict)


def tabulate(epoch: int, votes: Mapping[bytes, bytes], reveals: Mapping[bytes, bytes], *,
             identity_private, n_authorities: int, layers: int, genesis_epoch: int,
             prior_shared_random: Sequence[bytes] | None, previous: Document | None,
             expiration: int, period: int, now: float | None = None) -> Tabulation:
    """The 3P/4 step: SRV, PriorSharedRandom, tally, consensus document and own signature.

    `votes`: pk -> raw vote certificate (own included); `reveals`: pk -> reveal; `previous`:
    the held document for epoch-1 (chains the SRV and keeps layers); `expiration` from
    `consensus_expiration`. Raises SharedRandomError when there are no votes at all (nothing
    changes); a failed tally, layout or signature is reported in `Tabulation.error`."""
    commits = {pk: vote_commit(raw) for pk, raw in votes.items()}
    srv = shared_random_value(epoch, commits, reveals,
                              previous.shared_random_value if previous is not None else None)
    prior = next_prior_shared_random(epoch, genesis_epoch, srv, prior_shared_random, period)
    result = Tabulation(epoch=epoch, srv=srv, prior_shared_random=prior)
    try:
        result.tally = tally_votes(epoch, votes, reveals, n_authorities, now)
    except TallyError as exc:
        result.error = str(exc)
        return result
    result.skipped = dict(result.tally.skipped)
    try:
        result.document = build_consensus(epoch, result.tally, srv, genesis_epoch=genesis_epoch,
                                          prior_shared_random=prior, layers=layers,
                                          previous=previous)
        result.certificate = sign_consensus(identity_private, result.document, expiration, now)
    except (TopologyError, ConsensusError) as exc:
        result.document, result.error = None, str(exc)
    return result


# --- signatures ------------------------------------------------------------------------------

def signature_of(raw: bytes, signer: bytes, now: float | None = None) -> cert.Signature:
    """The signature by `signer` in a certificate (a peer's signed consensus)."""
    try:
        signatures = cert.get_signatures(raw, now)
    except cert.CertificateError as exc:
        raise ConsensusError(f"voting/consensus: {exc}") from None
    for sig in signatures:
        if sig.identity == bytes(signer):
            return sig
    raise ConsensusError("voting/consensus: no signature by the expected identity")


def add_peer_signature(base: bytes, peer_certificate: bytes, peer: bytes,
                       now: float | None = None) -> bytes:
    """`base` with `peer`'s signature taken from `peer_certificate` added. Raises
    ConsensusError if it signs another payload or Expiration, or duplicates one present."""
    signature = signature_of(peer_certificate, peer, now)
    try:
        return cert.add_signature_object(base, signature, now)
    except cert.CertificateError as exc:
        raise ConsensusError(f"voting/consensus: {exc}") from None


@dataclass
class AcceptedConsensus:
    raw: bytes  # the certificate as accepted (serve these bytes)
    document: Document
    good: list[bytes]  # verifiers whose signature verified, in verifier order
    bad: list[bytes] = field(default_factory=list)


def verify_consensus(raw: bytes, verifiers: Sequence[bytes], threshold: int,
                     epoch: int | None, now: float | None = None) -> AcceptedConsensus:
    """Accept a consensus certificate: at least `threshold` of `verifiers` signed it, it parses
    as a valid document (checked with the first good verifier, which re-verifies every
    descriptor) and its Epoch is `epoch` (None: any epoch, as when reading a cached
    document). Raises ConsensusError.

    Nodes and clients pass their configured authorities with `client_threshold(n)`; an
    authority restoring or combining passes peers + self with `authority_threshold(N)`."""
    keys = [bytes(k) for k in verifiers]
    try:
        _, good, bad = cert.verify_threshold(keys, threshold, raw, now)
    except cert.CertificateError as exc:
        raise ConsensusError(f"voting/consensus: invalid consensus document: {exc}") from None
    try:
        doc = verify_and_parse_document(raw, good[0], now)
    except DocumentError as exc:
        raise ConsensusError(f"voting/consensus: invalid consensus document: {exc}") from None
    if epoch is not None and doc.epoch != epoch:
        raise ConsensusError(f"voting/consensus: consensus document for WRONG epoch: {doc.epoch}")
    return AcceptedConsensus(raw=bytes(raw), document=doc, good=good, bad=bad)


def combine_signatures(epoch: int, certificates: Mapping[bytes, bytes],
                       verifiers: Sequence[bytes], now: float | None = None,
                       prefer: bytes | None = None) -> AcceptedConsensus:
    """The 7P/8 step: find a consensus certificate with a threshold of signatures.

    `certificates`: pk -> that authority's single-signed consensus (own included);
    `verifiers`: all configured peers plus self. Each certificate in turn (`prefer` first, then
    ascending pk; the reference's order is random) collects every other authority's signature
    that signs the same message; the first that reaches the threshold and parses is returned.
    Raises ConsensusError (`No certificates for epoch`, `No consensus found for epoch`)."""
    if not certificates:
        raise ConsensusError(f"No certificates for epoch {epoch}")
    threshold = authority_threshold(len(verifiers))
    order = sorted(certificates, key=lambda pk: (bytes(pk) != prefer, bytes(pk)))
    for base_pk in order:
        combined = certificates[base_pk]
        for other_pk in order:
            if other_pk == base_pk:
                continue
            try:
                combined = add_peer_signature(combined, certificates[other_pk], other_pk, now)
            except ConsensusError:
                continue  # another payload or Expiration, or already present
        try:
            return verify_consensus(combined, verifiers, threshold, epoch, now)
        except ConsensusError:
            continue
    raise ConsensusError(f"No consensus found for epoch {epoch}")

