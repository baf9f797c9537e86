"""Sphinx per-hop routing commands (sphinx/commands of the Go reference): codec only.

Serializes commands for packet creation and parses a decrypted 82-byte routing slot; it does
not decide what a node does with them (that is the server's job).
"""
import struct
from dataclasses import dataclass

from katzenpost.sphinx import geometry as g
from katzenpost.sphinx import errors
from katzenpost.sphinx.errors import ERR_INVALID_COMMAND, SphinxError

NULL_CMD = 0x00
NEXT_NODE_HOP_CMD = 0x01
RECIPIENT_CMD = 0x02
SURB_REPLY_CMD = 0x03
NODE_DELAY_CMD = 0x80


def _check_length(name, value, length):
    value = bytes(value)
    if len(value) != length:
        raise ValueError(f"sphinx commands: {name} must be {length} bytes, got {len(value)}")
    return value


@dataclass(frozen=True)
class NextNodeHop:
    """Route to the next node `id` (32 bytes); `mac` (16 bytes) is that hop's header MAC."""

    id: bytes
    mac: bytes

    def __post_init__(self):
        object.__setattr__(self, "id", _check_length("NextNodeHop.id", self.id, g.NODE_ID_LENGTH))
        object.__setattr__(self, "mac", _check_length("NextNodeHop.mac", self.mac, g.MAC_LENGTH))

    def to_bytes(self):
        return bytes((NEXT_NODE_HOP_CMD,)) + self.id + self.mac


@dataclass(frozen=True)
class Recipient:
    """Deliver to the recipient (queue) `id` (64 bytes) at this, the terminal, hop."""

    id: bytes

    def __post_init__(self):
        object.__setattr__(self, "id", _check_length("Recipient.id", self.id, g.RECIPIENT_ID_LENGTH))

    def to_bytes(self):
        return bytes((RECIPIENT_CMD,)) + self.id


@dataclass(frozen=True)
class SURBReply:
    """The payload is a SURB reply identified by `id` (16 bytes)."""

    id: bytes

    def __post_init__(self):
        object.__setattr__(self, "id", _check_length("SURBReply.id", self.id, g.SURB_ID_LENGTH))

    def to_bytes(self):
        return bytes((SURB_REPLY_CMD,)) + self.id


@dataclass(frozen=True)
class NodeDelay:
    """Hold the packet `delay` milliseconds at this hop (uint32, big-endian on the wire)."""

    delay: int

    def __post_init__(self):
        if not isinstance(self.delay, int) or not 0 <= self.delay <= 0xFFFFFFFF:
            raise ValueError(f"sphinx commands: NodeDelay.delay must be a uint32, got {self.delay!r}")

    def to_bytes(self):
        return struct.pack(">BI", NODE_DELAY_CMD, self.delay)


# id -> (total length including the id byte, constructor from the body bytes)
_DECODERS = {
    NEXT_NODE_HOP_CMD: (g.NEXT_NODE_HOP_LENGTH, lambda b: NextNodeHop(b[: g.NODE_ID_LENGTH], b[g.NODE_ID_LENGTH :])),
    RECIPIENT_CMD: (g.RECIPIENT_LENGTH, lambda b: Recipient(b)),
    SURB_REPLY_CMD: (g.SURB_REPLY_LENGTH, lambda b: SURBReply(b)),
    NODE_DELAY_CMD: (g.NODE_DELAY_LENGTH, lambda b: NodeDelay(struct.unpack(">I", b)[0])),
}


def iter_parse(slot):
    """Yield the commands of a decrypted routing slot one by one, in wire order, as the
    reference's FromBytes loop reads them (the caller may stop early, e.g. on a duplicate).

    Raises SphinxError("sphinx: invalid per-hop command") on reaching an unknown id, a
    truncated command or non-zero bytes after the null terminator.
    """
    slot = bytes(slot)
    offset = 0
    while offset < len(slot):
        cmd_id = slot[offset]
        remaining = len(slot) - offset
        if cmd_id == NULL_CMD:
            if any(slot[offset + 1 :]):
                raise SphinxError.from_code(ERR_INVALID_COMMAND)
            return
        decoder = _DECODERS.get(cmd_id)
        if decoder is None or remaining < decoder[0]:
            raise SphinxError.from_code(ERR_INVALID_COMMAND)
        length, build = decoder
        yield build(slot[offset + 1 : offset + length])
        offset += length


def parse(slot):
    """Parse a whole decrypted routing slot into its commands (terminator excluded).

    Raises SphinxError("sphinx: invalid per-hop command") like iter_parse; duplicates are
    not checked here (unwrap does that, as the reference does).
    """
    return list(iter_parse(slot))


def serialize(commands):
    """Concatenate the serialized commands in the given order (no padding)."""
    return b"".join(cmd.to_bytes() for cmd in commands)


def serialize_path(path):
    """The serialized user commands of every hop of `path` (PathHop list), in hop order.

    Hops are checked from the terminal one backwards, as the reference builds the routing
    information, so that with several bad hops the same error is reported.
    """
    n = len(path)
    blocks = [serialize_hop(path[i].commands, i == n - 1) for i in reversed(range(n))]
    return blocks[::-1]


def serialize_hop(commands, is_terminal):
    """Serialize one hop's user commands for packet creation, with the reference's checks.

    The generated NextNodeHop is not included (the caller appends it for non-terminal hops).
    """
    for cmd in commands:
        if isinstance(cmd, NextNodeHop):
            raise SphinxError(errors.INVALID_COMMANDS_NEXT_NODE)
        if not isinstance(cmd, (Recipient, SURBReply, NodeDelay)):
            raise TypeError(f"sphinx commands: not a routing command: {cmd!r}")
    block = serialize(commands)
    if len(block) > g.PER_HOP_ROUTING_INFO_LENGTH:
        raise SphinxError(errors.INVALID_COMMANDS_OVERSIZED)
    if not is_terminal and len(block) > g.PER_HOP_ROUTING_INFO_LENGTH - g.NEXT_NODE_HOP_LENGTH:
        raise SphinxError(errors.INVALID_COMMANDS_CAPACITY)
    return block
