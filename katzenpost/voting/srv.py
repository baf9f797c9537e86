"""The shared random value of the voting authorities: commit, reveal, signed reveal, SRV, and
the PriorSharedRandom / GenesisEpoch rules (Katzenpost voting authority, shared random).

Each authority commits to SHA3-256(reveal) inside its vote, reveals after the votes, and every
authority hashes the valid reveals into the epoch's SRV, chained to the previous consensus'
SRV. Pure functions: random bytes, keys, times and stored tables are arguments.
"""
from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

from katzenpost.pki import cert
from katzenpost.pki.document import Document
from katzenpost.voting.errors import RevealError, SharedRandomError

RANDOM_LEN = 32  # RN, the authority's secret random bytes
REVEAL_LEN = 40  # BE64(epoch) || SHA3-256(RN)
COMMIT_LEN = 40  # BE64(epoch) || SHA3-256(reveal)
SRV_LEN = 32
EPOCH_PREFIX_LEN = 8
SRV_LABEL = b"shared-random"
SECONDS_PER_WEEK = 7 * 24 * 3600
_UINT64 = 1 << 64


def _be64(epoch: int) -> bytes:
    if not 0 <= epoch < _UINT64:
        raise RevealError(f"voting/srv: epoch {epoch} is not a uint64")
    return epoch.to_bytes(8, "big")


def make_reveal(epoch: int, random_bytes: bytes) -> bytes:
    """The 40-byte reveal for `epoch` from 32 secret random bytes."""
    if len(random_bytes) != RANDOM_LEN:
        raise RevealError(f"voting/srv: random value must be {RANDOM_LEN} bytes")
    return _be64(epoch) + hashlib.sha3_256(bytes(random_bytes)).digest()


def make_commit(reveal: bytes) -> bytes:
    """The 40-byte commit (the vote's SharedRandomCommit) of a 40-byte reveal."""
    if len(reveal) != REVEAL_LEN:
        raise RevealError(f"voting/srv: reveal must be {REVEAL_LEN} bytes")
    return bytes(reveal[:EPOCH_PREFIX_LEN]) + hashlib.sha3_256(bytes(reveal)).digest()


def commit_and_reveal(epoch: int, random_bytes: bytes) -> tuple[bytes, bytes]:
    """(commit, reveal) for `epoch`; the caller draws `random_bytes` from os.urandom."""
    reveal = make_reveal(epoch, random_bytes)
    return make_commit(reveal), reveal


def reveal_epoch(payload: bytes) -> int:
    """The epoch a (certified) reveal payload names: BE64 of its first 8 bytes."""
    if len(payload) < EPOCH_PREFIX_LEN:
        raise RevealError(f"voting/srv: reveal of {len(payload)} bytes has no epoch")
    return int.from_bytes(payload[:EPOCH_PREFIX_LEN], "big")


def sign_reveal(identity_private, reveal: bytes, expiration: int,
                now: float | None = None) -> bytes:
    """The Reveal command's payload: a certificate over the 40 reveal bytes.

    `expiration` is the end of the current epoch (`reveal_expiration`)."""
    if len(reveal) != REVEAL_LEN:
        raise RevealError(f"voting/srv: reveal must be {REVEAL_LEN} bytes")
    return cert.sign(identity_private, reveal, expiration, now)


def reveal_expiration(clock, now: float) -> int:
    """floor(now + till): the Unix second at which the current epoch ends."""
    epoch, _, _ = clock.epoch_at(now)
    return clock.epoch_start(epoch + 1)


def open_signed_reveal(raw: bytes, signer: bytes, now: float | None = None) -> tuple[int, bytes]:
    """(epoch, certified payload) of a peer's signed reveal, verified with `signer`.

    The epoch comes from the certified bytes (the command's own epoch field is ignored by the
    reference). Any length of at least 8 bytes is returned as is: the length rule applies when
    the reveal is checked against the commit (`check_reveal`). Raises RevealError."""
    try:
        payload = cert.verify(bytes(signer), raw, now)
    except cert.CertificateError as exc:
        raise RevealError(f"voting/srv: reveal does not verify: {exc}") from None
    return reveal_epoch(payload), payload


