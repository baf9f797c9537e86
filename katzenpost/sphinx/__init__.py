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
    "unwrap", "Unwrapped", "new_packet", "new_packets", "new_surb", "new_surbs",
    "new_packet_from_surb", "decrypt_surb_payload", "public_key", "PathHop", "SphinxError",
    "NextNodeHop", "Recipient", "SURBReply", "NodeDelay", "geometry", "commands", "errors",
    "X25519_BACKEND", "IFMA_STATUS",
]

_BASE_POINT = bytes([9]) + bytes(31)

# The X25519 backend chosen at import (docs/sphinx-backends.md): "ifma" (batches in eight
# AVX-512 IFMA lanes), "libsodium" or "openssl"; KATZENPOST_X25519_BACKEND forces one.
X25519_BACKEND = _core.x25519_backend()
# "loaded", or why the lane backend is not available (for start-up logs and STATUS).
IFMA_STATUS = _core.ifma_status()


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


def _header_request(path, rng, filler):
    """The compiled core's creation request for `path`, reading the ephemeral key from `rng`
    then the padding of unused hops from `filler` (the order the reference reads them)."""
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
    return ephemeral, ids, keys, padded, [len(b) for b in blocks], padding


def new_packets(paths, payloads, rng=None, filler=None):
    """Forward packets, one per (path, payload) pair (the Sphinx Packet Format
    Specification): the batch form of new_packet, byte for byte what calling it in a loop
    with the same `rng` and `filler` gives, with the X25519s of eight packets at a time in
    lanes under the lane backend."""
    paths, payloads = list(paths), list(payloads)
    if len(paths) != len(payloads):
        raise ValueError(f"sphinx: {len(paths)} paths but {len(payloads)} payloads")
    rng, filler = rng or os.urandom, filler or os.urandom
    headers = _core.create_headers([_header_request(path, rng, filler) for path in paths])
    return [header + _core.encrypt_payload(sprp_keys, bytes(payload))
            for (header, sprp_keys), payload in zip(headers, payloads)]


def new_packet(path, payload, rng=None, filler=None):
    """A forward packet along `path` (1..5 PathHop) carrying `payload` (the Sphinx Packet Format Specification).

    `rng(n)` supplies the ephemeral key, `filler(n)` the padding of unused hops (both
    default to os.urandom). The payload is not padded: 2048 bytes in production.
    """
    return new_packets([path], [payload], rng, filler)[0]


def new_surbs(paths, rng=None, filler=None):
    """SURBs and their reply keys, one (surb, keys) per path (the Sphinx Packet Format
    Specification): the batch form of new_surb, byte for byte what calling it in a loop with
    the same `rng` and `filler` gives."""
    paths, rng, filler = list(paths), rng or os.urandom, filler or os.urandom
    reply_keys, requests = [], []
    for path in paths:  # per SURB: the reply key, then the header's reads, as new_surb
        reply_keys.append(_read(rng, geometry.SPRP_KEY_MATERIAL_LENGTH, "rng"))
        requests.append(_header_request(path, rng, filler))
    step = geometry.SPRP_KEY_MATERIAL_LENGTH
    out = []
    for path, reply_key, (header, sprp_keys) in zip(paths, reply_keys, _core.create_headers(requests)):
        entries = [sprp_keys[i : i + step] for i in range(0, len(sprp_keys), step)]
        out.append((header + bytes(path[0].id) + reply_key, b"".join(reversed(entries)) + reply_key))
    return out


def new_surb(path, rng=None, filler=None):
    """A SURB for `path` and the keys to decrypt its reply (the Sphinx Packet Format
    Specification): (surb, keys)."""
    return new_surbs([path], rng, filler)[0]


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
