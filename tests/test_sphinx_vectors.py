"""Sphinx against the Go reference's vectors (the Sphinx Packet Format Specification): every hop byte for
byte, every command, SURB decryption and the extra checks of 8.1, for the compiled API, the
batch API and the pure-Python reference."""
import hashlib

import numpy as np
import pytest

import katzenpost.sphinx as sphinx
from katzenpost._core import sphinx as core
from katzenpost.reference import sphinx as ref
from katzenpost.sphinx import batch, commands
from katzenpost.sphinx import geometry as g

from sphinx_support import aez_backend, load_json, sphinx_vectors, x25519_backend  # noqa: F401 (fixtures)

CASES = sphinx_vectors()


def h(x):
    return bytes.fromhex(x)


def case_id(case):
    kind = "surb" if case["Surb"] else "forward"
    return f"{kind}-{len(case['Nodes'])}hop"


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_reference_unwrap_every_hop_matches_go(case):
    check_every_hop(case, ref)


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_compiled_unwrap_every_hop_matches_go(case, x25519_backend, aez_backend):
    check_every_hop(case, sphinx)


def check_every_hop(case, api):
    n = len(case["Nodes"])
    packet = h(case["Packets"][0])
    for i, node in enumerate(case["Nodes"]):
        assert h(case["Packets"][i]) == packet
        result = api.unwrap(h(node["PrivateKey"]), packet)
        assert result.replay_tag == hashlib.new("sha512_256", packet[2:34]).digest()
        want_cmds = case["Path"][i]["Commands"]
        if i < n - 1:
            assert result.payload is None
            assert len(result.commands) == 2
            assert result.commands[0].to_bytes() == h(want_cmds[0])
            assert isinstance(result.commands[1], commands.NextNodeHop)
            assert result.commands[1].id == h(case["Path"][i + 1]["ID"])
            assert result.packet == h(case["Packets"][i + 1])
            packet = result.packet
        else:
            assert result.packet is None
            assert case["Packets"][i + 1] == ""
            assert [c.to_bytes() for c in result.commands] == [h(c) for c in want_cmds]
            if case["Surb"]:
                assert len(result.commands) == 2
                plaintext = api.decrypt_surb_payload(result.payload, h(case["SurbKeys"]))
                assert plaintext == h(case["Payload"])
            else:
                assert len(result.commands) == 1
                assert result.payload == h(case["Payload"])


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_batch_unwrap_every_hop_matches_go(case, aez_backend, x25519_backend):
    n = len(case["Nodes"])
    rows = np.frombuffer(h(case["Packets"][0]), dtype=np.uint8).reshape(1, -1).copy()
    result = batch.UnwrapBatch(1)
    decoy = bytes(range(32))  # a wrong key tried first: trial decryption must skip it
    for i, node in enumerate(case["Nodes"]):
        keys = batch.keys_array([decoy, h(node["PrivateKey"])])
        assert batch.unwrap_batch(rows, 1, keys, result) == 1
        assert result.status[0] == 0 and result.key_index[0] == 1
        if i < n - 1:
            assert result.flags[0] == batch.FLAG_NEXT_HOP | batch.FLAG_NODE_DELAY
            assert result.delay_ms[0] == (0xDEADBABE * (i + 1)) & 0xFFFFFFFF
            assert bytes(result.next_hop[0]) == h(case["Path"][i + 1]["ID"])
            assert rows.tobytes() == h(case["Packets"][i + 1])
        else:
            recipient = commands.parse(h(case["Path"][i]["Commands"][0]).ljust(82, b"\0"))[0]
            assert bytes(result.recipient[0]) == recipient.id
            if case["Surb"]:
                assert result.flags[0] == batch.FLAG_RECIPIENT | batch.FLAG_SURB_REPLY
                surb_reply = commands.parse(h(case["Path"][i]["Commands"][1]).ljust(82, b"\0"))[0]
                assert bytes(result.surb_id[0]) == surb_reply.id
                payload = rows.tobytes()[g.HEADER_LENGTH :]
                assert sphinx.decrypt_surb_payload(payload, h(case["SurbKeys"])) == h(case["Payload"])
            else:
                assert result.flags[0] == batch.FLAG_RECIPIENT
                assert rows.tobytes()[g.HEADER_LENGTH : g.HEADER_LENGTH + 16] == bytes(16)
                assert rows.tobytes()[g.HEADER_LENGTH + 16 :] == h(case["Payload"])


