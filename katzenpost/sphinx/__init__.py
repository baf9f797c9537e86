"""Katzenpost Sphinx packet format (2021 suite), byte-compatible with the Go reference.

The public API over the compiled core: packet and SURB creation, unwrap, SURB payload
decryption. No I/O and no policy (what a node does with the commands is the server's job).
"""
import os

from katzenpost._core import sphinx as _core
from katzenpost.sphinx import commands, errors, geometry
from katzenpost.sphinx.commands import NextNodeHop, NodeDelay, Recipient, SURBReply
from katzenpost.sphinx.errors import SphinxError
from katzenpost.sphinx.types import PathHop, Unwrapped

__all__ = [
    "unwrap", "Unwrapped", "new_packet", "new_surb", "new_packet_from_surb",
    "decrypt_surb_payload", "public_key", "PathHop", "SphinxError", "NextNodeHop",
    "Recipient", "SURBReply", "NodeDelay", "geometry", "commands", "errors",
]

_BASE_POINT = bytes([9]) + bytes(31)


def _exact(value, length, what):
    value = bytes(value)
    if len(value) != length:
        raise ValueError(f"sphinx: {what} must be {length} bytes, got {len(value)}")
    return value


def _read(source, length, what):
    data = bytes(source(length))
    if len(data) != length:
        raise ValueError(f"sphinx: {what} returned {len(data)} bytes, {length} requested")
    return data


def public_key(private_key):
    """The X25519 public key (X25519(k, 9)) of a raw 32-byte private key."""
    return _core.x25519(_exact(private_key, geometry.GROUP_ELEMENT_LENGTH, "private key"), _BASE_POINT)


def unwrap(private_key, packet):
    """Unwrap `packet` at the node holding `private_key` (the Sphinx Packet Format Specification).

    Returns Unwrapped; raises SphinxError with the reference's message (and `replay_tag`
    set for every error after the version check).
    """
    key = _exact(private_key, geometry.GROUP_ELEMENT_LENGTH, "private key")
    buf = bytearray(packet)
    status, _, tag, slot = _core.unwrap(key, buf)
    if status != errors.OK:
        raise SphinxError.from_code(status, tag)
    cmds = commands.parse(slot)
    if any(isinstance(c, NextNodeHop) for c in cmds):
        return Unwrapped(bytes(buf), None, tag, cmds)
    if any(isinstance(c, SURBReply) for c in cmds):
        return Unwrapped(None, bytes(buf[geometry.HEADER_LENGTH :]), tag, cmds)
    return Unwrapped(None, bytes(buf[geometry.HEADER_LENGTH + geometry.PAYLOAD_TAG_LENGTH :]), tag, cmds)


def _create_header(path, rng, filler):
    n = len(path)
    if not 1 <= n <= geometry.NR_HOPS:
        raise SphinxError(errors.INVALID_PATH)
    blocks = commands.serialize_path(path)
    ids = b"".join(_exact(hop.id, geometry.NODE_ID_LENGTH, f"path[{i}].id") for i, hop in enumerate(path))
    keys = b"".join(_exact(hop.public_key, geometry.GROUP_ELEMENT_LENGTH, f"path[{i}].public_key")
                    for i, hop in enumerate(path))
    ephemeral = _read(rng, geometry.GROUP_ELEMENT_LENGTH, "rng")
    filler_len = (geometry.NR_HOPS - n) * geometry.PER_HOP_ROUTING_INFO_LENGTH
    padding = _read(filler, filler_len, "filler") if filler_len else b""
    padded = b"".join(b.ljust(geometry.PER_HOP_ROUTING_INFO_LENGTH, b"\x00") for b in blocks)
    return _core.create_header(ephemeral, ids, keys, padded, [len(b) for b in blocks], padding)


def new_packet(path, payload, rng=None, filler=None):
    """A forward packet along `path` (1..5 PathHop) carrying `payload` (the Sphinx Packet Format Specification).

    `rng(n)` supplies the ephemeral key, `filler(n)` the padding of unused hops (both
    default to os.urandom). The payload is not padded: 2048 bytes in production.
    """
    header, sprp_keys = _create_header(path, rng or os.urandom, filler or os.urandom)
    return header + _core.encrypt_payload(sprp_keys, bytes(payload))


def new_surb(path, rng=None, filler=None):
    """A SURB for `path` and the keys to decrypt its reply (the Sphinx Packet Format Specification): (surb, keys)."""
    rng = rng or os.urandom
    reply_key = _read(rng, geometry.SPRP_KEY_MATERIAL_LENGTH, "rng")
    header, sprp_keys = _create_header(path, rng, filler or os.urandom)
    step = geometry.SPRP_KEY_MATERIAL_LENGTH
    entries = [sprp_keys[i : i + step] for i in range(0, len(sprp_keys), step)]
    surb = header + bytes(path[0].id) + reply_key
    return surb, b"".join(reversed(entries)) + reply_key


def new_packet_from_surb(surb, payload):
    """The reply packet for `surb` carrying `payload` and its first hop id (the Sphinx Packet Format Specification)."""
    surb = bytes(surb)
    if len(surb) != geometry.SURB_LENGTH:
        raise SphinxError(errors.INVALID_SURB)
    header = surb[: geometry.HEADER_LENGTH]
    first_hop = surb[geometry.HEADER_LENGTH : geometry.HEADER_LENGTH + geometry.NODE_ID_LENGTH]
    reply_key = surb[geometry.HEADER_LENGTH + geometry.NODE_ID_LENGTH :]
    return header + _core.encrypt_payload(reply_key, bytes(payload)), first_hop


def decrypt_surb_payload(payload, keys):
    """The plaintext of a SURB reply payload, given the keys from new_surb (the Sphinx Packet Format Specification)."""
    keys = bytes(keys)
    if not keys or len(keys) % geometry.SPRP_KEY_MATERIAL_LENGTH:
        raise SphinxError(errors.INVALID_SURB_KEYS)
    if len(payload) < geometry.PAYLOAD_TAG_LENGTH:
        raise SphinxError.from_code(errors.ERR_TRUNCATED_PAYLOAD)
    status, plaintext = _core.decrypt_surb_payload(bytes(payload), keys)
    if status != errors.OK:
        raise SphinxError.from_code(status)
    return plaintext[geometry.PAYLOAD_TAG_LENGTH :]
