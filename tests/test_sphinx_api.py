"""Sphinx public API: creation round trips, SURBs, deterministic creation against the
reference, X25519 backends and low-order points, and the Cython entry points' argument checks."""
import os

import pytest

import katzenpost.sphinx as sphinx
from katzenpost._core import sphinx as core
from katzenpost.reference import sphinx as ref
from katzenpost.sphinx import NodeDelay, PathHop, Recipient, SphinxError, SURBReply
from katzenpost.sphinx import errors
from katzenpost.sphinx import geometry as g

from sphinx_support import counter_rng, keypair, packet_for_secret, x25519_backend  # noqa: F401 (fixture)


def make_path(n, terminal=None, delay=1000):
    nodes = [keypair() for _ in range(n)]
    terminal = terminal if terminal is not None else [Recipient(os.urandom(64))]
    path = [PathHop(os.urandom(32), pub, [NodeDelay(delay + i)]) for i, (_, pub) in enumerate(nodes)]
    path[-1] = PathHop(path[-1].id, path[-1].public_key, terminal)
    return [priv for priv, _ in nodes], path


def walk(keys, packet, api=sphinx):
    for i, key in enumerate(keys):
        result = api.unwrap(key, packet)
        if i < len(keys) - 1:
            assert result.payload is None and result.packet is not None
            packet = result.packet
    return result


@pytest.mark.parametrize("hops", [1, 2, 3, 4, 5])
def test_forward_round_trip_full_size(hops):
    keys, path = make_path(hops)
    payload = os.urandom(g.FORWARD_PAYLOAD_LENGTH)
    packet = sphinx.new_packet(path, payload)
    assert len(packet) == g.PACKET_LENGTH
    result = walk(keys, packet)
    assert result.payload == payload and result.packet is None
    assert result.commands == path[-1].commands


@pytest.mark.parametrize("hops", [1, 3, 5])
def test_surb_round_trip(hops):
    surb_id = os.urandom(16)
    keys, path = make_path(hops, [Recipient(os.urandom(64)), SURBReply(surb_id)])
    surb, surb_keys = sphinx.new_surb(path)
    assert len(surb) == g.SURB_LENGTH and len(surb_keys) == 64 * (hops + 1)
    payload = os.urandom(g.FORWARD_PAYLOAD_LENGTH)
    packet, first_hop = sphinx.new_packet_from_surb(surb, payload)
    assert first_hop == path[0].id and len(packet) == g.PACKET_LENGTH
    result = walk(keys, packet)
    assert result.commands[-1] == SURBReply(surb_id)
    assert len(result.payload) == g.SPRP_PAYLOAD_LENGTH
    assert sphinx.decrypt_surb_payload(result.payload, surb_keys) == payload


@pytest.mark.parametrize("hops", [1, 2, 5])
def test_creation_is_deterministic_and_matches_reference(hops):
    _, path = make_path(hops, [Recipient(bytes(64)), SURBReply(bytes(16))])
    payload = bytes(range(256)) * 2
    a = sphinx.new_packet(path, payload, rng=counter_rng(b"e"), filler=counter_rng(b"f"))
    b = ref.new_packet(path, payload, rng=counter_rng(b"e"), filler=counter_rng(b"f"))
    assert a == b
    assert a == sphinx.new_packet(path, payload, rng=counter_rng(b"e"), filler=counter_rng(b"f"))
    surb_a = sphinx.new_surb(path, rng=counter_rng(b"s"), filler=counter_rng(b"t"))
    surb_b = ref.new_surb(path, rng=counter_rng(b"s"), filler=counter_rng(b"t"))
    assert surb_a == surb_b
    # SURB key material is read first, then the ephemeral key (as the reference does).
    assert surb_a[0][492:556] == counter_rng(b"s")(64)


def test_filler_is_used_for_unused_hops():
    keys, path = make_path(2)
    calls = []

    def filler(n):
        calls.append(n)
        return bytes(n)

    sphinx.new_packet(path, b"x", filler=filler)
    assert calls == [3 * g.PER_HOP_ROUTING_INFO_LENGTH]
    calls.clear()
    _, path5 = make_path(5)
    sphinx.new_packet(path5, b"x", filler=filler)
    assert calls == []


