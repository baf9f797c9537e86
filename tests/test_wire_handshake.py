"""Noise XXhfs handshake and transport framing: the Go transcript byte for byte, both KEM
implementations live, and every malformed handshake message or frame (the Wire Protocol Specification)."""
import hashlib
import os
import random
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from wire_support import INITIATOR_LABEL, RESPONDER_LABEL, ShakeStream, load_transcript
from katzenpost.wire.errors import FrameError, HandshakeError
from katzenpost.wire.framing import MAX_FRAME_LENGTH, FrameOpener, FrameSealer
from katzenpost.wire.handshake import (AUTH_MESSAGE_LENGTH, MSG1_LENGTH, MSG2_LENGTH, MSG3_LENGTH,
                                       Handshake, decode_auth_message, encode_auth_message)
from katzenpost.wire.kem import CryptographyKyber1024, KyberPyKyber1024
from katzenpost.reference.linkframe import rekey
from katzenpost.wire.noise import (MAX_NONCE, PROTOCOL_NAME, CipherState, NonceExhausted,
                                   SymmetricState, hkdf2, hmac_blake2b)



@pytest.fixture(scope="module")
def transcript():
    return load_transcript()


def transcript_pair(t, kem_factory=KyberPyKyber1024):
    initiator = Handshake(initiator=True, link_key=bytes.fromhex(t["initiator_static_private"]),
                          additional_data=bytes.fromhex(t["initiator_ad"]), kem=kem_factory(),
                          rng=ShakeStream(INITIATOR_LABEL),
                          clock=lambda: t["responder_unix_time"] + 2)
    responder = Handshake(initiator=False, link_key=bytes.fromhex(t["responder_static_private"]),
                          additional_data=bytes.fromhex(t["responder_ad"]), kem=kem_factory(),
                          rng=ShakeStream(RESPONDER_LABEL),
                          clock=lambda: t["responder_unix_time"])
    return initiator, responder


def test_protocol_name_and_sizes_match_the_transcript(transcript):
    assert PROTOCOL_NAME.decode() == transcript["protocol_name"]
    assert (MSG1_LENGTH, MSG2_LENGTH, MSG3_LENGTH) == (1601, 1940, 324)
    assert len(bytes.fromhex(transcript["msg1"])) == MSG1_LENGTH
    assert len(bytes.fromhex(transcript["msg2"])) == MSG2_LENGTH
    assert len(bytes.fromhex(transcript["msg3"])) == MSG3_LENGTH


def test_go_transcript_replays_byte_for_byte(transcript):
    t = transcript
    initiator, responder = transcript_pair(t)
    assert initiator.wants_write and responder.wants_read
    assert responder.next_read_length == MSG1_LENGTH

    msg1 = initiator.write_message()
    assert msg1.hex() == t["msg1"]
    assert initiator.handshake_hash.hex() == t["h_after_msg1"]
    responder.read_message(msg1)
    assert responder.handshake_hash.hex() == t["h_after_msg1"]

    msg2 = responder.write_message()
    assert msg2.hex() == t["msg2"]
    assert responder.handshake_hash.hex() == t["h_after_msg2"]
    assert responder.chaining_key.hex() == t["ck_after_msg2"]
    initiator.read_message(msg2)
    assert initiator.handshake_hash.hex() == t["h_after_msg2"]
    assert initiator.peer_credentials.additional_data.hex() == t["responder_ad"]
    assert initiator.peer_credentials.public_key.hex() == t["initiator_peer_static"]
    assert initiator.peer_unix_time == t["responder_unix_time"]
    assert initiator.clock_skew == 2

    msg3 = initiator.write_message()
    assert msg3.hex() == t["msg3"]
    responder.read_message(msg3)
    assert responder.peer_credentials.additional_data.hex() == t["initiator_ad"]
    assert responder.peer_credentials.public_key.hex() == t["responder_peer_static"]
    assert responder.peer_unix_time == 0

    assert initiator.is_complete and responder.is_complete
    assert initiator.handshake_hash.hex() == responder.handshake_hash.hex() == t["handshake_hash"]
    tx, rx = initiator.split()
    assert (tx.hex(), rx.hex()) == (t["initiator_tx_key"], t["initiator_rx_key"])
    assert responder.split() == (rx, tx)


