"""Kyber1024 (CRYSTALS-Kyber NIST round 3, as in circl@96a0695) behind a small KEM interface.

Production uses ``CryptographyKyber1024``: cryptography's ML-KEM-1024 plus the round-3 final KDF
(the Wire Protocol Specification). ``KyberPyKyber1024`` wraps the pure-Python round-3 oracle (kyber-py) and is
for tests and vector replay only: it is slow and not constant time. Nothing here does I/O.
"""
from __future__ import annotations

import hashlib
import os
from typing import Callable, Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import mlkem

PUBLIC_KEY_LENGTH = 1568
CIPHERTEXT_LENGTH = 1568
SHARED_SECRET_LENGTH = 32
KEM_NAME = "Kyber1024"

RandomBytes = Callable[[int], bytes]


class KEMError(ValueError):
    """A KEM public key or ciphertext could not be used (wrong size or rejected encoding)."""


class KEMPrivateKey(Protocol):
    """An opaque decapsulation key; ``public_bytes`` is the 1568-byte wire form of its public key."""

    public_bytes: bytes


class KEM(Protocol):
    """The three operations the XXhfs handshake needs from its KEM."""

    name: str

    def generate_keypair(self, rng: RandomBytes) -> KEMPrivateKey: ...

    def encapsulate(self, public_key: bytes, rng: RandomBytes) -> tuple[bytes, bytes]:
        """Return (ciphertext, shared_secret) for ``public_key``."""
        ...

    def decapsulate(self, private_key: KEMPrivateKey, ciphertext: bytes) -> bytes: ...


def _round3_shared_secret(prekey: bytes, ciphertext: bytes) -> bytes:
    """Round-3 final KDF: K = SHAKE-256(K̄ ‖ SHA3-256(ct))[:32]; ML-KEM would return K̄ itself."""
    ct_hash = hashlib.sha3_256(ciphertext).digest()
    return hashlib.shake_256(prekey + ct_hash).digest(SHARED_SECRET_LENGTH)


def _check_length(what: str, data: bytes, expected: int) -> None:
    if len(data) != expected:
        raise KEMError(f"kyber1024: {what} must be {expected} bytes, got {len(data)}")


class _MLKEMKeyPair:
    __slots__ = ("decapsulation_key", "public_bytes")

    def __init__(self, decapsulation_key: mlkem.MLKEM1024PrivateKey) -> None:
        self.decapsulation_key = decapsulation_key
        self.public_bytes = decapsulation_key.public_key().public_bytes_raw()


class CryptographyKyber1024:
    """Round-3 Kyber1024 over cryptography's ML-KEM-1024 (production).

    ML-KEM cannot be seeded, so ``rng`` is accepted for interface symmetry and not consumed;
    ML-KEM's random m has the distribution of round 3's SHA3-256(seed), so the peer cannot
    tell the difference.
    """

    name = KEM_NAME

    def generate_keypair(self, rng: RandomBytes = os.urandom) -> _MLKEMKeyPair:
        return _MLKEMKeyPair(mlkem.MLKEM1024PrivateKey.generate())

    def encapsulate(self, public_key: bytes, rng: RandomBytes = os.urandom) -> tuple[bytes, bytes]:
        _check_length("public key", public_key, PUBLIC_KEY_LENGTH)
        try:
            peer = mlkem.MLKEM1024PublicKey.from_public_bytes(bytes(public_key))
        except ValueError as exc:  # FIPS 203 modulus check; only malformed keys hit it
            raise KEMError(f"kyber1024: public key rejected: {exc}") from None
        prekey, ciphertext = peer.encapsulate()
        return ciphertext, _round3_shared_secret(prekey, ciphertext)

    def decapsulate(self, private_key: _MLKEMKeyPair, ciphertext: bytes) -> bytes:
        _check_length("ciphertext", ciphertext, CIPHERTEXT_LENGTH)
        ciphertext = bytes(ciphertext)
        try:
            prekey = private_key.decapsulation_key.decapsulate(ciphertext)
        except ValueError as exc:
            raise KEMError(f"kyber1024: ciphertext rejected: {exc}") from None
        return _round3_shared_secret(prekey, ciphertext)


class _KyberPyKeyPair:
    __slots__ = ("secret_key", "public_bytes")

    def __init__(self, public_bytes: bytes, secret_key: bytes) -> None:
        self.public_bytes = public_bytes
        self.secret_key = secret_key


class KyberPyKyber1024:
    """Round-3 Kyber1024 from kyber-py with injected randomness (tests and vectors only).

    Key generation reads d (32) then z (32) from ``rng``, encapsulation reads 32 bytes,
    the same order as circl, so a recorded random stream reproduces circl's bytes.
    """

    name = KEM_NAME

    def __init__(self) -> None:
        try:
            from kyber_py.kyber.default_parameters import DEFAULT_PARAMETERS
            from kyber_py.kyber.kyber import Kyber
        except ImportError as exc:  # test-only dependency
            raise RuntimeError("kyber1024: KyberPyKyber1024 needs the kyber-py package") from exc
        # Own instance: the module-level Kyber1024 is a shared singleton.
        self._kyber = Kyber(DEFAULT_PARAMETERS["kyber_1024"])

    def generate_keypair(self, rng: RandomBytes = os.urandom) -> _KyberPyKeyPair:
        self._kyber.random_bytes = rng
        public_key, secret_key = self._kyber.keygen()
        return _KyberPyKeyPair(public_key, secret_key)

    def encapsulate(self, public_key: bytes, rng: RandomBytes = os.urandom) -> tuple[bytes, bytes]:
        _check_length("public key", public_key, PUBLIC_KEY_LENGTH)
        self._kyber.random_bytes = rng
        shared_secret, ciphertext = self._kyber.encaps(bytes(public_key))
        return ciphertext, shared_secret

    def decapsulate(self, private_key: _KyberPyKeyPair, ciphertext: bytes) -> bytes:
        _check_length("ciphertext", ciphertext, CIPHERTEXT_LENGTH)
        return self._kyber.decaps(private_key.secret_key, bytes(ciphertext))


_ml_kem_checked = False


def default_kem() -> KEM:
    """The production KEM; fails loudly if this cryptography build lacks ML-KEM-1024
    (Debian's python3-cryptography or a build against an OpenSSL older than 3.5)."""
    global _ml_kem_checked
    if not _ml_kem_checked:
        try:
            mlkem.MLKEM1024PrivateKey.generate()
        except UnsupportedAlgorithm as exc:
            raise RuntimeError("kyber1024: this cryptography build has no ML-KEM-1024; "
                               "install cryptography>=48 from PyPI wheels") from exc
        _ml_kem_checked = True
    return CryptographyKyber1024()
