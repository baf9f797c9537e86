"""Sphinx unwrap on bad input: truncated packets, wrong version, flipped bits in every field,
bad routing commands, short payloads and wrong keys. Each gives the reference's error (with
the replay tag where the reference returns one), never a crash; compiled and reference agree."""
import os

import pytest

import katzenpost.sphinx as sphinx
from katzenpost.reference import sphinx as ref
from katzenpost.sphinx import NodeDelay, PathHop, Recipient, SphinxError, SURBReply
from katzenpost.sphinx import commands
from katzenpost.sphinx import geometry as g

from sphinx_support import keypair, single_hop_packet

APIS = {"compiled": sphinx, "reference": ref}


def expect_error(api, key, packet, message, tag):
    with pytest.raises(SphinxError) as info:
        api.unwrap(key, packet)
    assert str(info.value) == message
    assert info.value.replay_tag == tag
    return info.value


def tag_of(packet):
    return ref.sha512_256(packet[g.ALPHA_OFFSET : g.BETA_OFFSET])


@pytest.fixture(scope="module")
def two_hop():
    nodes = [keypair() for _ in range(2)]
    path = [PathHop(os.urandom(32), nodes[0][1], [NodeDelay(7)]),
            PathHop(os.urandom(32), nodes[1][1], [Recipient(os.urandom(64))])]
    packet = sphinx.new_packet(path, os.urandom(g.FORWARD_PAYLOAD_LENGTH))
    return [n[0] for n in nodes], packet


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("length", [0, 1, 2, 33, 459])
def test_truncated_packet(api, length, two_hop):
    keys, packet = two_hop
    expect_error(APIS[api], keys[0], packet[:length], "sphinx: invalid packet, truncated", None)


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("version", [b"\x01\x00", b"\x00\x01", b"\xff\xff"])
def test_unknown_version(api, version, two_hop):
    keys, packet = two_hop
    expect_error(APIS[api], keys[0], version + packet[2:], "sphinx: invalid packet, unknown version", None)


def test_header_of_exactly_460_bytes_is_parsed(two_hop):
    """Unwrap only needs the header: with no payload the packet is forwarded as a bare
    header, exactly the header of the full packet's forwarded form."""
    keys, packet = two_hop
    full = sphinx.unwrap(keys[0], packet).packet
    for api in APIS.values():
        bare = api.unwrap(keys[0], packet[: g.HEADER_LENGTH]).packet
        assert bare == full[: g.HEADER_LENGTH]


def test_flipped_bit_in_every_header_byte_is_a_mac_mismatch(two_hop):
    keys, packet = two_hop
    for offset in range(g.ALPHA_OFFSET, g.HEADER_LENGTH):
        bad = bytearray(packet)
        bad[offset] ^= 1 << (offset % 8)
        bad = bytes(bad)
        expect_error(sphinx, keys[0], bad, "sphinx: invalid packet, MAC mismatch", tag_of(bad))
    for offset in (2, 33, 34, 200, 443, 444, 459):  # the reference too, on a sample
        bad = bytearray(packet)
        bad[offset] ^= 0x80
        expect_error(ref, keys[0], bytes(bad), "sphinx: invalid packet, MAC mismatch", tag_of(bytes(bad)))


@pytest.mark.parametrize("api", APIS)
def test_wrong_key_is_a_mac_mismatch_with_tag(api, two_hop):
    keys, packet = two_hop
    expect_error(APIS[api], keys[1], packet, "sphinx: invalid packet, MAC mismatch", tag_of(packet))
    expect_error(APIS[api], os.urandom(32), packet, "sphinx: invalid packet, MAC mismatch", tag_of(packet))


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("offset", [g.HEADER_LENGTH, g.HEADER_LENGTH + 15, g.HEADER_LENGTH + 16, g.PACKET_LENGTH - 1])
def test_flipped_payload_bit_fails_auth_at_the_terminal_hop(api, offset, two_hop):
    keys, packet = two_hop
    bad = bytearray(packet)
    bad[offset] ^= 4
    forwarded = APIS[api].unwrap(keys[0], bytes(bad)).packet  # hop 0 cannot tell
    expect_error(APIS[api], keys[1], forwarded, "sphinx: payload auth failed", tag_of(forwarded))


@pytest.mark.parametrize("api", APIS)
def test_flipped_surb_reply_payload_fails_in_decrypt_surb_payload(api):
    key, pub = keypair()
    path = [PathHop(os.urandom(32), pub, [Recipient(bytes(64)), SURBReply(bytes(16))])]
    surb, surb_keys = sphinx.new_surb(path)
    packet = bytearray(sphinx.new_packet_from_surb(surb, b"reply" * 20)[0])
    packet[-1] ^= 1
    result = APIS[api].unwrap(key, bytes(packet))  # SURB replies are not checked at the node
    with pytest.raises(SphinxError, match="^sphinx: payload auth failed$"):
        APIS[api].decrypt_surb_payload(result.payload, surb_keys)


RECIPIENT = Recipient(bytes(range(64))).to_bytes()
SURB_REPLY = SURBReply(bytes(range(16))).to_bytes()
DELAY = NodeDelay(99).to_bytes()
NEXT = commands.NextNodeHop(bytes(32), bytes(16)).to_bytes()

