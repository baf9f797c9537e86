"""Certificates: the reference's vectors byte for byte, and every sign/verify/parse rule."""
import json
import pathlib
import struct

import cbor2
import pytest

from katzenpost.pki import cert

VECTORS = json.loads((pathlib.Path(__file__).parent / "vectors" / "katzenpost" / "core"
                      / "extracted" / "cert_ed25519_vectors.json").read_text())
EXPIRATION = VECTORS["_expiration_unix"]
SEED_A = bytes(range(1, 33))
SEED_B = bytes(range(33, 65))
PUB_A = cert._private_key(SEED_A).public_key().public_bytes_raw()
PUB_B = cert._private_key(SEED_B).public_key().public_bytes_raw()
NOW = 1_700_000_000


@pytest.mark.parametrize("vector", VECTORS["single_signature"])
def test_single_signature_vector_is_reproduced_byte_for_byte(vector):
    key = bytes.fromhex(vector["signingKey"])
    produced = cert.sign(key, bytes.fromhex(vector["toSign"]), EXPIRATION)
    assert produced.hex() == vector["certificate"]
    assert cert.verify(key[32:], bytes.fromhex(vector["certificate"])) == bytes.fromhex(vector["toSign"])


@pytest.mark.parametrize("vector", VECTORS["multi_signature"])
def test_multi_signature_vector_is_reproduced_and_every_signer_verifies(vector):
    keys = [bytes.fromhex(k) for k in vector["signingKeys"]]
    raw = bytes.fromhex(vector["certificate"])
    assert cert.sign_multi(keys, bytes.fromhex(vector["toSign"]), EXPIRATION).hex() == vector["certificate"]
    for key in keys:
        assert cert.verify(key[32:], raw) == bytes.fromhex(vector["toSign"])
    identities = [s.identity for s in cert.get_signatures(raw)]
    assert identities == sorted(identities)


@pytest.mark.parametrize("vector", VECTORS["single_signature"] + VECTORS["multi_signature"])
def test_vector_parses_and_reencodes_identically(vector):
    raw = bytes.fromhex(vector["certificate"])
    assert cert.parse(raw).to_bytes() == raw


def test_signed_message_layout_is_version_expiration_keytype_certified():
    c = cert.Certificate(0, 0x0102030405060708, "ed25519", b"payload")
    assert c.signed_message() == struct.pack("<Iq", 0, 0x0102030405060708) + b"ed25519payload"


def test_expiration_uses_shortest_cbor_integer():
    raw = cert.sign(SEED_A, b"x", 1_800_000_000, now=NOW)
    assert b"jExpiration\x1a" in raw  # 4-byte form, as fxamacker picks


def test_expired_certificate_cannot_be_parsed_or_verified():
    raw = cert.sign(SEED_A, b"x", NOW + 10, now=NOW)
    assert cert.verify(PUB_A, raw, now=NOW + 10) == b"x"
    with pytest.raises(cert.CertificateExpiredError):
        cert.verify(PUB_A, raw, now=NOW + 11)
    with pytest.raises(cert.CertificateExpiredError):
        cert.sign(SEED_A, b"x", NOW - 1, now=NOW)


def test_expiry_counts_fractions_of_a_second_like_go():
    # Go: time.Unix(Expiration).Before(time.Now()); half a second late is already expired.
    raw = cert.sign(SEED_A, b"x", NOW + 10, now=NOW)
    with pytest.raises(cert.CertificateExpiredError, match="expired"):
        cert.verify(PUB_A, raw, now=NOW + 10.5)


def test_wrong_verifier_is_identity_signature_not_found():
    raw = cert.sign(SEED_A, b"x", EXPIRATION)
    with pytest.raises(cert.IdentitySignatureNotFoundError):
        cert.verify(PUB_B, raw)


def test_tampered_payload_is_bad_signature():
    parsed = cert.parse(cert.sign(SEED_A, b"hello", EXPIRATION))
    parsed.certified = b"hellp"
    with pytest.raises(cert.BadSignatureError):
        cert.verify(PUB_A, parsed.to_bytes())


def test_signature_swapped_between_identities_is_bad_signature():
    parsed = cert.parse(cert.sign(SEED_A, b"hello", EXPIRATION))
    parsed.signatures = [cert.Signature(PUB_B, parsed.signatures[0].payload)]
    with pytest.raises(cert.BadSignatureError):
        cert.verify(PUB_B, parsed.to_bytes())