def test_rng_returning_short_output_is_an_error():
    _, path = make_path(1)
    with pytest.raises(ValueError, match="rng returned 3 bytes"):
        sphinx.new_packet(path, b"", rng=lambda n: b"abc")


@pytest.mark.parametrize("api", [sphinx, ref], ids=["compiled", "reference"])
def test_creation_errors_use_reference_messages(api):
    _, path = make_path(2)
    with pytest.raises(SphinxError, match="^sphinx: invalid path$"):
        api.new_packet([], b"")
    with pytest.raises(SphinxError, match="^sphinx: invalid path$"):
        api.new_packet(make_path(6)[1], b"")
    bad = [PathHop(path[0].id, path[0].public_key, [sphinx.NextNodeHop(bytes(32), bytes(16))]), path[1]]
    with pytest.raises(SphinxError, match="^sphinx: invalid commands, NextNodeHop$"):
        api.new_packet(bad, b"")
    two_recipients = [Recipient(bytes(64)), Recipient(bytes(64))]
    with pytest.raises(SphinxError, match="oversized serialized block"):
        api.new_packet([path[0], PathHop(path[1].id, path[1].public_key, two_recipients)], b"")
    with pytest.raises(SphinxError, match="insufficient remaining capacity"):
        api.new_packet([PathHop(path[0].id, path[0].public_key, [Recipient(bytes(64))]), path[1]], b"")
    with pytest.raises(SphinxError, match="^sphinx: invalid packet, truncated SURB$"):
        api.new_packet_from_surb(bytes(555), b"")
    with pytest.raises(SphinxError, match="^sphinx: invalid SURB decryption keys$"):
        api.decrypt_surb_payload(bytes(100), b"")
    with pytest.raises(SphinxError, match="^sphinx: invalid SURB decryption keys$"):
        api.decrypt_surb_payload(bytes(100), bytes(63))
    with pytest.raises(SphinxError, match="^sphinx: truncated payload$"):
        api.decrypt_surb_payload(bytes(15), bytes(64))
    with pytest.raises(SphinxError, match="^sphinx: payload auth failed$"):
        api.decrypt_surb_payload(bytes(100), bytes(64) + b"\x01" * 64)


@pytest.mark.parametrize("api", [sphinx, ref], ids=["compiled", "reference"])
def test_hops_are_checked_last_hop_first_like_the_reference(api):
    """Go serializes the hops' commands from the terminal hop backwards: with two bad hops,
    the later hop's error is the one reported."""
    _, path = make_path(3)
    oversized_first = PathHop(path[0].id, path[0].public_key, [Recipient(bytes(64))])
    next_hop_last = PathHop(path[2].id, path[2].public_key, [sphinx.NextNodeHop(bytes(32), bytes(16))])
    with pytest.raises(SphinxError, match="^sphinx: invalid commands, NextNodeHop$"):
        api.new_packet([oversized_first, path[1], next_hop_last], b"")
    with pytest.raises(SphinxError, match="insufficient remaining capacity"):
        api.new_packet([oversized_first, path[1], path[2]], b"")


def test_bad_path_fields_are_value_errors():
    _, path = make_path(1)
    with pytest.raises(ValueError, match=r"path\[0\].id must be 32 bytes"):
        sphinx.new_packet([PathHop(b"short", path[0].public_key, path[0].commands)], b"")
    with pytest.raises(ValueError, match=r"path\[0\].public_key must be 32 bytes"):
        sphinx.new_packet([PathHop(path[0].id, b"", path[0].commands)], b"")
    with pytest.raises(ValueError, match="private key must be 32 bytes"):
        sphinx.unwrap(bytes(31), bytes(600))
    with pytest.raises(TypeError):
        sphinx.new_packet([PathHop(path[0].id, path[0].public_key, ["not a command"])], b"")


