"""Helpers shared by the Sphinx tests: vector loading and hand-built headers whose routing
slot is arbitrary (to reach the command-parsing errors behind a valid MAC)."""
import json
import os
from pathlib import Path

import pytest

from katzenpost._core import sphinx as core
from katzenpost.reference import sphinx as ref
from katzenpost.sphinx import geometry as g

VECTORS = Path(__file__).parent / "vectors" / "katzenpost" / "core"


def load_json(relative):
    return json.loads((VECTORS / relative).read_text())


def sphinx_vectors():
    return load_json("sphinx/testdata/sphinx_vectors.json")


def keypair(seed=None):
    private = seed if seed is not None else os.urandom(32)
    return private, ref.public_key(private)


def single_hop_packet(public_key, slot, payload_body, ephemeral=None, tag=bytes(16)):
    """A one-hop packet whose decrypted routing slot is exactly `slot` (82 bytes) and whose
    SPRP plaintext is `tag || payload_body`; built with the reference primitives."""
    assert len(slot) == g.PER_HOP_ROUTING_INFO_LENGTH
    ephemeral = ephemeral or os.urandom(32)
    alpha = ref.public_key(ephemeral)
    return packet_for_secret(alpha, ref.x25519(ephemeral, public_key), slot, payload_body, tag)


def packet_for_secret(alpha, secret, slot, payload_body, tag=bytes(16)):
    keys = ref.kdf(secret)
    padding = os.urandom(g.ROUTING_INFO_LENGTH - g.PER_HOP_ROUTING_INFO_LENGTH)
    stream = ref.stream(keys["header_encryption"], keys["header_encryption_iv"], g.ROUTING_INFO_LENGTH)
    beta = ref.xor(slot + padding, stream)
    gamma = ref.mac(keys["header_mac"], bytes(2) + alpha + beta)
    body = ref.sprp_encrypt(keys["payload_encryption"], keys["header_encryption_iv"], tag + payload_body)
    return bytes(2) + alpha + beta + gamma + body


def counter_rng(seed):
    """A deterministic byte source for creation (`rng`/`filler`): same seed, same stream."""
    counter = [0]

    def read(n):
        out = b""
        while len(out) < n:
            out += ref.sha512_256(seed + counter[0].to_bytes(8, "big"))
            counter[0] += 1
        return out[:n]

    return read


@pytest.fixture(params=["ifma", "libsodium", "openssl"])
def x25519_backend(request):
    """Run a compiled test on each X25519 backend; a missing one is a visible skip (ifma:
    no AVX-512 IFMA or no libcrypto_mb, see core.ifma_status(); libsodium: not installed)."""
    if request.param not in core.available_x25519_backends():
        pytest.skip(f"X25519 backend {request.param} not available: "
                    f"{core.ifma_status() if request.param == 'ifma' else 'libsodium not installed'}")
    before = core.x25519_backend()
    core.set_x25519_backend(request.param)
    yield request.param
    core.set_x25519_backend(before)


@pytest.fixture(params=["aesni", "portable"])
def aez_backend(request):
    """Run a compiled test with each AES-round backend of the AEZ inside _core.sphinx."""
    before = core.aez_backend()
    try:
        core.set_aez_backend(request.param)
    except ValueError:
        pytest.skip(f"AEZ backend {request.param} not available on this CPU")
    yield request.param
    core.set_aez_backend(before)