def test_auth_plaintexts_of_the_transcript(transcript):
    t = transcript
    assert encode_auth_message(bytes.fromhex(t["initiator_ad"]), 0).hex() == t["initiator_auth_plaintext"]
    assert encode_auth_message(bytes.fromhex(t["responder_ad"]),
                               t["responder_unix_time"]).hex() == t["responder_auth_plaintext"]


def test_transport_frames_of_the_transcript_seal_and_open(transcript):
    t = transcript
    tx, rx = bytes.fromhex(t["initiator_tx_key"]), bytes.fromhex(t["initiator_rx_key"])
    sealers = {"initiator->responder": FrameSealer(tx), "responder->initiator": FrameSealer(rx)}
    openers = {"initiator->responder": FrameOpener(tx), "responder->initiator": FrameOpener(rx)}
    for frame in t["frames"]:
        command = bytes.fromhex(frame["command_plaintext"])
        wire = bytes.fromhex(frame["wire_bytes"])
        assert sealers[frame["direction"]].seal(command) == wire
        opener = openers[frame["direction"]]
        body_length = opener.open_header(wire[:20])
        assert struct.pack(">I", body_length).hex() == frame["header_plaintext"]
        assert opener.open_body(wire[20:]) == command
    assert sealers["initiator->responder"].nonce == 4  # rekey never resets the counter


def test_noise_hkdf_and_rekey_follow_their_definitions():
    chaining_key, ikm = os.urandom(64), os.urandom(32)
    temp = hmac_blake2b(chaining_key, ikm)
    first = hmac_blake2b(temp, b"\x01")
    assert hkdf2(chaining_key, ikm) == (first, hmac_blake2b(temp, first + b"\x02"))
    key = os.urandom(32)
    nonce = b"\x00" * 4 + b"\xff" * 8
    assert rekey(key) == ChaCha20Poly1305(key).encrypt(nonce, bytes(32), None)[:32]


def test_noise_symmetric_state_edges():
    """A protocol name over 64 bytes is hashed (Noise §5.2); nonce 2^64-1 is never used."""
    long_name = b"N" * 65
    assert SymmetricState(long_name).handshake_hash == hashlib.blake2b(long_name).digest()
    assert SymmetricState(PROTOCOL_NAME).chaining_key == PROTOCOL_NAME.ljust(64, b"\x00")
    cipher = CipherState(os.urandom(32), MAX_NONCE)
    with pytest.raises(NonceExhausted):
        cipher.encrypt_with_ad(b"", b"x")
    with pytest.raises(NonceExhausted):
        cipher.decrypt_with_ad(b"", bytes(17))


def run_handshake(initiator, responder):
    responder.read_message(initiator.write_message())
    initiator.read_message(responder.write_message())
    responder.read_message(initiator.write_message())
    assert initiator.is_complete and responder.is_complete
    assert initiator.split() == responder.split()[::-1]
    assert initiator.handshake_hash == responder.handshake_hash


@pytest.mark.parametrize("initiator_kem, responder_kem", [
    (CryptographyKyber1024, CryptographyKyber1024),
    (CryptographyKyber1024, KyberPyKyber1024),
    (KyberPyKyber1024, CryptographyKyber1024),
], ids=["adapter-adapter", "adapter-initiator", "adapter-responder"])
def test_live_handshake_with_both_kem_implementations(initiator_kem, responder_kem):
    initiator_key, responder_key = os.urandom(32), os.urandom(32)
    initiator = Handshake(initiator=True, link_key=initiator_key, additional_data=b"a" * 255,
                          kem=initiator_kem())
    responder = Handshake(initiator=False, link_key=responder_key, additional_data=b"",
                          kem=responder_kem())
    run_handshake(initiator, responder)
    assert initiator.peer_credentials.additional_data == b""
    assert responder.peer_credentials.additional_data == b"a" * 255
    assert abs(initiator.clock_skew) < 2


def test_additional_data_over_255_bytes_is_refused_at_creation():
    with pytest.raises(ValueError, match="256 bytes, at most 255"):
        Handshake(initiator=True, link_key=os.urandom(32), additional_data=bytes(256))
    with pytest.raises(ValueError, match="link_key must be 32"):
        Handshake(initiator=True, link_key=os.urandom(31), additional_data=b"")


def test_auth_message_layout_and_unchecked_padding():
    message = encode_auth_message(b"bob", 0x01020304)
    assert len(message) == AUTH_MESSAGE_LENGTH
    assert message[:4] == b"\x03bob" and message[-4:] == b"\x01\x02\x03\x04"
    padded = message[:10] + b"\xee" + message[11:]
    assert decode_auth_message(padded) == (b"bob", 0x01020304)