# ---------------------------------------------------------------- X25519

RFC7748 = [
    ("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
     "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
     "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"),
    ("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
     "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
     "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957"),
    ("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",  # Alice, X25519(a, 9)
     "0900000000000000000000000000000000000000000000000000000000000000",
     "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"),
    ("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",  # Alice with Bob
     "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
     "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"),
]

LOW_ORDER = [
    bytes(32),
    bytes([1]) + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes([0xEC]) + b"\xff" * 30 + b"\x7f",  # p - 1
    bytes([0xED]) + b"\xff" * 30 + b"\x7f",  # p
    bytes([0xEE]) + b"\xff" * 30 + b"\x7f",  # p + 1
]


def test_x25519_rfc7748_vectors(x25519_backend):
    for scalar, point, out in RFC7748:
        assert core.x25519(bytes.fromhex(scalar), bytes.fromhex(point)) == bytes.fromhex(out)
        assert ref.x25519(bytes.fromhex(scalar), bytes.fromhex(point)) == bytes.fromhex(out)


def test_x25519_matches_pyca_including_top_bit(x25519_backend):
    for _ in range(20):
        scalar, point = os.urandom(32), os.urandom(32)  # top bit of u set half the time
        assert core.x25519(scalar, point) == ref.x25519(scalar, point)


def test_x25519_low_order_points_give_zeros(x25519_backend):
    """Every small-order u, also with the ignored top bit set, gives 32 zero bytes and no
    error (OpenSSL refuses these and the core substitutes the zeros Go returns)."""
    with_top_bit = [point[:31] + bytes([point[31] | 0x80]) for point in LOW_ORDER]
    for point in LOW_ORDER + with_top_bit:
        assert core.x25519(os.urandom(32), point) == bytes(32)
        assert ref.x25519(os.urandom(32), point) == bytes(32)


def test_unknown_x25519_backend_is_refused():
    with pytest.raises(ValueError, match="not available"):
        core.set_x25519_backend("nacl")


def test_openssl_fallback_is_always_available_and_listing_changes_nothing():
    before = core.x25519_backend()
    assert "openssl" in core.available_x25519_backends()
    assert core.x25519_backend() == before
    assert set(core.available_x25519_backends()) <= {"ifma", "libsodium", "openssl"}


def test_libsodium_loader_refuses_what_is_not_libsodium():
    """A missing library or one without the two symbols is refused (and closed), not used."""
    assert core.probe_libsodium("libkatzenpost-no-such-library.so.1") is False
    assert core.probe_libsodium("libc.so.6") is False  # loads, but has no sodium_init
    assert core.probe_libsodium("libcrypto.so.3") is False


def test_openssl_fallback_unwraps_what_libsodium_built(x25519_backend):
    """Packets made under one backend unwrap under the other (both X25519s agree)."""
    keys, path = make_path(3)
    other = "openssl" if x25519_backend == "libsodium" else "libsodium"
    packet = sphinx.new_packet(path, b"fallback", rng=counter_rng(b"x"), filler=counter_rng(b"y"))
    if other in core.available_x25519_backends():
        core.set_x25519_backend(other)
        assert sphinx.new_packet(path, b"fallback", rng=counter_rng(b"x"), filler=counter_rng(b"y")) == packet
    assert walk(keys, packet).payload == b"fallback"


@pytest.mark.parametrize("api", [sphinx, ref], ids=["compiled", "reference"])
def test_low_order_alpha_unwraps_with_all_zero_secret(api, x25519_backend):
    """Go continues with KDF(0^32) for a low-order group element: so must we."""
    recipient = Recipient(os.urandom(64))
    slot = recipient.to_bytes().ljust(82, b"\0")
    packet = packet_for_secret(bytes(32), bytes(32), slot, b"payload")
    result = api.unwrap(os.urandom(32), packet)
    assert result.payload == b"payload" and result.commands == [recipient]
    assert result.replay_tag == ref.sha512_256(bytes(32))
    next_id = os.urandom(32)
    forward = packet_for_secret(LOW_ORDER[2], bytes(32),
                                sphinx.NextNodeHop(next_id, bytes(16)).to_bytes().ljust(82, b"\0"), b"x")
    result = api.unwrap(os.urandom(32), forward)
    assert result.packet[2:34] == bytes(32)  # blinding a low-order point gives zeros too


