"""Certificates (core/crypto/cert): a CBOR map signed with Ed25519, with expiry and multi-signature.

Byte for byte as the 2021 reference (fxamacker/cbor v2 defaults). This module signs and verifies
blobs only; it knows nothing of descriptors or documents and never touches key files.
"""
from __future__ import annotations

import io
import struct
import time
from dataclasses import dataclass, field

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

CERT_VERSION = 0
KEY_TYPE_ED25519 = "ed25519"
PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64
# A certificate travels in one wire message, so nothing larger can be legitimate.
MAX_CERT_SIZE = 1_048_576


class CertificateError(ValueError):
    """A certificate that is malformed, unsigned, wrongly signed or expired."""


class CertificateExpiredError(CertificateError):
    pass


class IdentitySignatureNotFoundError(CertificateError):
    pass


class BadSignatureError(CertificateError):
    pass


class DuplicateSignatureError(CertificateError):
    pass


class KeyTypeMismatchError(CertificateError):
    pass


@dataclass(frozen=True)
class Signature:
    identity: bytes  # Ed25519 public key of the signer (32)
    payload: bytes  # the Ed25519 signature (64)


@dataclass
class Certificate:
    version: int
    expiration: int
    key_type: str
    certified: bytes
    signatures: list[Signature] = field(default_factory=list)

    def signed_message(self) -> bytes:
        """u32 LE version || i64 LE expiration || key type || certified (the CBOR is not signed)."""
        return (struct.pack("<Iq", self.version, self.expiration)
                + self.key_type.encode("utf-8") + self.certified)

    def to_bytes(self) -> bytes:
        return _encode_certificate(self)


# --- CBOR encoding (declaration order, shortest integers, definite lengths) -----------------

def _cbor_head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([(major << 5) | value])
    for extra, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if value < (1 << (8 * struct.calcsize(fmt))):
            return bytes([(major << 5) | extra]) + struct.pack(fmt, value)
    raise CertificateError(f"cert: integer {value} does not fit in CBOR")


def _cbor_int(value: int) -> bytes:
    return _cbor_head(0, value) if value >= 0 else _cbor_head(1, -1 - value)


