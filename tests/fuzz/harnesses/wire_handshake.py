"""Noise XXhfs handshake messages from the peer (`Handshake.read_message`) and the
AuthenticateMessage decoder.

Modes (first byte): the responder reads a fuzzed message 1 and, if it accepts it, writes message 2
(which encapsulates to the peer's Kyber key and runs X25519 on the peer's ephemeral); the
initiator reads an honest message 2 with fuzzed bytes written over it; the responder reads an
honest message 3 likewise; `decode_auth_message` on raw bytes. Documented outcome: the read
succeeds or raises `HandshakeError`, after which the handshake refuses every call with
`HandshakeError`."""
from katzenpost.wire.errors import HandshakeError
from katzenpost.wire.handshake import (AUTH_MESSAGE_LENGTH, MSG1_LENGTH, Handshake,
                                       decode_auth_message, encode_auth_message)
from tests.fuzz.data import Reader
from tests.fuzz.material import INITIATOR_LINK, RESPONDER_LINK, counter_stream

MAX_LEN = 2 * 2048
_CLOCK = lambda: 1_700_000_000.0  # noqa: E731 - a fixed clock keeps runs reproducible


def _pair(label: str):
    initiator = Handshake(initiator=True, link_key=INITIATOR_LINK, additional_data=b"client",
                          rng=counter_stream(label + "i"), clock=_CLOCK)
    responder = Handshake(initiator=False, link_key=RESPONDER_LINK, additional_data=b"mix",
                          rng=counter_stream(label + "r"), clock=_CLOCK)
    return initiator, responder


def _overwrite(message: bytes, r: Reader) -> bytes:
    """The honest message with fuzz bytes written at fuzz-chosen offsets."""
    out = bytearray(message)
    while r.remaining():
        offset = r.uint(2) % len(out)
        patch = r.sized(1)
        out[offset:offset + len(patch)] = patch
    return bytes(out[:len(message)]) if len(out) >= len(message) else bytes(out)


def _read(handshake: Handshake, message: bytes) -> bool:
    try:
        handshake.read_message(message)
        return True
    except HandshakeError:
        pass
    assert not handshake.wants_read and not handshake.wants_write and not handshake.is_complete
    try:
        handshake.read_message(message)
    except HandshakeError:
        return False
    raise AssertionError("a failed handshake accepted another message")


def _msg1(r: Reader) -> None:
    _, responder = _pair("m1")
    if _read(responder, r.rest()):
        try:
            responder.write_message()
        except HandshakeError:
            pass


def _msg2(r: Reader) -> None:
    initiator, responder = _pair("m2")
    responder.read_message(initiator.write_message())
    if _read(initiator, _overwrite(responder.write_message(), r)):
        assert initiator.peer_credentials is not None


def _msg3(r: Reader) -> None:
    initiator, responder = _pair("m3")
    responder.read_message(initiator.write_message())
    initiator.read_message(responder.write_message())
    if _read(responder, _overwrite(initiator.write_message(), r)):
        assert responder.is_complete and responder.split() == initiator.split()[::-1]


def _auth(r: Reader) -> None:
    try:
        additional_data, unix_time = decode_auth_message(r.rest())
    except HandshakeError:
        return
    assert len(additional_data) < AUTH_MESSAGE_LENGTH and 0 <= unix_time < 2**32


def TestOneInput(data: bytes) -> None:
    r = Reader(data)
    (_msg1, _msg2, _msg3, _auth)[r.choice(4)](r)


def seeds():
    initiator, _ = _pair("seed")
    msg1 = initiator.write_message()
    assert len(msg1) == MSG1_LENGTH
    return {
        "msg1": bytes([0]) + msg1,
        "msg2-untouched": bytes([1]),
        "msg2-patch": bytes([1, 0, 40, 4]) + b"\xff" * 4,
        "msg3-untouched": bytes([2]),
        "msg3-patch": bytes([2, 1, 0, 2]) + b"\x00\x01",
        "auth": bytes([3]) + encode_auth_message(b"provider.example", 1_700_000_000),
    }
