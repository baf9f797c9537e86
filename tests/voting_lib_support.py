"""Builders for the voting library tests: the reference vectors' keys, descriptors, votes and
reveals (tests/vectors/voting/*.json), all deterministic."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from katzenpost.pki import cert
from katzenpost.pki.descriptor import (
    MixDescriptor,
    get_verifier_from_descriptor,
    verify_and_parse_descriptor,
)
from katzenpost.voting import consensus, srv, vote

VECTORS = Path(__file__).parent / "vectors" / "voting"
EPOCH = 123456
EXPIRATION = 18934214400  # the vectors' certificates never expire
NOW = 1_700_000_000.0  # any time before EXPIRATION


def load(name: str) -> dict:
    return json.loads((VECTORS / f"{name}.json").read_text())


def ed_public(seed: bytes) -> bytes:
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def x_public(scalar: bytes) -> bytes:
    return x25519.X25519PrivateKey.from_private_bytes(scalar).public_key().public_bytes_raw()


def mix_descriptor(i: int, *, expiration: int = EXPIRATION, port: int | None = None,
                   seed: bytes | None = None) -> MixDescriptor:
    """mix<i> of the vectors (identity seed 32 x (0x10+i)), signed and parsed for EPOCH."""
    seed = seed or bytes([0x10 + i]) * 32
    desc = MixDescriptor(
        name=f"mix{i}", identity_key=ed_public(seed), link_key=x_public(bytes([0x20 + i]) * 32),
        mix_keys={EPOCH + k: x_public(bytes([0x30 + 0x10 * k + i]) * 32) for k in range(3)},
        addresses={"tcp4": [f"127.0.0.1:{port or 30000 + i}"]}, layer=0)
    raw = cert.sign(seed, desc.to_json(), expiration, NOW)
    return verify_and_parse_descriptor(desc.identity_key, raw, EPOCH, NOW)


@lru_cache(maxsize=None)
def _provider_raw() -> bytes:
    return bytes.fromhex(load("documents")["provider1_certificate_hex"])


def provider_descriptor() -> MixDescriptor:
    raw = _provider_raw()
    return verify_and_parse_descriptor(get_verifier_from_descriptor(raw, NOW), raw, EPOCH, NOW)


def vector_descriptors() -> list[MixDescriptor]:
    return [mix_descriptor(1), mix_descriptor(2), mix_descriptor(3), provider_descriptor()]


def default_parameters(**overrides) -> vote.VotingParameters:
    fields = dict(load("documents")["parameters"])
    fields.update(overrides)
    return vote.VotingParameters(**fields)


class Authority:
    """One of A1..A3: identity seed, pk, and the commit/reveal of the vectors."""

    def __init__(self, entry: dict) -> None:
        self.name = entry["name"]
        self.seed = bytes.fromhex(entry["seed_hex"])
        self.pk = ed_public(self.seed)
        self.commit, self.reveal = srv.commit_and_reveal(EPOCH, bytes.fromhex(entry["rn_hex"]))

    def vote(self, descriptors=None, parameters=None, *, prior=None, expiration=EXPIRATION,
             layers: int = 3) -> bytes:
        doc = vote.build_vote(EPOCH, descriptors if descriptors is not None
                              else vector_descriptors(), parameters or default_parameters(),
                              self.commit, genesis_epoch=EPOCH, prior_shared_random=prior,
                              layers=layers)
        return cert.sign(self.seed, doc.to_json(), expiration, NOW)


def authorities(n: int = 3) -> list[Authority]:
    """A1..A3 of the vectors, then X4, X5, ... with made-up seeds."""
    entries = load("srv")["authorities"] + [
        {"name": f"X{i}", "seed_hex": bytes([0x70 + i] * 32).hex(),
         "rn_hex": bytes([0x80 + i] * 32).hex()} for i in range(4, n + 1)]
    return [Authority(entry) for entry in entries[:n]]


def votes_and_reveals(auths, **vote_kwargs) -> tuple[dict, dict]:
    return ({a.pk: a.vote(**vote_kwargs) for a in auths}, {a.pk: a.reveal for a in auths})


def tabulate(auth: Authority, votes: dict, reveals: dict, **overrides):
    """`consensus.tabulate` at `auth` with the vectors' settings (N = 3, 3 layers, genesis)."""
    kwargs = dict(identity_private=auth.seed, n_authorities=3, layers=3, genesis_epoch=EPOCH,
                  prior_shared_random=None, previous=None, expiration=EXPIRATION, period=1200,
                  now=NOW)
    kwargs.update(overrides)
    return consensus.tabulate(EPOCH, votes, reveals, **kwargs)