def test_unsigned_certificate_has_no_signature_to_find():
    unsigned = cert.Certificate(0, EXPIRATION, "ed25519", b"x").to_bytes()
    with pytest.raises(cert.IdentitySignatureNotFoundError):
        cert.verify(PUB_A, unsigned)


def test_short_signature_payload_is_bad_signature():
    unsigned = cert.Certificate(0, EXPIRATION, "ed25519", b"x",
                                [cert.Signature(PUB_A, b"\x00" * 10)]).to_bytes()
    with pytest.raises(cert.BadSignatureError):
        cert.verify(PUB_A, unsigned)


@pytest.mark.parametrize("field,value,message", [
    ("version", 1, "version"),
    ("key_type", "", "KeyType"),
    ("certified", b"", "Certified"),
])
def test_sanity_check_rejects_bad_fields(field, value, message):
    c = cert.Certificate(0, EXPIRATION, "ed25519", b"x")
    setattr(c, field, value)
    with pytest.raises(cert.CertificateError, match=message):
        cert.parse(c.to_bytes())


def test_add_signature_keeps_signatures_sorted_and_both_verify():
    raw = cert.add_signature(SEED_B, cert.sign(SEED_A, b"doc", EXPIRATION))
    assert cert.verify(PUB_A, raw) == b"doc" and cert.verify(PUB_B, raw) == b"doc"
    ids = [s.identity for s in cert.get_signatures(raw)]
    assert ids == sorted(ids) and len(ids) == 2


def test_duplicate_signature_is_refused():
    with pytest.raises(cert.DuplicateSignatureError):
        cert.add_signature(SEED_A, cert.sign(SEED_A, b"doc", EXPIRATION))
    with pytest.raises(cert.DuplicateSignatureError):
        cert.sign_multi([SEED_A, SEED_A], b"doc", EXPIRATION)


def test_add_signature_to_another_key_type_is_refused():
    foreign = cert.Certificate(0, EXPIRATION, "rsa", b"x").to_bytes()
    with pytest.raises(cert.KeyTypeMismatchError):
        cert.add_signature(SEED_A, foreign)


def test_verify_threshold_counts_good_verifiers():
    raw = cert.sign_multi([SEED_A, SEED_B], b"doc", EXPIRATION)
    third = cert._private_key(bytes(32)).public_key().public_bytes_raw()
    payload, good, bad = cert.verify_threshold([PUB_A, PUB_B, third], 2, raw)
    assert payload == b"doc" and set(good) == {PUB_A, PUB_B} and bad == [third]
    with pytest.raises(cert.CertificateError):
        cert.verify_threshold([PUB_A, third], 2, raw)
    with pytest.raises(cert.CertificateError, match="threshold"):
        cert.verify_threshold([PUB_A], 2, raw)


@pytest.mark.parametrize("raw", [
    b"",
    b"\xff",
    b"\xa5",  # map header with nothing after it
    cbor2.dumps([1, 2, 3]),
    cbor2.dumps({"Version": "zero", "Certified": b"x", "KeyType": "ed25519"}),
    cbor2.dumps({"Version": 0, "Expiration": EXPIRATION, "KeyType": "ed25519",
                 "Certified": "text, not bytes"}),
    cbor2.dumps({"Version": 0, "Expiration": EXPIRATION, "KeyType": "ed25519",
                 "Certified": b"x", "Signatures": [42]}),
    cbor2.dumps({"Version": -1, "Expiration": EXPIRATION, "KeyType": "ed25519", "Certified": b"x"}),
])
def test_malformed_cbor_is_a_certificate_error(raw):
    with pytest.raises(cert.CertificateError):
        cert.verify(PUB_A, raw)


def test_trailing_bytes_after_the_certificate_are_rejected():
    raw = cert.sign(SEED_A, b"x", EXPIRATION)
    with pytest.raises(cert.CertificateError, match="extraneous"):
        cert.parse(raw + b"\x00")


def test_oversized_certificate_is_rejected_before_decoding():
    with pytest.raises(cert.CertificateError, match="exceeds"):
        cert.parse(b"\xa5" + b"\x00" * cert.MAX_CERT_SIZE)


def test_deeply_nested_cbor_does_not_crash():
    nested = b"\x81" * 100_000 + b"\x00"
    with pytest.raises(cert.CertificateError):
        cert.parse(nested)


def test_unknown_keys_are_ignored_like_the_reference():
    c = cert.parse(cert.sign(SEED_A, b"x", EXPIRATION))
    top = cbor2.loads(c.to_bytes())
    top["Extra"] = 1
    assert cert.verify(PUB_A, cbor2.dumps(top)) == b"x"
