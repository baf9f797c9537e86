"""Certificates (`pki.cert`): the CBOR envelope of every descriptor and document.

Documented outcome: a `Certificate` / the certified bytes, or `CertificateError` (its subclasses
included) from `parse`, `verify`, `verify_threshold`, `get_signatures` and `get_certified`. A
decoded certificate re-encodes to bytes that decode to the same certificate."""
from katzenpost.pki import cert
from tests.fuzz.material import AUTHORITY_SEED, NODE_SEED, NOW, ed25519_public

MAX_LEN = 4096
_KEYS = [ed25519_public(AUTHORITY_SEED), ed25519_public(NODE_SEED)]


def _call(fn, *args):
    try:
        return fn(*args)
    except cert.CertificateError:
        return None


def TestOneInput(data: bytes) -> None:
    decoded = _call(cert.decode, data)
    if decoded is not None:
        assert cert.decode(decoded.to_bytes()) == decoded, "re-encoded certificate differs"
    parsed = _call(cert.parse, data, NOW)
    if parsed is not None:
        assert parsed == decoded
    _call(cert.verify, _KEYS[0], data, NOW)
    _call(cert.verify_threshold, _KEYS, 2, data, NOW)
    _call(cert.get_signatures, data, NOW)
    certified = _call(cert.get_certified, data, NOW)
    assert certified is None or (parsed is not None and certified == parsed.certified)


def seeds():
    expiration = int(NOW) + 10 ** 6
    one = cert.sign(AUTHORITY_SEED, b"certified payload", expiration, now=NOW)
    two = cert.sign_multi([AUTHORITY_SEED, NODE_SEED], b"{\"json\":1}", expiration, now=NOW)
    return {"one-signature": one, "two-signatures": two,
            "expired": cert.sign(NODE_SEED, b"old", int(NOW) - 1, now=NOW - 10),
            "added-signature": cert.add_signature(NODE_SEED, one, now=NOW)}
