"""Fixed keys and clock shared by the harnesses and the seed generator.

Everything is derived from labels, so the committed seeds stay valid for the harnesses that
check them (a certificate signed by AUTHORITY_SEED, a packet for SPHINX_PRIVATE, ...). PKI
harnesses parse at NOW, so committed certificates never expire.
"""
import hashlib


def derive(label: str, length: int = 32) -> bytes:
    return hashlib.shake_256(b"katzenpost fuzz: " + label.encode()).digest(length)


# The mix key every Sphinx harness unwraps with.
SPHINX_PRIVATE = derive("sphinx mix key")
# PKI: the authority's and one node's Ed25519 seeds; the epoch and time certificates are read at.
AUTHORITY_SEED = derive("pki authority")
NODE_SEED = derive("pki node")
EPOCH = 123456
NOW = 1_700_000_000.0
# Link keys of the two handshake sides.
INITIATOR_LINK = derive("wire initiator link")
RESPONDER_LINK = derive("wire responder link")
# The transport key of the wire_frames harness's peer.
FRAME_KEY = derive("wire frame key")


def counter_stream(label: str):
    """A deterministic rng(n) for creation APIs: SHAKE-256 of the label and a counter."""
    counter = [0]

    def read(n: int) -> bytes:
        counter[0] += 1
        return derive(f"{label}:{counter[0]}", n)

    return read
# Certificates the harnesses sign expire long after NOW.
EXPIRATION = int(NOW) + 10 ** 6


def ed25519_public(seed: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def certificate_input(data: bytes, seed: bytes):
    """The certificate a two-mode harness checks: input byte 0 = 0x00, the rest is the raw
    certificate; otherwise the rest is a payload, signed here with `seed` so the fuzzer works
    behind a good signature. None for an empty payload (a certificate cannot carry one)."""
    from katzenpost.pki import cert
    if data[:1] == b"\x00":
        return data[1:]
    if len(data) < 2:
        return None
    return cert.sign(seed, data[1:], EXPIRATION, now=NOW)
