"""Kyber1024 keys and ciphertexts from the peer (`CryptographyKyber1024`, the production KEM).

The responder encapsulates to the public key in message 1 and the initiator decapsulates the
ciphertext in message 2, both of which the peer chose. Documented outcome: a 32-byte secret (and
a ciphertext of the right size) or `KEMError`; an honest ciphertext always gives the secret that
was encapsulated."""
from katzenpost.wire.kem import (CIPHERTEXT_LENGTH, PUBLIC_KEY_LENGTH, SHARED_SECRET_LENGTH,
                                 CryptographyKyber1024, KEMError)
from tests.fuzz.data import Reader

MAX_LEN = PUBLIC_KEY_LENGTH + 64
_KEM = CryptographyKyber1024()
_KEYPAIR = _KEM.generate_keypair()


def _encapsulate(data: bytes) -> None:
    try:
        ciphertext, secret = _KEM.encapsulate(data)
    except KEMError:
        return
    assert len(ciphertext) == CIPHERTEXT_LENGTH and len(secret) == SHARED_SECRET_LENGTH


def _decapsulate(data: bytes) -> None:
    try:
        secret = _KEM.decapsulate(_KEYPAIR, data)
    except KEMError:
        return
    assert len(secret) == SHARED_SECRET_LENGTH


def _round_trip(r: Reader) -> None:
    """Our own public key with fuzz bytes written over it: if encapsulation accepts the key and
    it is still ours, decapsulation must give the same secret."""
    key = bytearray(_KEYPAIR.public_bytes)
    offset = r.uint(2) % len(key)
    patch = r.take(16)
    key[offset:offset + len(patch)] = patch
    try:
        ciphertext, secret = _KEM.encapsulate(bytes(key))
    except KEMError:
        return
    if bytes(key) == _KEYPAIR.public_bytes:
        assert _KEM.decapsulate(_KEYPAIR, ciphertext) == secret


def TestOneInput(data: bytes) -> None:
    r = Reader(data)
    mode = r.choice(3)
    if mode == 0:
        _encapsulate(r.rest())
    elif mode == 1:
        _decapsulate(r.rest())
    else:
        _round_trip(r)


def seeds():
    other = CryptographyKyber1024().generate_keypair()
    ciphertext, _ = _KEM.encapsulate(other.public_bytes)
    return {"public-key": bytes([0]) + other.public_bytes, "ciphertext": bytes([1]) + ciphertext,
            "round-trip": bytes([2, 0, 0]), "round-trip-patch": bytes([2, 1, 0]) + bytes(16)}