def per_hop_sprp_keys(case):
    """(pi_i || iota_i) of every hop, from the node keys and the recorded packets."""
    keys = []
    for i, node in enumerate(case["Nodes"]):
        alpha = h(case["Packets"][i])[2:34]
        okm = core.kdf(core.x25519(h(node["PrivateKey"]), alpha))
        keys.append(okm[64:112] + okm[48:64])
    return keys


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_extra_checks_of_spec_8_1(case, aez_backend, x25519_backend):
    for node, hop in zip(case["Nodes"], case["Path"]):
        assert sphinx.public_key(h(node["PrivateKey"])) == h(hop["PublicKey"])
        assert ref.public_key(h(node["PrivateKey"])) == h(hop["PublicKey"])
    keys = per_hop_sprp_keys(case)
    packet0 = h(case["Packets"][0])
    if case["Surb"]:
        surb, surb_keys = h(case["Surb"]), h(case["SurbKeys"])
        for api in (sphinx, ref):
            packet, first_hop = api.new_packet_from_surb(surb, h(case["Payload"]))
            assert packet == packet0 and first_hop == h(case["Path"][0]["ID"])
        assert surb[:460] == packet0[:460]
        assert surb[460:492] == h(case["Path"][0]["ID"])
        assert surb_keys[-64:] == surb[492:556]
        assert surb_keys[:-64] == b"".join(reversed(keys))
    else:
        body = core.encrypt_payload(b"".join(keys), h(case["Payload"]))
        assert body == packet0[460:]
        body = bytes(16) + h(case["Payload"])
        for material in reversed(keys):
            body = ref.sprp_encrypt(material[:48], material[48:], body)
        assert body == packet0[460:]


def test_command_vectors():
    v = load_json("sphinx/commands/testdata/sphinx_commands_vectors.json")
    built = {
        "NextHopCmdWant": commands.NextNodeHop(h(v["NextHopID"]), h(v["NextHopMAC"])),
        "RecipientCmdWant": commands.Recipient(h(v["RecipientID"])),
        "SURBReplyCmdWant": commands.SURBReply(h(v["SURBReplyID"])),
        "NodeDelayCmdWant": commands.NodeDelay(v["NodeDelay"]),
    }
    for field, cmd in built.items():
        assert cmd.to_bytes() == h(v[field])
        assert commands.parse(h(v[field]).ljust(82, b"\0")) == [cmd]


INLINE = load_json("extracted/sphinx_crypto_inline_vectors.json")


@pytest.mark.parametrize("vector", INLINE["hash_sha512_256"])
def test_inline_hash_vector(vector):
    assert core.sha512_256(h(vector["msg"])) == h(vector["digest"])
    assert ref.sha512_256(h(vector["msg"])) == h(vector["digest"])


@pytest.mark.parametrize("vector", INLINE["kdf"])
def test_inline_kdf_vector(vector):
    assert vector["info_ascii"].encode() == g.KDF_INFO
    want = (h(vector["header_mac_key"]) + h(vector["header_encryption_key"])
            + h(vector["header_encryption_iv"]) + h(vector["payload_encryption_key"])
            + h(vector["blinding_factor"]))
    assert core.kdf(h(vector["ikm"])) == want
    r = ref.kdf(h(vector["ikm"]))
    assert r["header_mac"] + r["header_encryption"] + r["header_encryption_iv"] + \
        r["payload_encryption"] + r["blinding_factor"] == want


@pytest.mark.parametrize("vector", INLINE["stream_aes128_ctr"])
def test_inline_stream_vector(vector):
    key, iv = h(vector["key"]), h(vector["iv"])
    stream = core.aes128_ctr(key, iv, bytes(2048))
    assert stream[:1024] == h(vector["keystream_0_1024"])
    assert bytes(a ^ b for a, b in zip(stream[:1024], stream[1024:])) == \
        h(vector["keystream_0_1024_xor_keystream_1024_2048"])
    assert ref.stream(key, iv, 2048) == stream


@pytest.mark.parametrize("vector", INLINE["hkdf_sha256_expand_rfc5869"], ids=lambda v: v["name"])
def test_inline_hkdf_expand_vector(vector):
    okm = h(vector["okm"])
    assert core.hkdf_expand(h(vector["prk"]), h(vector["info"]), len(okm)) == okm
    assert ref.hkdf_expand(h(vector["prk"]), h(vector["info"]), len(okm)) == okm
