"""The compiled per-frame crypto (_core.linkframe) against its pure-Python twin and the Go
transcript: same bytes, same status values, same state after failures, bounds enforced."""
import os
import random
import threading

import pytest

from wire_support import load_transcript
from katzenpost._core import linkframe as compiled
from katzenpost.reference import linkframe as reference
from katzenpost.wire import framing

IMPLEMENTATIONS = [compiled.FrameCipher, reference.FrameCipher]
IDS = ["compiled", "reference"]


def test_the_session_layer_runs_the_compiled_module():
    assert framing.FrameCipher is compiled.FrameCipher
    assert type(framing.FrameSealer(bytes(32))._cipher) is compiled.FrameCipher


def test_constants_agree():
    for name in ("KEY_BYTES", "TAG_BYTES", "HEADER_BYTES", "LAST_FRAME_NONCE"):
        assert getattr(compiled, name) == getattr(reference, name), name


@pytest.mark.parametrize("cipher_class", IMPLEMENTATIONS, ids=IDS)
def test_transcript_frames(cipher_class):
    t = load_transcript()
    keys = {"initiator->responder": bytes.fromhex(t["initiator_tx_key"]),
            "responder->initiator": bytes.fromhex(t["initiator_rx_key"])}
    sealers = {d: cipher_class(k) for d, k in keys.items()}
    openers = {d: cipher_class(k) for d, k in keys.items()}
    for frame in t["frames"]:
        command = bytes.fromhex(frame["command_plaintext"])
        wire = bytes.fromhex(frame["wire_bytes"])
        assert sealers[frame["direction"]].seal(command) == wire
        opener = openers[frame["direction"]]
        assert opener.open_header(wire[:20]) == int(frame["header_plaintext"], 16)
        assert opener.open_body(wire[20:]) == command


def test_compiled_and_reference_produce_identical_streams():
    rng = random.Random(7)
    key = os.urandom(32)
    ours, theirs = compiled.FrameCipher(key, 1000), reference.FrameCipher(key, 1000)
    opener = compiled.FrameCipher(key, 1000)
    for _ in range(60):
        command = os.urandom(rng.choice([0, 1, 6, 2530, rng.randrange(0, 70000)]))
        frame = ours.seal(command)
        assert frame == theirs.seal(command)
        assert opener.open_header(memoryview(frame)[:20]) == len(command) + 16
        assert opener.open_body(memoryview(frame)[20:]) == command
    assert ours.nonce == theirs.nonce == opener.nonce == 1120


@pytest.mark.parametrize("cipher_class", IMPLEMENTATIONS, ids=IDS)
def test_mac_failures_return_status_and_leave_state_unchanged(cipher_class):
    key = os.urandom(32)
    frame = cipher_class(key).seal(b"\x00" * 6)
    opener = cipher_class(key)
    bad_header = bytes([frame[0] ^ 1]) + frame[1:20]
    assert opener.open_header(bad_header) == -1
    assert opener.nonce == 0
    assert opener.open_header(frame[:20]) == 22
    bad_body = frame[20:-1] + bytes([frame[-1] ^ 1])
    assert opener.open_body(bad_body) is None
    assert opener.nonce == 0
    assert opener.open_body(frame[20:]) == b"\x00" * 6
    assert opener.nonce == 2


@pytest.mark.parametrize("cipher_class", IMPLEMENTATIONS, ids=IDS)
def test_bounds_are_checked_before_any_pointer_use(cipher_class):
    with pytest.raises(ValueError, match="key must be 32 bytes"):
        cipher_class(bytes(31))
    for nonce in (-1, 2**64):
        with pytest.raises(OverflowError):
            cipher_class(bytes(32), nonce)
    cipher = cipher_class(os.urandom(32))
    for header in (b"", bytes(19), bytes(21)):
        with pytest.raises(ValueError, match="header must be 20 bytes"):
            cipher.open_header(header)
    for body in (b"", bytes(15)):
        with pytest.raises(ValueError, match="body length out of range"):
            cipher.open_body(body)
    assert cipher.open_body(bytes(16)) is None  # an empty plaintext with a wrong tag
    assert len(cipher.seal(b"")) == 20 + 16


@pytest.mark.parametrize("cipher_class", IMPLEMENTATIONS, ids=IDS)
def test_nonce_exhaustion_is_refused(cipher_class):
    last = compiled.LAST_FRAME_NONCE
    key = os.urandom(32)
    sealer, opener = cipher_class(key, last - 1), cipher_class(key, last - 1)
    frame = sealer.seal(b"last")
    assert sealer.nonce == last + 1
    assert opener.open_header(frame[:20]) == 20 and opener.open_body(frame[20:]) == b"last"
    with pytest.raises(OverflowError, match="nonce exhausted"):
        sealer.seal(b"x")
    with pytest.raises(OverflowError, match="nonce exhausted"):
        opener.open_header(bytes(20))
    with pytest.raises(framing.FrameError, match="nonce exhausted"):
        framing.FrameSealer(key, last + 1).seal(b"x")


def test_compiled_cipher_is_usable_from_several_threads():
    """Each thread owns its ciphers; the nogil sections must not interfere."""
    errors = []

    def worker():
        try:
            key = os.urandom(32)
            sealer, opener = compiled.FrameCipher(key), compiled.FrameCipher(key)
            for index in range(300):
                command = index.to_bytes(4, "big") * 700
                frame = sealer.seal(command)
                assert opener.open_header(frame[:20]) == len(command) + 16
                assert opener.open_body(frame[20:]) == command
        except Exception as exc:  # reported below
            errors.append(exc)
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors and not any(t.is_alive() for t in threads)


@pytest.mark.parametrize("cipher_class", IMPLEMENTATIONS, ids=IDS)
def test_framing_layer_over_each_implementation(cipher_class):
    key = os.urandom(32)
    sealer = framing.FrameSealer(key, cipher_class=cipher_class)
    opener = framing.FrameOpener(key, cipher_class=cipher_class)
    frame = sealer.seal(b"\x02\x00\x00\x00\x00\x01z")
    assert opener.open_header(frame[:20]) == 23
    assert opener.open_body(frame[20:]) == b"\x02\x00\x00\x00\x00\x01z"
    with pytest.raises(framing.FrameError, match="header authentication failed"):
        opener.open_header(frame[:20])
