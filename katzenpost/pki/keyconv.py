"""Ed25519 -> X25519 key conversion (the reference's extra25519 / `ToECDH`).

Used for the authority's link key and a node's key when it talks to the authority. The private
half is `keys.IdentityKey.to_x25519_private` (one home for it); the public half, which needs only
the Ed25519 public key, is the Edwards-to-Montgomery map here. Never touches key files.
"""
from __future__ import annotations

from katzenpost.keys import IdentityKey

# Field prime of Curve25519 / Ed25519.
_P = 2**255 - 19
KEY_LEN = 32


class KeyConversionError(ValueError):
    """A key that cannot be converted (wrong length, or y = 1)."""


def x25519_private_from_ed25519_seed(seed: bytes) -> bytes:
    """SHA-512(seed)[0:32], clamped: the X25519 scalar matching the Ed25519 signing scalar."""
    if len(seed) != KEY_LEN:
        raise KeyConversionError(f"keyconv: Ed25519 seed must be {KEY_LEN} bytes, got {len(seed)}")
    return IdentityKey.from_seed(bytes(seed)).to_x25519_private()


def x25519_public_from_ed25519_public(public_key: bytes) -> bytes:
    """The birational map u = (1 + y) / (1 - y) from the Edwards y coordinate."""
    if len(public_key) != KEY_LEN:
        raise KeyConversionError(
            f"keyconv: Ed25519 public key must be {KEY_LEN} bytes, got {len(public_key)}")
    y = int.from_bytes(public_key, "little") & ((1 << 255) - 1)
    if y >= _P:
        raise KeyConversionError("keyconv: Ed25519 public key has a non-canonical y coordinate")
    denominator = (1 - y) % _P
    if denominator == 0:
        raise KeyConversionError("keyconv: Ed25519 public key maps to the point at infinity")
    u = (1 + y) * pow(denominator, _P - 2, _P) % _P
    return u.to_bytes(KEY_LEN, "little")
