"""An authority's vote (Katzenpost voting authority, votes): the network parameters it votes
for, building and signing its own vote document, and checking a peer's.

A vote is an ordinary PKI document certificate with a 40-byte SharedRandomCommit, an all-zero
SharedRandomValue, and every descriptor the authority holds for the epoch. Pure: keys, times and
descriptors are arguments.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Iterable, Sequence

from katzenpost.pki import canonical_json as cj
from katzenpost.pki import cert
from katzenpost.pki.descriptor import LAYER_PROVIDER, MixDescriptor
from katzenpost.pki.document import (
    SHARED_RANDOM_COMMIT_LEN,
    SHARED_RANDOM_VALUE_LEN,
    Document,
    DocumentError,
    verify_and_parse_document,
)
from katzenpost.voting.errors import VoteError
from katzenpost.voting.topology import build_topology

# The tallied parameter tuple, named as the Document (and the authority config) name them.
PARAMETER_FIELDS = (
    "send_rate_per_minute", "mu", "mu_max_delay", "lambda_p", "lambda_p_max_delay",
    "lambda_l", "lambda_l_max_delay", "lambda_d", "lambda_d_max_delay",
    "lambda_m", "lambda_m_max_delay",
)
_FLOAT_FIELDS = frozenset({"mu", "lambda_p", "lambda_l", "lambda_d", "lambda_m"})
# Votes, and the consensus, expire 3 periods and 10 minutes after signing (also when warped).
EXPIRATION_MARGIN = 600


@dataclass(frozen=True)
class VotingParameters:
    """The eleven parameter fields every vote carries and the tally agrees on."""

    send_rate_per_minute: int
    mu: float
    mu_max_delay: int
    lambda_p: float
    lambda_p_max_delay: int
    lambda_l: float
    lambda_l_max_delay: int
    lambda_d: float
    lambda_d_max_delay: int
    lambda_m: float
    lambda_m_max_delay: int

    @classmethod
    def of(cls, source) -> "VotingParameters":
        """From anything with these attributes: a Document, the authority config's Parameters."""
        try:
            values = {name: getattr(source, name) for name in PARAMETER_FIELDS}
        except AttributeError as exc:
            raise VoteError(f"voting/vote: parameters lack a field: {exc}") from None
        for name, value in values.items():
            if name in _FLOAT_FIELDS:
                if not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise VoteError(f"voting/vote: {name} must be a finite number")
            elif isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
                raise VoteError(f"voting/vote: {name} must be a uint64")
        return cls(**{name: float(v) if name in _FLOAT_FIELDS else v
                      for name, v in values.items()})

    def as_fields(self) -> dict:
        return {name: getattr(self, name) for name in PARAMETER_FIELDS}

    def tally_key(self) -> tuple:
        """Equality as the reference compares its encoded tuple: integers equal, floats equal
        bit for bit except that +0 and -0 are the same."""
        return tuple(struct.pack("<d", getattr(self, name) + 0.0) if name in _FLOAT_FIELDS
                     else getattr(self, name) for name in PARAMETER_FIELDS)


def certificate_lifetime(period: int) -> int:
    """Seconds a vote or consensus certificate stays valid: 3P + 10 min (4200 s; 960 s when
    warped to 120 s epochs)."""
    return 3 * period + EXPIRATION_MARGIN


def vote_expiration(now: float, period: int) -> int:
    return int(math.floor(now)) + certificate_lifetime(period)


def split_descriptors(descriptors: Iterable[MixDescriptor]
                      ) -> tuple[list[MixDescriptor], list[MixDescriptor]]:
    """(mixes, providers), each in ascending identity-key order (providers: Layer 255)."""
    ordered = sorted(descriptors, key=lambda d: bytes(d.identity_key))
    providers = [d for d in ordered if d.layer == LAYER_PROVIDER]
    mixes = [d for d in ordered if d.layer != LAYER_PROVIDER]
    return mixes, providers


def build_vote(epoch: int, descriptors: Iterable[MixDescriptor], parameters, commit: bytes, *,
               genesis_epoch: int, prior_shared_random: Sequence[bytes] | None, layers: int,
               previous: Document | None = None) -> Document:
    """This authority's vote for `epoch` (unsigned).

    `descriptors` are all the verified descriptors held for `epoch` (each with its `raw`
    certificate); `parameters` this authority's configured parameters; `commit` from
    `srv.commit_and_reveal`; `prior_shared_random` None (written `null`) or a list; `previous`
    the held document for epoch-1, if any. The topology is laid out with a zero key: it is
    not tallied but must be well formed."""
    if len(commit) != SHARED_RANDOM_COMMIT_LEN:
        raise VoteError(f"voting/vote: commit must be {SHARED_RANDOM_COMMIT_LEN} bytes")
    mixes, providers = split_descriptors(descriptors)
    topology = build_topology(mixes, layers, bytes(SHARED_RANDOM_VALUE_LEN),
                              previous.topology if previous is not None else None)
    prior = None if prior_shared_random is None else [bytes(v) for v in prior_shared_random]
    return Document(epoch=epoch, genesis_epoch=genesis_epoch, topology=topology,
                    providers=providers, shared_random_commit=bytes(commit),
                    shared_random_value=bytes(SHARED_RANDOM_VALUE_LEN),
                    prior_shared_random=prior, **VotingParameters.of(parameters).as_fields())


def sign_vote(identity_private, vote: Document, now: float, period: int) -> bytes:
    """The vote certificate (Expiration = floor(now) + 3P + 600), re-verified as a peer would
    check it; a vote that would be refused raises VoteError instead of being sent."""
    try:
        raw = cert.sign(identity_private, vote.to_json(), vote_expiration(now, period), now)
        signer = cert.get_signatures(raw, now)[0].identity
    except (cert.CertificateError, DocumentError) as exc:
        raise VoteError(f"voting/vote: signing vote failed: {exc}") from None
    parse_vote(raw, signer, now)
    return raw


def parse_vote(raw: bytes, signer: bytes, now: float | None = None) -> Document:
    """A peer's vote (or its signed consensus) verified as the reference does on receipt: the
    signer's signature, not expired, a valid and well-formed document whose descriptors are all
    valid for its Epoch. Raises VoteError."""
    try:
        return verify_and_parse_document(raw, bytes(signer), now)
    except DocumentError as exc:
        raise VoteError(f"voting/vote: Vote failed verification: {exc}") from None


def vote_commit(raw: bytes) -> bytes | None:
    """The SharedRandomCommit of a stored vote certificate, read without re-verifying (the vote
    was verified on receipt; the SRV uses it even if it has since expired). None if absent or
    undecodable."""
    try:
        payload = cert.decode(raw).certified
        value = cj.get_bytes(cj.loads(payload, "vote"), "SharedRandomCommit", "vote")
    except (cert.CertificateError, cj.CanonicalJSONError):
        return None
    return value or None
