"""AEZ v5 (the Sphinx Packet Format Specification), the Sphinx SPRP: the public API over the compiled core.

Encrypt/Decrypt only, with the GIL released inside; no key storage, no I/O. Sphinx uses a
48-byte key, a 16-byte nonce, no AD and tau = 0 (a pure SPRP).
"""
from katzenpost._core import aez as _core

__all__ = ["encrypt", "decrypt", "encrypt_into", "decrypt_into", "HARDWARE_ACCELERATED"]

#: True if the AES rounds run on AES-NI (chosen once, at import, from CPUID).
HARDWARE_ACCELERATED: bool = _core.HARDWARE_ACCELERATED


def encrypt(key, nonce, ad, tau, msg):
    """AEZ Encrypt -> bytes of len(msg) + tau.

    key: any length (48 bytes used raw, others through BLAKE2b); nonce: any length;
    ad: a list (or tuple) of byte strings; tau: authenticator length in bytes.
    """
    return _core.encrypt(key, nonce, ad, tau, msg)


def decrypt(key, nonce, ad, tau, ct):
    """AEZ Decrypt -> the plaintext (len(ct) - tau bytes), or None if ct does not verify."""
    return _core.decrypt(key, nonce, ad, tau, ct)


def encrypt_into(key, nonce, ad, tau, msg, out):
    """Encrypt into the writable buffer out (len(msg) + tau bytes); msg may view out."""
    _core.encrypt_into(key, nonce, ad, tau, msg, out)


def decrypt_into(key, nonce, ad, tau, ct, out):
    """Decrypt into the writable buffer out (len(ct) - tau bytes); True if ct verified."""
    return _core.decrypt_into(key, nonce, ad, tau, ct, out)
