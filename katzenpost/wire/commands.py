"""Wire commands of the 2021 link protocol: one class per command, strict codec (the Wire Protocol Specification).

Every command has ``to_bytes()`` and ``from_bytes(data)``; ``parse_command(data)`` decodes any
of them. Decoding enforces the reserved byte, exact body lengths and all-zero padding and raises
``CommandError`` naming the command and the fault. Pure bytes in, bytes out: no I/O, no logging.
"""
from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Callable, ClassVar

from ..sphinx.geometry import (
    FORWARD_PAYLOAD_LENGTH,
    PAYLOAD_TAG_LENGTH,
    SPHINX_PLAINTEXT_HEADER_LENGTH,
    SURB_ID_LENGTH,
    SURB_LENGTH,
    USER_FORWARD_PAYLOAD_LENGTH,
)
from .errors import CommandError

COMMAND_HEADER_LENGTH = 1 + 1 + 4  # id ‖ reserved ‖ body length (u32 BE)
PUBLIC_KEY_LENGTH = 32  # Ed25519 key in Vote / GetVote / Reveal
EPOCH_LENGTH = 8

MESSAGE_PREFIX_LENGTH = 1 + 1 + 4  # type ‖ queue-size hint ‖ sequence
MESSAGE_PADDING_LENGTH = SURB_ID_LENGTH + SPHINX_PLAINTEXT_HEADER_LENGTH + SURB_LENGTH + PAYLOAD_TAG_LENGTH  # 590
MESSAGE_ACK_PAYLOAD_LENGTH = PAYLOAD_TAG_LENGTH + FORWARD_PAYLOAD_LENGTH  # 2064
MESSAGE_VARIANT_LENGTH = SURB_ID_LENGTH + MESSAGE_ACK_PAYLOAD_LENGTH  # 2080, same for all three
MESSAGE_BODY_LENGTH = MESSAGE_PREFIX_LENGTH + MESSAGE_VARIANT_LENGTH  # 2086
assert USER_FORWARD_PAYLOAD_LENGTH + MESSAGE_PADDING_LENGTH == MESSAGE_VARIANT_LENGTH

_HEADER = struct.Struct(">BBI")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_MESSAGE_PREFIX = struct.Struct(">BBI")
_ZERO_MESSAGE_PADDING = bytes(MESSAGE_PADDING_LENGTH)
_ZERO_MESSAGE_VARIANT = bytes(MESSAGE_VARIANT_LENGTH)


class CommandID(IntEnum):
    NO_OP = 0
    DISCONNECT = 1
    SEND_PACKET = 2
    RETRIEVE_MESSAGE = 16
    MESSAGE = 17
    GET_CONSENSUS = 18
    CONSENSUS = 19
    POST_DESCRIPTOR = 20
    POST_DESCRIPTOR_STATUS = 21
    VOTE = 22
    VOTE_STATUS = 23
    GET_VOTE = 24
    REVEAL = 25
    REVEAL_STATUS = 26


class MessageType(IntEnum):
    MESSAGE = 0
    ACK = 1
    EMPTY = 2


class ConsensusStatus(IntEnum):
    OK = 0
    NOT_FOUND = 1
    GONE = 2


class DescriptorStatus(IntEnum):
    OK = 0
    INVALID = 1
    CONFLICT = 2
    FORBIDDEN = 3


class VoteStatusCode(IntEnum):
    OK = 0
    TOO_LATE = 1
    TOO_EARLY = 2
    NOT_AUTHORIZED = 3
    NOT_SIGNED = 4
    MALFORMED = 5
    ALREADY_RECEIVED = 6
    NOT_FOUND = 7


class RevealStatusCode(IntEnum):
    OK = 8
    TOO_EARLY = 9
    NOT_AUTHORIZED = 10
    ALREADY_RECEIVED = 11
    TOO_LATE = 12


def _frame(command_id: int, body: bytes) -> bytes:
    return _HEADER.pack(command_id, 0, len(body)) + body


def _check_uint(name: str, value: int, bits: int) -> None:
    if not isinstance(value, int) or value < 0 or value >> bits:
        raise CommandError(f"wire: {name} must be an unsigned {bits}-bit integer, got {value!r}")


def _check_exact(name: str, data: bytes, expected: int) -> None:
    if len(data) != expected:
        raise CommandError(f"wire: {name} must be {expected} bytes, got {len(data)}")


def _encode_status(command) -> bytes:
    """to_bytes of the one-byte status replies (PostDescriptorStatus, VoteStatus, RevealStatus)."""
    _check_uint(f"{type(command).__name__}.error_code", command.error_code, 8)
    return _frame(command.command_id, bytes([command.error_code]))