BAD_SLOTS = {
    "unknown id": bytes([0x04]) + bytes(81),
    "unknown id after a command": DELAY + bytes([0x7F]) + bytes(76),
    "truncated recipient": DELAY * 4 + RECIPIENT[:62],
    "truncated node delay at the end": RECIPIENT + bytes(13) + bytes([0x80]) + bytes(3),
    "lone id byte at the end": NEXT + SURB_REPLY + DELAY * 3 + bytes([0x80]),
    "non-zero after terminator": RECIPIENT + bytes(16) + b"\x01",
    "non-zero byte far after terminator": bytes(81) + b"\x01",
    "invalid command before a duplicate": DELAY + bytes([0x05]) + SURB_REPLY * 2 + bytes(42),
}


def expect_slot_error(api, slot, message):
    """A one-hop packet whose decrypted routing slot is `slot` fails with `message`."""
    assert len(slot) == g.PER_HOP_ROUTING_INFO_LENGTH
    key, pub = keypair()
    packet = single_hop_packet(pub, slot, b"payload" * 3)
    expect_error(api, key, packet, message, tag_of(packet))


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("name", BAD_SLOTS)
def test_bad_routing_commands(api, name):
    expect_slot_error(APIS[api], BAD_SLOTS[name], "sphinx: invalid per-hop command")


DUPLICATE_SLOTS = {
    "two surb replies": (SURB_REPLY * 2).ljust(82, b"\0"),
    # Go returns on reading the second SURBReply: the invalid bytes after it are never parsed.
    "two surb replies then an unknown id": SURB_REPLY * 2 + bytes([0x05]) + bytes(47),
    "two surb replies then a truncated recipient": DELAY + SURB_REPLY * 2 + RECIPIENT[:43],
    "two surb replies then non-zero padding": SURB_REPLY * 2 + bytes(47) + b"\x01",
}


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("name", DUPLICATE_SLOTS)
def test_duplicate_surb_reply_fails_as_soon_as_it_is_read(api, name):
    expect_slot_error(APIS[api], DUPLICATE_SLOTS[name], "sphinx: invalid packet, > 1 surb_reply")


def test_duplicate_surb_reply_in_a_batch_sets_status_and_flags():
    import numpy as np
    from katzenpost.sphinx import batch, errors

    key, pub = keypair()
    packet = single_hop_packet(pub, DUPLICATE_SLOTS["two surb replies then an unknown id"], b"p" * 20)
    rows = np.frombuffer(packet, dtype=np.uint8).reshape(1, -1).copy()
    result = batch.UnwrapBatch(1)
    assert batch.unwrap_batch(rows, 1, batch.keys_array([key]), result) == 0
    assert result.status[0] == errors.ERR_DUPLICATE_SURB_REPLY
    assert result.flags[0] == batch.FLAG_SURB_REPLY | batch.FLAG_DUPLICATE
    assert bytes(result.tags[0]) == tag_of(packet)
    assert rows.tobytes() == packet  # a header error leaves the packet as it was


@pytest.mark.parametrize("api", APIS)
def test_repeated_delay_and_recipient_pass_the_sphinx_layer(api):
    key, pub = keypair()
    packet = single_hop_packet(pub, (DELAY + DELAY + DELAY + NEXT).ljust(82, b"\0"), b"p" * 40)
    result = APIS[api].unwrap(key, packet)
    assert [type(c) for c in result.commands] == [NodeDelay] * 3 + [commands.NextNodeHop]
    assert result.packet is not None


@pytest.mark.parametrize("api", APIS)
def test_next_hop_with_surb_reply_is_forwarded(api):
    key, pub = keypair()
    slot = NEXT + SURB_REPLY + bytes(16)  # NextNodeHop and SURBReply together: forward wins
    packet = single_hop_packet(pub, slot, b"x" * 20)
    result = APIS[api].unwrap(key, packet)
    assert result.packet is not None and result.payload is None


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("body_len", [0, 1, 15])
def test_short_terminal_payload(api, body_len):
    """An SPRP body shorter than the 16-byte tag: 'sphinx: truncated payload'."""
    key, pub = keypair()
    packet = single_hop_packet(pub, RECIPIENT.ljust(82, b"\0"), os.urandom(body_len), tag=b"")
    if body_len == 0:
        packet = packet[: g.HEADER_LENGTH]
    expect_error(APIS[api], key, packet, "sphinx: truncated payload", tag_of(packet))


@pytest.mark.parametrize("api", APIS)
def test_nonzero_payload_tag(api):
    key, pub = keypair()
    packet = single_hop_packet(pub, RECIPIENT.ljust(82, b"\0"), b"body", tag=b"\x00" * 15 + b"\x01")
    expect_error(APIS[api], key, packet, "sphinx: payload auth failed", tag_of(packet))


@pytest.mark.parametrize("api", APIS)
def test_empty_slot_is_a_terminal_hop_without_commands(api):
    key, pub = keypair()
    packet = single_hop_packet(pub, bytes(82), b"body")
    result = APIS[api].unwrap(key, packet)
    assert result.commands == [] and result.payload == b"body"


def test_unwrap_does_not_modify_the_callers_buffer(two_hop):
    keys, packet = two_hop
    buf = bytearray(packet)
    sphinx.unwrap(keys[0], buf)
    assert bytes(buf) == packet
