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