def _cbor_text(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _cbor_head(3, len(raw)) + raw


def _cbor_bytes(raw: bytes) -> bytes:
    return _cbor_head(2, len(raw)) + raw


def _encode_certificate(cert: Certificate) -> bytes:
    parts = [_cbor_head(5, 5),
             _cbor_text("Version"), _cbor_int(cert.version),
             _cbor_text("Expiration"), _cbor_int(cert.expiration),
             _cbor_text("KeyType"), _cbor_text(cert.key_type),
             _cbor_text("Certified"), _cbor_bytes(cert.certified),
             _cbor_text("Signatures"), _cbor_head(4, len(cert.signatures))]
    for sig in cert.signatures:
        parts += [_cbor_head(5, 2), _cbor_text("Identity"), _cbor_bytes(sig.identity),
                  _cbor_text("Payload"), _cbor_bytes(sig.payload)]
    return b"".join(parts)


# --- decoding --------------------------------------------------------------------------------

def _field(mapping: dict, name: str, kind, what: str, default):
    value = mapping.get(name, default)
    if value is None:
        return default
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise CertificateError(f"cert: {what} must be an integer, got {type(value).__name__}")
    if kind is not int and not isinstance(value, kind):
        raise CertificateError(f"cert: {what} has the wrong CBOR type ({type(value).__name__})")
    return value


def _decode_signature(entry, index: int) -> Signature:
    if not isinstance(entry, dict):
        raise CertificateError(f"cert: Signatures[{index}] is not a map")
    identity = _field(entry, "Identity", bytes, f"Signatures[{index}].Identity", b"")
    payload = _field(entry, "Payload", bytes, f"Signatures[{index}].Payload", b"")
    return Signature(bytes(identity), bytes(payload))


def decode(raw: bytes) -> Certificate:
    """Parse the CBOR without any check beyond types (see `parse` for the sanity rules)."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise CertificateError("cert: certificate must be bytes")
    raw = bytes(raw)
    if len(raw) == 0:
        raise CertificateError("cert: empty certificate")
    if len(raw) > MAX_CERT_SIZE:
        raise CertificateError(f"cert: certificate of {len(raw)} bytes exceeds {MAX_CERT_SIZE}")
    stream = io.BytesIO(raw)
    try:
        top = cbor2.CBORDecoder(stream).decode()
    except Exception as exc:  # cbor2 raises many types on hostile input
        raise CertificateError(f"cert: malformed CBOR: {exc}") from None
    if stream.tell() != len(raw):
        raise CertificateError(f"cert: {len(raw) - stream.tell()} bytes of extraneous data")
    if not isinstance(top, dict):
        raise CertificateError("cert: certificate is not a CBOR map")
    version = _field(top, "Version", int, "Version", 0)
    expiration = _field(top, "Expiration", int, "Expiration", 0)
    key_type = _field(top, "KeyType", str, "KeyType", "")
    certified = _field(top, "Certified", bytes, "Certified", b"")
    sig_list = _field(top, "Signatures", list, "Signatures", [])
    if not 0 <= version < 2**32 or not -2**63 <= expiration < 2**63:
        raise CertificateError("cert: Version or Expiration out of range")
    signatures = [_decode_signature(entry, i) for i, entry in enumerate(sig_list)]
    return Certificate(version, expiration, key_type, bytes(certified), signatures)


def _sanity_check(cert: Certificate, now: float | None) -> None:
    if cert.version != CERT_VERSION:
        raise CertificateError(f"cert: version {cert.version} is not {CERT_VERSION}")
    current = time.time() if now is None else now
    # Go: time.Unix(Expiration).Before(time.Now()), so sub-second precision counts.
    if cert.expiration < current:
        raise CertificateExpiredError(f"cert: certificate expired at {cert.expiration}")
    if not cert.key_type:
        raise CertificateError("cert: KeyType is empty")
    if not cert.certified:
        raise CertificateError("cert: Certified is empty")


def parse(raw: bytes, now: float | None = None) -> Certificate:
    """Decode and apply the reference's sanity check (expired certificates cannot be parsed)."""
    cert = decode(raw)
    _sanity_check(cert, now)
    return cert


# --- signing ---------------------------------------------------------------------------------

def _private_key(signer) -> Ed25519PrivateKey:
    if isinstance(signer, Ed25519PrivateKey):
        return signer
    if isinstance(signer, (bytes, bytearray)) and len(signer) in (32, 64):
        return Ed25519PrivateKey.from_private_bytes(bytes(signer[:32]))
    raise CertificateError("cert: signer must be an Ed25519 private key or its 32/64-byte form")


def _sign_one(signer: Ed25519PrivateKey, cert: Certificate) -> Signature:
    public = signer.public_key().public_bytes_raw()
    return Signature(public, signer.sign(cert.signed_message()))


def _sorted(signatures: list[Signature]) -> list[Signature]:
    return sorted(signatures, key=lambda sig: sig.identity)


def sign(signer, certified: bytes, expiration: int, now: float | None = None) -> bytes:
    """A certificate over `certified` with one Ed25519 signature."""
    return sign_multi([signer], certified, expiration, now)


def sign_multi(signers, certified: bytes, expiration: int, now: float | None = None) -> bytes:
    keys = [_private_key(s) for s in signers]
    if not keys:
        raise CertificateError("cert: at least one signer is required")
    cert = Certificate(CERT_VERSION, int(expiration), KEY_TYPE_ED25519, bytes(certified))
    _sanity_check(cert, now)
    signatures = [_sign_one(key, cert) for key in keys]
    _check_duplicates(signatures)
    cert.signatures = _sorted(signatures)
    return cert.to_bytes()


def _check_duplicates(signatures: list[Signature]) -> None:
    identities = {sig.identity for sig in signatures}
    payloads = {sig.payload for sig in signatures}
    if len(identities) != len(signatures) or len(payloads) != len(signatures):
        raise DuplicateSignatureError("cert: duplicate signature")


def add_signature(signer, raw: bytes, now: float | None = None) -> bytes:
    """Add one more signature to an existing certificate; signatures are re-sorted."""
    cert = parse(raw, now)
    if cert.key_type != KEY_TYPE_ED25519:
        raise KeyTypeMismatchError(f"cert: key type mismatch ({cert.key_type!r})")
    new = _sign_one(_private_key(signer), cert)
    signatures = cert.signatures + [new]
    _check_duplicates(signatures)
    cert.signatures = _sorted(signatures)
    return cert.to_bytes()


def add_signature_object(raw: bytes, signature: Signature, now: float | None = None) -> bytes:
    """AddSignature: add another signer's existing signature, which must sign this certificate's
    message (same Certified bytes and Expiration) and duplicate no Identity or Payload."""
    cert = parse(raw, now)
    if cert.key_type != KEY_TYPE_ED25519:
        raise KeyTypeMismatchError(f"cert: key type mismatch ({cert.key_type!r})")
    signatures = cert.signatures + [signature]
    _check_duplicates(signatures)
    if not _check_signature(signature.identity, signature, cert.signed_message()):
        raise BadSignatureError("cert: signature does not sign certificate")
    cert.signatures = _sorted(signatures)
    return cert.to_bytes()


# --- verification ----------------------------------------------------------------------------

def _check_signature(public_key: bytes, sig: Signature, message: bytes) -> bool:
    if len(public_key) != PUBLIC_KEY_LEN or len(sig.payload) != SIGNATURE_LEN:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(sig.payload, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_parsed(public_key: bytes, cert: Certificate) -> bytes:
    if cert.key_type != KEY_TYPE_ED25519:
        raise KeyTypeMismatchError(f"cert: key type {cert.key_type!r} is not ed25519")
    for sig in cert.signatures:
        if sig.identity == public_key:
            if _check_signature(public_key, sig, cert.signed_message()):
                return cert.certified
            raise BadSignatureError("cert: signature does not verify")
    raise IdentitySignatureNotFoundError("cert: no signature by the expected identity")


def verify(public_key: bytes, raw: bytes, now: float | None = None) -> bytes:
    """Check the signature by `public_key` and return the Certified payload."""
    return verify_parsed(bytes(public_key), parse(raw, now))


def verify_threshold(public_keys, threshold: int, raw: bytes,
                     now: float | None = None) -> tuple[bytes, list[bytes], list[bytes]]:
    """(certified, good verifiers, bad verifiers); raises unless >= threshold verify."""
    keys = [bytes(k) for k in public_keys]
    if threshold > len(keys) or threshold < 1:
        raise CertificateError(f"cert: threshold {threshold} is not within 1..{len(keys)}")
    cert = parse(raw, now)
    good, bad = [], []
    for key in keys:
        try:
            verify_parsed(key, cert)
            good.append(key)
        except CertificateError:
            bad.append(key)
    if len(good) < threshold:
        raise CertificateError(f"cert: {len(good)} good signatures, {threshold} required")
    return cert.certified, good, bad


def get_signatures(raw: bytes, now: float | None = None) -> list[Signature]:
    return parse(raw, now).signatures


def get_certified(raw: bytes, now: float | None = None) -> bytes:
    """The payload without verifying any signature (only to find who should have signed)."""
    return parse(raw, now).certified
