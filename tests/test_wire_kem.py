"""Kyber1024 round 3: the cryptography ML-KEM adapter against kyber-py's round-3 oracle, and the
oracle against circl's pinned KAT digest (the Wire Protocol Specification)."""
import hashlib
import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from katzenpost.wire.kem import (CIPHERTEXT_LENGTH, PUBLIC_KEY_LENGTH, SHARED_SECRET_LENGTH,
                                 CryptographyKyber1024, KEMError, KyberPyKyber1024, default_kem)

CIRCL_KYBER1024_KAT_DIGEST = "89248f2f33f7f4f7051729111f3049c409a933ec904aedadf035f30fa5646cd5"


class NistCtrDrbg:
    """NIST SP 800-90A AES-256 CTR_DRBG as in the NIST KAT rng.c (no derivation function)."""

    def __init__(self, entropy: bytes) -> None:
        assert len(entropy) == 48
        self.key = bytes(32)
        self.v = 0
        self._update(entropy)

    def _block(self) -> bytes:
        self.v = (self.v + 1) % (1 << 128)
        encryptor = Cipher(algorithms.AES(self.key), modes.ECB()).encryptor()
        return encryptor.update(self.v.to_bytes(16, "big")) + encryptor.finalize()

    def _update(self, provided: bytes | None) -> None:
        temp = b"".join(self._block() for _ in range(3))
        if provided is not None:
            temp = bytes(a ^ b for a, b in zip(temp, provided))
        self.key, self.v = temp[:32], int.from_bytes(temp[32:], "big")

    def random_bytes(self, length: int) -> bytes:
        out = b""
        while len(out) < length:
            out += self._block()
        self._update(None)
        return out[:length]


def test_kyber_py_oracle_reproduces_circl_kat_digest():
    kyber = KyberPyKyber1024()
    outer = NistCtrDrbg(bytes(range(48)))
    transcript = hashlib.sha256(b"# Kyber1024\n\n")
    for count in range(100):
        seed = outer.random_bytes(48)
        inner = NistCtrDrbg(seed)
        draws = [inner.random_bytes(32), inner.random_bytes(32), inner.random_bytes(32)]
        feed = iter(draws)
        keypair = kyber.generate_keypair(lambda n: next(feed))
        ciphertext, shared = kyber.encapsulate(keypair.public_bytes, lambda n: next(feed))
        assert kyber.decapsulate(keypair, ciphertext) == shared
        transcript.update(
            f"count = {count}\nseed = {seed.hex().upper()}\npk = {keypair.public_bytes.hex().upper()}\n"
            f"sk = {keypair.secret_key.hex().upper()}\nct = {ciphertext.hex().upper()}\n"
            f"ss = {shared.hex().upper()}\n\n".encode())
    assert transcript.hexdigest() == CIRCL_KYBER1024_KAT_DIGEST


@pytest.mark.parametrize("round_trip", range(3))
def test_cryptography_keypair_decapsulates_round3_encapsulation(round_trip):
    adapter, oracle = CryptographyKyber1024(), KyberPyKyber1024()
    keypair = adapter.generate_keypair(os.urandom)
    assert len(keypair.public_bytes) == PUBLIC_KEY_LENGTH
    ciphertext, shared = oracle.encapsulate(keypair.public_bytes, os.urandom)
    assert adapter.decapsulate(keypair, ciphertext) == shared


@pytest.mark.parametrize("round_trip", range(3))
def test_cryptography_encapsulation_decapsulates_with_round3_key(round_trip):
    adapter, oracle = CryptographyKyber1024(), KyberPyKyber1024()
    keypair = oracle.generate_keypair(os.urandom)
    ciphertext, shared = adapter.encapsulate(keypair.public_bytes, os.urandom)
    assert len(ciphertext) == CIPHERTEXT_LENGTH and len(shared) == SHARED_SECRET_LENGTH
    assert oracle.decapsulate(keypair, ciphertext) == shared


def test_raw_ml_kem_secret_is_not_the_round3_secret():
    """The adapter's extra KDF is what makes it round 3; without it the secrets differ."""
    adapter, oracle = CryptographyKyber1024(), KyberPyKyber1024()
    keypair = adapter.generate_keypair(os.urandom)
    ciphertext, shared = oracle.encapsulate(keypair.public_bytes, os.urandom)
    assert keypair.decapsulation_key.decapsulate(ciphertext) != shared


def test_tampered_ciphertext_gives_an_unrelated_secret_in_both_implementations():
    adapter, oracle = CryptographyKyber1024(), KyberPyKyber1024()
    keypair = adapter.generate_keypair(os.urandom)
    ciphertext, shared = adapter.encapsulate(keypair.public_bytes, os.urandom)
    tampered = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    assert adapter.decapsulate(keypair, tampered) != shared
    round3_keypair = oracle.generate_keypair(os.urandom)
    ciphertext, shared = adapter.encapsulate(round3_keypair.public_bytes, os.urandom)
    assert oracle.decapsulate(round3_keypair, bytes([ciphertext[0] ^ 1]) + ciphertext[1:]) != shared


@pytest.mark.parametrize("length", [0, PUBLIC_KEY_LENGTH - 1, PUBLIC_KEY_LENGTH + 1])
def test_wrong_size_public_key_is_rejected(length):
    with pytest.raises(KEMError, match="public key must be 1568 bytes"):
        CryptographyKyber1024().encapsulate(bytes(length), os.urandom)


def test_non_canonical_public_key_is_rejected_by_the_adapter():
    with pytest.raises(KEMError, match="public key rejected"):
        CryptographyKyber1024().encapsulate(b"\xff" * PUBLIC_KEY_LENGTH, os.urandom)


@pytest.mark.parametrize("length", [0, CIPHERTEXT_LENGTH - 1, CIPHERTEXT_LENGTH + 16])
def test_wrong_size_ciphertext_is_rejected(length):
    adapter = CryptographyKyber1024()
    keypair = adapter.generate_keypair(os.urandom)
    with pytest.raises(KEMError, match="ciphertext must be 1568 bytes"):
        adapter.decapsulate(keypair, bytes(length))


def test_production_kem_is_the_cryptography_adapter():
    assert isinstance(default_kem(), CryptographyKyber1024)


def test_a_cryptography_build_without_ml_kem_fails_loudly(monkeypatch):
    """Debian's python3-cryptography (or an OpenSSL < 3.5 build) must not pass silently."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import mlkem

    from katzenpost.wire import kem

    def unsupported():
        raise UnsupportedAlgorithm("ML-KEM-1024 is not supported by this backend")
    monkeypatch.setattr(kem, "_ml_kem_checked", False)
    monkeypatch.setattr(mlkem.MLKEM1024PrivateKey, "generate", staticmethod(unsupported))
    with pytest.raises(RuntimeError, match="no ML-KEM-1024; install cryptography>=48"):
        default_kem()
