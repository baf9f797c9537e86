"""Noise protocol building blocks for Noise_XXhfs_25519+Kyber1024_ChaChaPoly_BLAKE2b.

CipherState, SymmetricState and Noise's HKDF over ``cryptography`` and ``hashlib`` (the
Wire Protocol Specification). Pure computation on bytes: no I/O, no logging, no randomness.
"""
from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

PROTOCOL_NAME = b"Noise_XXhfs_25519+Kyber1024_ChaChaPoly_BLAKE2b"
HASH_LENGTH = 64
KEY_LENGTH = 32
TAG_LENGTH = 16
DH_LENGTH = 32
MAX_NONCE = 2**64 - 1  # reserved for Rekey; a cipher state never encrypts a message with it

_NONCE = struct.Struct("<4xQ")  # 32 zero bits then the counter, little-endian


def blake2b(data: bytes) -> bytes:
    return hashlib.blake2b(data).digest()


def hmac_blake2b(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "blake2b")


def hkdf2(chaining_key: bytes, input_key_material: bytes) -> tuple[bytes, bytes]:
    """Noise HKDF with two 64-byte outputs."""
    temp_key = hmac_blake2b(chaining_key, input_key_material)
    output1 = hmac_blake2b(temp_key, b"\x01")
    output2 = hmac_blake2b(temp_key, output1 + b"\x02")
    return output1, output2


class NonceExhausted(Exception):
    """A cipher state reached nonce 2^64-1 (never in practice; a session must end)."""


class CipherState:
    """A handshake ChaCha20-Poly1305 key and its 64-bit message counter.

    Transport keys never live here: after ``split()`` the per-frame work, rekey included,
    belongs to ``katzenpost._core.linkframe`` (twin: ``katzenpost.reference.linkframe``)."""

    __slots__ = ("nonce", "_aead")

    def __init__(self, key: bytes | None = None, nonce: int = 0) -> None:
        self.nonce = nonce
        self._aead = ChaCha20Poly1305(key) if key is not None else None

    def _next_nonce(self) -> bytes:
        if self.nonce >= MAX_NONCE:
            raise NonceExhausted("noise: cipher state nonce exhausted")
        packed = _NONCE.pack(self.nonce)
        self.nonce += 1
        return packed

    def encrypt_with_ad(self, associated_data: bytes, plaintext: bytes) -> bytes:
        if self._aead is None:
            return bytes(plaintext)
        return self._aead.encrypt(self._next_nonce(), plaintext, associated_data)

    def decrypt_with_ad(self, associated_data: bytes, ciphertext: bytes) -> bytes:
        """Raises cryptography's InvalidTag on a bad MAC; the nonce advances only on success."""
        if self._aead is None:
            return bytes(ciphertext)
        if self.nonce >= MAX_NONCE:
            raise NonceExhausted("noise: cipher state nonce exhausted")
        plaintext = self._aead.decrypt(_NONCE.pack(self.nonce), ciphertext, associated_data)
        self.nonce += 1
        return plaintext


class SymmetricState:
    """Chaining key ``ck``, handshake hash ``h`` and the current handshake cipher state."""

    __slots__ = ("chaining_key", "handshake_hash", "cipher")

    def __init__(self, protocol_name: bytes = PROTOCOL_NAME) -> None:
        if len(protocol_name) <= HASH_LENGTH:
            initial = protocol_name.ljust(HASH_LENGTH, b"\x00")
        else:
            initial = blake2b(protocol_name)
        self.handshake_hash = initial
        self.chaining_key = initial
        self.cipher = CipherState()

    def mix_hash(self, data: bytes) -> None:
        self.handshake_hash = blake2b(self.handshake_hash + data)

    def mix_key(self, input_key_material: bytes) -> None:
        self.chaining_key, temp_key = hkdf2(self.chaining_key, input_key_material)
        self.cipher = CipherState(temp_key[:KEY_LENGTH])

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.handshake_hash, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.handshake_hash, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        """The two transport keys (initiator→responder, responder→initiator)."""
        temp_key1, temp_key2 = hkdf2(self.chaining_key, b"")
        return temp_key1[:KEY_LENGTH], temp_key2[:KEY_LENGTH]