class Command:
    """Base class: ``from_bytes`` on it decodes any command; on a subclass, only that one."""

    __slots__ = ()
    command_id: ClassVar[int]

    def to_bytes(self) -> bytes:
        raise NotImplementedError

    def __repr__(self) -> str:
        """Fields, with long byte strings shown by length only (commands end up in logs)."""
        parts = []
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, (bytes, bytearray)) and len(value) > 32:
                parts.append(f"{field.name}=<{len(value)} bytes>")
            else:
                parts.append(f"{field.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    @classmethod
    def from_bytes(cls, data: bytes) -> "Command":
        command = parse_command(data)
        if cls is not Command and type(command) is not cls:
            raise CommandError(f"wire: expected {cls.__name__}, got {type(command).__name__}")
        return command


@dataclass(slots=True, repr=False)
class NoOp(Command):
    command_id: ClassVar[int] = CommandID.NO_OP

    def to_bytes(self) -> bytes:
        return _frame(self.command_id, b"")


@dataclass(slots=True, repr=False)
class Disconnect(Command):
    command_id: ClassVar[int] = CommandID.DISCONNECT

    def to_bytes(self) -> bytes:
        return _frame(self.command_id, b"")


@dataclass(slots=True, repr=False)
class SendPacket(Command):
    """A Sphinx packet; any length decodes (even 0), the server insists on PACKET_LENGTH."""

    sphinx_packet: bytes
    command_id: ClassVar[int] = CommandID.SEND_PACKET

    def to_bytes(self) -> bytes:
        return _frame(self.command_id, self.sphinx_packet)


@dataclass(slots=True, repr=False)
class RetrieveMessage(Command):
    sequence: int
    command_id: ClassVar[int] = CommandID.RETRIEVE_MESSAGE

    def to_bytes(self) -> bytes:
        _check_uint("RetrieveMessage.sequence", self.sequence, 32)
        return _frame(self.command_id, _U32.pack(self.sequence))


@dataclass(slots=True, repr=False)
class Message(Command):
    """A spooled user message: exactly USER_FORWARD_PAYLOAD_LENGTH bytes, zero padded on the wire."""

    queue_size_hint: int
    sequence: int
    payload: bytes
    command_id: ClassVar[int] = CommandID.MESSAGE

    def to_bytes(self) -> bytes:
        _check_uint("Message.queue_size_hint", self.queue_size_hint, 8)
        _check_uint("Message.sequence", self.sequence, 32)
        _check_exact("Message.payload", self.payload, USER_FORWARD_PAYLOAD_LENGTH)
        prefix = _MESSAGE_PREFIX.pack(MessageType.MESSAGE, self.queue_size_hint, self.sequence)
        return _frame(self.command_id, prefix + bytes(self.payload) + _ZERO_MESSAGE_PADDING)


@dataclass(slots=True, repr=False)
class MessageACK(Command):
    """A SURB-ACK: SURB ID and the 2064-byte still-encrypted Sphinx payload."""

    queue_size_hint: int
    sequence: int
    surb_id: bytes
    payload: bytes
    command_id: ClassVar[int] = CommandID.MESSAGE

    def to_bytes(self) -> bytes:
        _check_uint("MessageACK.queue_size_hint", self.queue_size_hint, 8)
        _check_uint("MessageACK.sequence", self.sequence, 32)
        _check_exact("MessageACK.surb_id", self.surb_id, SURB_ID_LENGTH)
        _check_exact("MessageACK.payload", self.payload, MESSAGE_ACK_PAYLOAD_LENGTH)
        prefix = _MESSAGE_PREFIX.pack(MessageType.ACK, self.queue_size_hint, self.sequence)
        return _frame(self.command_id, prefix + bytes(self.surb_id) + bytes(self.payload))


@dataclass(slots=True, repr=False)
class MessageEmpty(Command):
    """The spool is empty; sent with hint 0, the hint is ignored on receive."""

    sequence: int
    command_id: ClassVar[int] = CommandID.MESSAGE

    def to_bytes(self) -> bytes:
        _check_uint("MessageEmpty.sequence", self.sequence, 32)
        prefix = _MESSAGE_PREFIX.pack(MessageType.EMPTY, 0, self.sequence)
        return _frame(self.command_id, prefix + _ZERO_MESSAGE_VARIANT)


@dataclass(slots=True, repr=False)
class GetConsensus(Command):
    epoch: int
    command_id: ClassVar[int] = CommandID.GET_CONSENSUS

    def to_bytes(self) -> bytes:
        _check_uint("GetConsensus.epoch", self.epoch, 64)
        return _frame(self.command_id, _U64.pack(self.epoch))


@dataclass(slots=True, repr=False)
class Consensus(Command):
    error_code: int
    payload: bytes = b""
    command_id: ClassVar[int] = CommandID.CONSENSUS

    def to_bytes(self) -> bytes:
        _check_uint("Consensus.error_code", self.error_code, 8)
        return _frame(self.command_id, bytes([self.error_code]) + bytes(self.payload))


@dataclass(slots=True, repr=False)
class PostDescriptor(Command):
    epoch: int
    payload: bytes
    command_id: ClassVar[int] = CommandID.POST_DESCRIPTOR

    def to_bytes(self) -> bytes:
        _check_uint("PostDescriptor.epoch", self.epoch, 64)
        return _frame(self.command_id, _U64.pack(self.epoch) + bytes(self.payload))


@dataclass(slots=True, repr=False)
class PostDescriptorStatus(Command):
    error_code: int
    command_id: ClassVar[int] = CommandID.POST_DESCRIPTOR_STATUS

    to_bytes = _encode_status


@dataclass(slots=True, repr=False)
class Vote(Command):
    epoch: int
    public_key: bytes
    payload: bytes
    command_id: ClassVar[int] = CommandID.VOTE

    def to_bytes(self) -> bytes:
        body = _epoch_key_body("Vote", self.epoch, self.public_key) + bytes(self.payload)
        return _frame(self.command_id, body)


@dataclass(slots=True, repr=False)
class VoteStatus(Command):
    error_code: int
    command_id: ClassVar[int] = CommandID.VOTE_STATUS

    to_bytes = _encode_status


@dataclass(slots=True, repr=False)
class GetVote(Command):
    epoch: int
    public_key: bytes
    command_id: ClassVar[int] = CommandID.GET_VOTE

    def to_bytes(self) -> bytes:
        return _frame(self.command_id, _epoch_key_body("GetVote", self.epoch, self.public_key))


@dataclass(slots=True, repr=False)
class Reveal(Command):
    epoch: int
    public_key: bytes
    payload: bytes
    command_id: ClassVar[int] = CommandID.REVEAL

    def to_bytes(self) -> bytes:
        body = _epoch_key_body("Reveal", self.epoch, self.public_key) + bytes(self.payload)
        return _frame(self.command_id, body)


@dataclass(slots=True, repr=False)
class RevealStatus(Command):
    error_code: int
    command_id: ClassVar[int] = CommandID.REVEAL_STATUS

    to_bytes = _encode_status


def _epoch_key_body(name: str, epoch: int, public_key: bytes) -> bytes:
    _check_uint(f"{name}.epoch", epoch, 64)
    _check_exact(f"{name}.public_key", public_key, PUBLIC_KEY_LENGTH)
    return _U64.pack(epoch) + bytes(public_key)


# -- decoding --------------------------------------------------------------------------------

def _decode_empty(cls: type) -> Callable[[bytes], Command]:
    def decode(body: bytes) -> Command:
        if body:
            raise CommandError(f"wire: {cls.__name__} must have an empty body, got {len(body)} bytes")
        return cls()
    return decode


def _decode_send_packet(body: bytes) -> SendPacket:
    return SendPacket(body)


def _decode_retrieve_message(body: bytes) -> RetrieveMessage:
    _check_exact("RetrieveMessage body", body, 4)
    return RetrieveMessage(_U32.unpack(body)[0])


def _decode_message(body: bytes) -> Command:
    if len(body) < MESSAGE_PREFIX_LENGTH:
        raise CommandError(f"wire: Message body must be at least {MESSAGE_PREFIX_LENGTH} bytes, "
                           f"got {len(body)}")
    message_type, hint, sequence = _MESSAGE_PREFIX.unpack_from(body)
    variant = body[MESSAGE_PREFIX_LENGTH:]
    if message_type == MessageType.MESSAGE:
        _check_exact("Message (type 0) variant", variant, MESSAGE_VARIANT_LENGTH)
        if not hmac.compare_digest(variant[USER_FORWARD_PAYLOAD_LENGTH:], _ZERO_MESSAGE_PADDING):
            raise CommandError("wire: Message (type 0) padding is not all zero")
        return Message(hint, sequence, variant[:USER_FORWARD_PAYLOAD_LENGTH])
    if message_type == MessageType.ACK:
        _check_exact("MessageACK (type 1) variant", variant, MESSAGE_VARIANT_LENGTH)
        return MessageACK(hint, sequence, variant[:SURB_ID_LENGTH], variant[SURB_ID_LENGTH:])
    if message_type == MessageType.EMPTY:
        _check_exact("MessageEmpty (type 2) variant", variant, MESSAGE_VARIANT_LENGTH)
        if not hmac.compare_digest(variant, _ZERO_MESSAGE_VARIANT):
            raise CommandError("wire: MessageEmpty (type 2) body is not all zero")
        return MessageEmpty(sequence)
    raise CommandError(f"wire: unknown Message type {message_type}")


def _decode_get_consensus(body: bytes) -> GetConsensus:
    _check_exact("GetConsensus body", body, EPOCH_LENGTH)
    return GetConsensus(_U64.unpack(body)[0])


def _decode_consensus(body: bytes) -> Consensus:
    if not body:
        raise CommandError("wire: Consensus body must hold at least the error code")
    return Consensus(body[0], body[1:])


def _decode_post_descriptor(body: bytes) -> PostDescriptor:
    if len(body) < EPOCH_LENGTH:
        raise CommandError(f"wire: PostDescriptor body must be at least {EPOCH_LENGTH} bytes, "
                           f"got {len(body)}")
    return PostDescriptor(_U64.unpack_from(body)[0], body[EPOCH_LENGTH:])


def _decode_status(cls: type) -> Callable[[bytes], Command]:
    def decode(body: bytes) -> Command:
        _check_exact(f"{cls.__name__} body", body, 1)
        return cls(body[0])
    return decode


def _decode_epoch_key_payload(cls: type) -> Callable[[bytes], Command]:
    minimum = EPOCH_LENGTH + PUBLIC_KEY_LENGTH

    def decode(body: bytes) -> Command:
        if len(body) < minimum:
            raise CommandError(f"wire: {cls.__name__} body must be at least {minimum} bytes, "
                               f"got {len(body)}")
        return cls(_U64.unpack_from(body)[0], body[EPOCH_LENGTH:minimum], body[minimum:])
    return decode


def _decode_get_vote(body: bytes) -> GetVote:
    _check_exact("GetVote body", body, EPOCH_LENGTH + PUBLIC_KEY_LENGTH)
    return GetVote(_U64.unpack_from(body)[0], body[EPOCH_LENGTH:])


_DECODERS: dict[int, Callable[[bytes], Command]] = {
    CommandID.NO_OP: _decode_empty(NoOp),
    CommandID.DISCONNECT: _decode_empty(Disconnect),
    CommandID.SEND_PACKET: _decode_send_packet,
    CommandID.RETRIEVE_MESSAGE: _decode_retrieve_message,
    CommandID.MESSAGE: _decode_message,
    CommandID.GET_CONSENSUS: _decode_get_consensus,
    CommandID.CONSENSUS: _decode_consensus,
    CommandID.POST_DESCRIPTOR: _decode_post_descriptor,
    CommandID.POST_DESCRIPTOR_STATUS: _decode_status(PostDescriptorStatus),
    CommandID.VOTE: _decode_epoch_key_payload(Vote),
    CommandID.VOTE_STATUS: _decode_status(VoteStatus),
    CommandID.GET_VOTE: _decode_get_vote,
    CommandID.REVEAL: _decode_epoch_key_payload(Reveal),
    CommandID.REVEAL_STATUS: _decode_status(RevealStatus),
}
# int keys for the hot path (an IntEnum hashes like its int, but plain ints keep it obvious).
_DECODERS = {int(command_id): decoder for command_id, decoder in _DECODERS.items()}


def parse_command(data: bytes) -> Command:
    """Decode one command (header, body, zero padding); raises CommandError on any fault."""
    data = bytes(data)
    total = len(data)
    if total < COMMAND_HEADER_LENGTH:
        raise CommandError(f"wire: command of {total} bytes is shorter than the "
                           f"{COMMAND_HEADER_LENGTH}-byte header")
    command_id, reserved, body_length = _HEADER.unpack_from(data)
    if reserved != 0:
        raise CommandError(f"wire: command {command_id} has reserved byte 0x{reserved:02x}, must be 0")
    end = COMMAND_HEADER_LENGTH + body_length
    if end > total:
        raise CommandError(f"wire: command {command_id} declares {body_length} body bytes, "
                           f"only {total - COMMAND_HEADER_LENGTH} present")
    if end < total and data.count(0, end) != total - end:
        raise CommandError(f"wire: command {command_id} has non-zero padding")
    decoder = _DECODERS.get(command_id)
    if decoder is None:
        raise CommandError(f"wire: unknown command id {command_id}")
    return decoder(data[COMMAND_HEADER_LENGTH:end])
