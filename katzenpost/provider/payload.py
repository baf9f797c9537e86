"""The BlockSphinxPlaintext inside a terminal packet's 2048-byte payload (`flags | 0x00 | SURB or
zeros | 1490-byte plaintext`), and the payload of a SURB reply from this provider."""
from __future__ import annotations

from katzenpost.sphinx.geometry import (FORWARD_PAYLOAD_LENGTH, SPHINX_PLAINTEXT_HEADER_LENGTH, SURB_LENGTH,
                                        USER_FORWARD_PAYLOAD_LENGTH)

FLAG_PADDING = 0
FLAG_SURB = 1
MAX_REPLY_LENGTH = FORWARD_PAYLOAD_LENGTH - SPHINX_PLAINTEXT_HEADER_LENGTH  # 2046
_BODY_OFFSET = SPHINX_PLAINTEXT_HEADER_LENGTH + SURB_LENGTH  # 558
_ZERO_PAYLOAD = bytes(FORWARD_PAYLOAD_LENGTH)


class PayloadError(ValueError):
    """A malformed forward payload or an oversized reply (the packet is dropped)."""


def parse_forward_payload(payload) -> tuple[bytes | None, bytes]:
    """(SURB or None, 1490-byte plaintext) of a forward packet's decrypted payload."""
    payload = memoryview(payload)
    if len(payload) != FORWARD_PAYLOAD_LENGTH:
        raise PayloadError(f"payload must be {FORWARD_PAYLOAD_LENGTH} bytes, got {len(payload)}")
    flags, reserved = payload[0], payload[1]
    if reserved != 0:
        raise PayloadError("payload reserved byte is not zero")
    if flags not in (FLAG_PADDING, FLAG_SURB):
        raise PayloadError(f"payload flags {flags:#x} are invalid")
    surb = bytes(payload[SPHINX_PLAINTEXT_HEADER_LENGTH:_BODY_OFFSET]) if flags == FLAG_SURB else None
    body = bytes(payload[_BODY_OFFSET:])
    assert len(body) == USER_FORWARD_PAYLOAD_LENGTH
    return surb, body


def reply_payload(response: bytes | None) -> bytes:
    """`0x01 0x00 ‖ response`, zero padded to 2048 bytes (None or b"": an all-zero reply body)."""
    response = bytes(response or b"")
    if len(response) > MAX_REPLY_LENGTH:
        raise PayloadError(f"oversized response payload: {len(response)} > {MAX_REPLY_LENGTH} bytes")
    head = bytes((FLAG_SURB, 0)) + response
    return head + _ZERO_PAYLOAD[len(head):]


def surb_ack_payload() -> bytes:
    """A SURB-ACK carries 2048 zero bytes."""
    return _ZERO_PAYLOAD
