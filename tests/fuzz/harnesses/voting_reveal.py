"""A peer authority's Reveal payload (`voting.srv.open_signed_reveal`, `check_reveal`,
`valid_reveals`, `shared_random_value`).

Modes: raw certificate bytes; a fuzzed reveal signed by the peer's key. The opened reveal is
checked against the commit of the peer's vote (fixed) and, with the harness's own reveal,
combined into a shared random value. Documented outcome: (epoch, reveal) or `RevealError`; a
reveal that `check_reveal` accepts is 40 bytes and is counted by `valid_reveals`; the shared
random value is 32 bytes."""
from katzenpost.voting import srv
from katzenpost.voting.errors import RevealError
from tests.fuzz.material import (AUTHORITY_SEED, EPOCH, EXPIRATION, NODE_SEED, NOW,
                                 certificate_input, derive, ed25519_public)

MAX_LEN = 1024
PEER_PUBLIC = ed25519_public(AUTHORITY_SEED)
OWN_PUBLIC = ed25519_public(NODE_SEED)
PEER_COMMIT, PEER_REVEAL = srv.commit_and_reveal(EPOCH, derive("peer random"))
OWN_COMMIT, OWN_REVEAL = srv.commit_and_reveal(EPOCH, derive("own random"))


def _check(raw: bytes) -> None:
    try:
        epoch, reveal = srv.open_signed_reveal(raw, PEER_PUBLIC, NOW)
    except RevealError:
        return
    assert 0 <= epoch < 2**64 and reveal[:8] == epoch.to_bytes(8, "big")
    try:
        srv.check_reveal(reveal, PEER_COMMIT)
        opened = True
    except RevealError:
        opened = False
    commits = {PEER_PUBLIC: PEER_COMMIT, OWN_PUBLIC: OWN_COMMIT}
    good, skipped = srv.valid_reveals(commits, {PEER_PUBLIC: reveal, OWN_PUBLIC: OWN_REVEAL})
    assert (PEER_PUBLIC in good) == opened and OWN_PUBLIC in good, (good, skipped)
    value = srv.shared_random_value(EPOCH, commits, good, None)
    assert len(value) == 32


def TestOneInput(data: bytes) -> None:
    raw = certificate_input(data, AUTHORITY_SEED)
    if raw is not None:
        _check(raw)


def seeds():
    signed = srv.sign_reveal(AUTHORITY_SEED, PEER_REVEAL, EXPIRATION, now=NOW)
    return {"reveal-raw": b"\x00" + signed, "reveal-signed": b"\x01" + PEER_REVEAL,
            "other-epoch": b"\x01" + srv.make_reveal(EPOCH + 1, derive("x")),
            "short": b"\x01" + PEER_REVEAL[:8]}