def test_auth_time_is_whole_seconds_truncated_to_uint32():
    """Go writes uint32(time.Now().Unix()): fractions dropped, wraps after 2106."""
    assert encode_auth_message(b"", 2**32 + 5)[-4:] == (5).to_bytes(4, "big")
    initiator, _ = fresh_pair()
    responder = Handshake(initiator=False, link_key=os.urandom(32), additional_data=b"r",
                          clock=lambda: 1614300000.99)
    responder.read_message(initiator.write_message())
    initiator.read_message(responder.write_message())
    assert initiator.peer_unix_time == 1614300000


def test_operations_out_of_order_are_refused():
    initiator = Handshake(initiator=True, link_key=os.urandom(32), additional_data=b"")
    with pytest.raises(HandshakeError, match="step 1 is not a read"):
        initiator.read_message(bytes(MSG1_LENGTH))
    with pytest.raises(HandshakeError, match="split before the handshake completed"):
        initiator.split()


def fresh_pair():
    return (Handshake(initiator=True, link_key=os.urandom(32), additional_data=b"i"),
            Handshake(initiator=False, link_key=os.urandom(32), additional_data=b"r"))


def flip(message: bytes, position: int) -> bytes:
    return message[:position] + bytes([message[position] ^ 0x01]) + message[position + 1:]


@pytest.mark.parametrize("version", [0x00, 0x01, 0x03, 0xFF])
def test_wrong_prologue_byte_is_an_unsupported_version(version):
    initiator, responder = fresh_pair()
    msg1 = bytes([version]) + initiator.write_message()[1:]
    with pytest.raises(HandshakeError, match=f"unsupported protocol version 0x{version:02x}"):
        responder.read_message(msg1)
    with pytest.raises(HandshakeError, match="already failed"):
        responder.write_message()


@pytest.mark.parametrize("step", [1, 2, 3])
@pytest.mark.parametrize("delta", [-1, +1, None])
def test_wrong_length_handshake_message_is_refused(step, delta):
    initiator, responder = fresh_pair()
    reader = responder
    message = initiator.write_message()
    if step >= 2:
        responder.read_message(message)
        message, reader = responder.write_message(), initiator
    if step == 3:
        initiator.read_message(message)
        message, reader = initiator.write_message(), responder
    bad = b"" if delta is None else (message[:-1] if delta < 0 else message + b"\x00")
    with pytest.raises(HandshakeError, match=f"handshake message {step} is {len(bad)} bytes"):
        reader.read_message(bad)


@pytest.mark.parametrize("position", [1, 32, MSG1_LENGTH - 1],
                         ids=["ephemeral key", "ephemeral key end", "Kyber seed rho"])
def test_msg1_tampering_breaks_msg2_authentication(position):
    """msg1 has no MAC; tampering shows up as a failed MAC on msg2 at the initiator."""
    initiator, responder = fresh_pair()
    responder.read_message(flip(initiator.write_message(), position))
    with pytest.raises(HandshakeError, match="message 2"):
        initiator.read_message(responder.write_message())


@pytest.mark.parametrize("position", [0, 31, 32, 1000, 1615, 1616, 1663, 1664, 1900, MSG2_LENGTH - 1])
def test_any_bit_flip_in_msg2_is_rejected(position):
    initiator, responder = fresh_pair()
    responder.read_message(initiator.write_message())
    with pytest.raises(HandshakeError, match="handshake message 2"):
        initiator.read_message(flip(responder.write_message(), position))
    assert initiator.peer_credentials is None


@pytest.mark.parametrize("position", [0, 47, 48, 200, MSG3_LENGTH - 1])
def test_any_bit_flip_in_msg3_is_rejected(position):
    initiator, responder = fresh_pair()
    responder.read_message(initiator.write_message())
    initiator.read_message(responder.write_message())
    with pytest.raises(HandshakeError, match="handshake message 3"):
        responder.read_message(flip(initiator.write_message(), position))
    assert responder.peer_credentials is None


def test_low_order_ephemeral_key_fails_cleanly():
    """An all-zero X25519 result is a handshake failure (cryptography raises; Go would not)."""
    initiator, responder = fresh_pair()
    msg1 = initiator.write_message()
    responder.read_message(msg1[:1] + bytes(32) + msg1[33:])
    with pytest.raises(HandshakeError, match="X25519 ee gave a low-order result"):
        responder.write_message()