def check_reveal(reveal: bytes, commit: bytes | None) -> None:
    """Raise RevealError unless `reveal` opens `commit` (same epoch, SHA3-256 matches)."""
    if len(reveal) != REVEAL_LEN:
        raise RevealError(f"voting/srv: incorrect Reveal length {len(reveal)}")
    if commit is None or len(commit) != COMMIT_LEN:
        # The reference crashes on a short commit; here such a vote simply cannot be opened.
        raise RevealError("voting/srv: the vote carries no valid SharedRandomCommit")
    if reveal[:EPOCH_PREFIX_LEN] != commit[:EPOCH_PREFIX_LEN]:
        raise RevealError("voting/srv: incorrect Reveal! (epoch differs from the commit)")
    if hashlib.sha3_256(bytes(reveal)).digest() != commit[EPOCH_PREFIX_LEN:]:
        raise RevealError("voting/srv: incorrect Reveal! (hash differs from the commit)")


def valid_reveals(commits: Mapping[bytes, bytes | None],
                  reveals: Mapping[bytes, bytes]) -> tuple[dict[bytes, bytes], dict[bytes, str]]:
    """({pk: reveal} that open their vote's commit, {pk: why skipped} for the other voters).

    `commits` holds one entry per stored vote (pk -> its SharedRandomCommit); `reveals` the
    stored reveals by pk. A reveal without a vote is ignored."""
    good: dict[bytes, bytes] = {}
    skipped: dict[bytes, str] = {}
    for pk, commit in commits.items():
        reveal = reveals.get(pk)
        if reveal is None:
            skipped[pk] = "failed to reveal"
            continue
        try:
            check_reveal(reveal, commit)
        except RevealError as exc:
            skipped[pk] = str(exc)
            continue
        good[pk] = bytes(reveal)
    return good, skipped


def shared_random_value(epoch: int, commits: Mapping[bytes, bytes | None],
                        reveals: Mapping[bytes, bytes], previous_srv: bytes | None) -> bytes:
    """The SRV of `epoch`: SHA3-256("shared-random" ‖ BE64(epoch) ‖ (pk ‖ reveal)… ‖ prev).

    The valid (pk, reveal) pairs are hashed in descending bytewise order of the reveal; prev is
    the SharedRandomValue of the held document for epoch-1, or 32 zero bytes without one.
    Raises SharedRandomError when no vote is stored."""
    if not commits:
        raise SharedRandomError(
            f"authority: No votes present, cannot calculate a shared random for Epoch {epoch}")
    good, _ = valid_reveals(commits, reveals)
    chained = bytes(SRV_LEN) if previous_srv is None else bytes(previous_srv)
    if len(chained) != SRV_LEN:
        raise SharedRandomError("voting/srv: the previous SharedRandomValue is not 32 bytes")
    digest = hashlib.sha3_256(SRV_LABEL + _be64(epoch))
    for pk, reveal in sorted(good.items(), key=lambda item: item[1], reverse=True):
        digest.update(bytes(pk) + reveal)
    digest.update(chained)
    return digest.digest()


def rotation_period(period: int) -> int:
    """W, one week of epochs: 504 for 20-minute epochs, 5040 for the 2-minute warped ones."""
    return max(1, SECONDS_PER_WEEK // period)


def next_prior_shared_random(epoch: int, genesis_epoch: int, srv: bytes,
                             prior: Sequence[bytes] | None, period: int) -> list[bytes]:
    """PriorSharedRandom after tabulating `epoch`.

    Empty or absent → [srv, srv]; rotated to [srv, prior[0]] when (genesis − epoch) mod 2^64 is
    a multiple of W (the reference's unsigned wrap makes that epoch = genesis or epoch −
    genesis ≡ 16 mod W, kept for byte-identity); otherwise unchanged."""
    if not prior:
        return [bytes(srv), bytes(srv)]
    if ((genesis_epoch - epoch) % _UINT64) % rotation_period(period) == 0:
        return [bytes(srv), bytes(prior[0])]
    return [bytes(value) for value in prior]


def genesis_for_vote(genesis_epoch: int, prior: list[bytes] | None, previous: Document | None,
                     voting_epoch: int) -> tuple[int, list[bytes] | None]:
    """(GenesisEpoch, PriorSharedRandom) to vote with for `voting_epoch`.

    A chain already running (genesis ≠ 0) is kept. Otherwise it is inherited from the held
    document for voting_epoch−1, or restarts at voting_epoch with `prior` left as it is (None
    after a process start, [] after a failed round; the vote encodes them as null and [])."""
    if genesis_epoch != 0:
        return genesis_epoch, prior
    if previous is not None:
        return previous.genesis_epoch, list(previous.prior_shared_random or [])
    return voting_epoch, prior