# ---------------------------------------------------------------- Cython entry points

def test_core_entry_point_argument_checks():
    with pytest.raises(ValueError, match="X25519 scalar must be 32 bytes"):
        core.x25519(bytes(31), bytes(32))
    with pytest.raises(ValueError, match="X25519 point must be 32 bytes"):
        core.x25519(bytes(32), bytes(33))
    with pytest.raises(ValueError, match="KDF input must be 32 bytes"):
        core.kdf(bytes(16))
    with pytest.raises(ValueError, match="AES-128 key must be 16 bytes"):
        core.aes128_ctr(bytes(32), bytes(16), b"")
    with pytest.raises(ValueError, match="AES-CTR IV must be 16 bytes"):
        core.aes128_ctr(bytes(16), bytes(8), b"")
    with pytest.raises(ValueError, match="HKDF-Expand length"):
        core.hkdf_expand(bytes(32), b"", 8161)
    with pytest.raises(ValueError, match="private keys must be 1..3 x 32 bytes"):
        core.unwrap(bytes(0), bytearray(600))
    with pytest.raises(ValueError, match="private keys must be 1..3 x 32 bytes"):
        core.unwrap(bytes(128), bytearray(600))
    with pytest.raises(ValueError, match="path must have 1..5 hops"):
        core.create_header(bytes(32), b"", b"", b"", [], bytes(410))
    with pytest.raises(ValueError, match="filler must be 328 bytes"):
        core.create_header(bytes(32), bytes(32), bytes(32), bytes(82), [0], bytes(1))
    with pytest.raises(ValueError, match="command block too long"):
        core.create_header(bytes(32), bytes(64), bytes(64), bytes(164), [40, 0], bytes(246))
    with pytest.raises(ValueError, match="multiple of 64"):
        core.encrypt_payload(bytes(65), b"")
    with pytest.raises(ValueError, match="non-zero multiple of 64"):
        core.decrypt_surb_payload(bytes(16), b"")
    with pytest.raises(ValueError, match="shorter than its tag"):
        core.decrypt_surb_payload(bytes(15), bytes(64))
    with pytest.raises(BufferError):
        core.unwrap(bytes(32), b"read-only bytes are not unwrapped in place" * 20)


def test_core_primitives_match_reference():
    key, data = os.urandom(32), os.urandom(300)
    assert core.hmac_sha256(key, data) == ref.hmac.digest(key, data, "sha256")
    assert core.hmac_sha256(os.urandom(100), data) != core.hmac_sha256(key, data)
    long_key = os.urandom(100)  # longer than the SHA-256 block: hashed first
    assert core.hmac_sha256(long_key, data) == ref.hmac.digest(long_key, data, "sha256")
    assert core.sha512_256(b"") == ref.sha512_256(b"")
    assert core.aes128_ctr(bytes(16), b"\xff" * 16, bytes(48)) == ref.stream(bytes(16), b"\xff" * 16, 48)
    assert core.hkdf_expand(key, b"info", 0) == b""
    assert core.x25519_backend() in core.available_x25519_backends()


def test_c_geometry_matches_geometry_module():
    for name, value in core.GEOMETRY.items():
        assert getattr(g, name) == value, name
    assert len(core.GEOMETRY) >= 20  # every size macro of sphinx_impl.h is in the table


def test_c_constants_match_their_python_twins():
    from katzenpost.sphinx import batch, commands

    for table, module in ((core.COMMAND_IDS, commands), (core.STATUS_CODES, errors),
                          (core.RESULT_FLAGS, batch)):
        for name, value in table.items():
            assert getattr(module, name) == value, (module.__name__, name)
    assert set(errors.MESSAGES) == set(core.STATUS_CODES.values()) - {errors.OK}