def test_non_canonical_kyber_key_fails_cleanly():
    initiator, responder = fresh_pair()
    msg1 = initiator.write_message()
    responder.read_message(msg1[:33] + b"\xff" * 1568)
    with pytest.raises(HandshakeError, match="public key rejected"):
        responder.write_message()


def test_bounded_fuzz_of_each_handshake_reader():
    """Random bytes of the right and wrong sizes into each reader: HandshakeError or, for
    msg1 (which has no MAC), acceptance; never another exception."""
    rng = random.Random(0xF00D)
    outcomes = {"rejected": 0, "accepted": 0}
    for trial in range(45):
        step = trial % 3 + 1
        initiator, responder = fresh_pair()
        if step == 1:
            reader, length = responder, MSG1_LENGTH
        elif step == 2:
            responder.read_message(initiator.write_message())
            reader, length = initiator, MSG2_LENGTH
        else:
            responder.read_message(initiator.write_message())
            initiator.read_message(responder.write_message())
            reader, length = responder, MSG3_LENGTH
        if rng.random() < 0.2:
            length = rng.randrange(0, length + 50)
        data = bytes(rng.getrandbits(8) for _ in range(length))
        if step == 1 and rng.random() < 0.5 and data:
            data = b"\x02" + data[1:]
        try:
            reader.read_message(data)
            outcomes["accepted"] += 1
            if step == 1:  # the garbage must then fail on the responder's own msg2 or later
                try:
                    responder.write_message()
                except HandshakeError:
                    pass
        except HandshakeError:
            outcomes["rejected"] += 1
    assert outcomes["rejected"] > 0


# -- framing ---------------------------------------------------------------------------------

def forged_header(key: bytes, nonce: int, body_length: int) -> bytes:
    return ChaCha20Poly1305(key).encrypt(struct.pack("<4xQ", nonce), struct.pack(">I", body_length), None)


def test_frames_round_trip_with_rekey_between_commands():
    key = os.urandom(32)
    sealer, opener = FrameSealer(key), FrameOpener(key)
    for size in (0, 1, 2530, 70000):
        command = os.urandom(size)
        frame = sealer.seal(command)
        assert len(frame) == 20 + size + 16
        assert opener.open_header(frame[:20]) == size + 16
        assert opener.open_body(frame[20:]) == command


def test_replayed_frame_fails_after_rekey():
    key = os.urandom(32)
    sealer, opener = FrameSealer(key), FrameOpener(key)
    frame = sealer.seal(b"x" * 10)
    opener.open_header(frame[:20])
    opener.open_body(frame[20:])
    with pytest.raises(FrameError, match="header authentication failed"):
        opener.open_header(frame[:20])


@pytest.mark.parametrize("body_length", [0, 15, MAX_FRAME_LENGTH + 1, 0xFFFFFFFF])
def test_length_header_outside_bounds_is_rejected(body_length):
    key = os.urandom(32)
    with pytest.raises(FrameError, match=f"frame length {body_length} outside"):
        FrameOpener(key).open_header(forged_header(key, 0, body_length))


def test_length_bounds_inclusive():
    key = os.urandom(32)
    assert FrameOpener(key).open_header(forged_header(key, 0, 16)) == 16
    assert FrameOpener(key).open_header(forged_header(key, 0, MAX_FRAME_LENGTH)) == MAX_FRAME_LENGTH


def test_bad_body_mac_and_wrong_body_size_are_rejected():
    key = os.urandom(32)
    frame = FrameSealer(key).seal(b"payload")
    opener = FrameOpener(key)
    opener.open_header(frame[:20])
    with pytest.raises(FrameError, match="body is 22 bytes, expected 23"):
        opener.open_body(frame[20:-1])
    with pytest.raises(FrameError, match="body authentication failed"):
        opener.open_body(flip(frame, 25)[20:])


def test_framing_misuse_is_rejected():
    key = os.urandom(32)
    opener = FrameOpener(key)
    with pytest.raises(FrameError, match="body without a header"):
        opener.open_body(bytes(16))
    with pytest.raises(FrameError, match="header is 19 bytes"):
        opener.open_header(bytes(19))
    with pytest.raises(FrameError, match="exceeds"):
        FrameSealer(key).seal(bytes(MAX_FRAME_LENGTH - 15))
    assert len(FrameSealer(key).seal(bytes(MAX_FRAME_LENGTH - 16))) == 20 + MAX_FRAME_LENGTH
