"""Transport framing of the link layer: encrypted length header, body, rekey (spec wire.md §1.4).

Sans-I/O: ``FrameSealer.seal(command) -> wire bytes`` and ``FrameOpener.open_header(20 bytes)
-> body length`` / ``open_body(body) -> command``. Each command uses counters 2i and 2i+1 under
its own key; both sides rekey after every command and never reset the counter. No I/O here.
"""
from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .errors import FrameError
from .noise import KEY_LENGTH, MAX_NONCE, TAG_LENGTH

MAX_FRAME_LENGTH = 1048576  # bound on the encrypted body (command + tag)
HEADER_PLAINTEXT_LENGTH = 4
HEADER_LENGTH = HEADER_PLAINTEXT_LENGTH + TAG_LENGTH
MAX_COMMAND_LENGTH = MAX_FRAME_LENGTH - TAG_LENGTH

_NONCE = struct.Struct("<4xQ")
_LENGTH = struct.Struct(">I")
# Noise REKEY: new key = first 32 bytes of ENCRYPT(k, 2^64-1, empty AD, 32 zero bytes).
_REKEY_NONCE = _NONCE.pack(MAX_NONCE)
_ZERO_KEY = bytes(KEY_LENGTH)


def _check_key(key: bytes) -> bytes:
    if len(key) != KEY_LENGTH:
        raise ValueError(f"wire: transport key must be {KEY_LENGTH} bytes, got {len(key)}")
    return bytes(key)


class FrameSealer:
    """The sending half of a session: one ``seal`` per command."""

    __slots__ = ("_aead", "nonce")

    def __init__(self, key: bytes, nonce: int = 0) -> None:
        self._aead = ChaCha20Poly1305(_check_key(key))
        self.nonce = nonce

    def seal(self, command: bytes) -> bytes:
        """Header frame ‖ body frame for one serialised command; then rekey."""
        body_length = len(command) + TAG_LENGTH
        if body_length > MAX_FRAME_LENGTH:
            raise FrameError(f"wire: command of {len(command)} bytes exceeds the "
                             f"{MAX_COMMAND_LENGTH}-byte frame limit")
        nonce = self.nonce
        if nonce >= MAX_NONCE - 2:
            raise FrameError("wire: transport nonce exhausted")
        aead = self._aead
        header = aead.encrypt(_NONCE.pack(nonce), _LENGTH.pack(body_length), None)
        body = aead.encrypt(_NONCE.pack(nonce + 1), command, None)
        self.nonce = nonce + 2
        self._aead = ChaCha20Poly1305(aead.encrypt(_REKEY_NONCE, _ZERO_KEY, None)[:KEY_LENGTH])
        return header + body


class FrameOpener:
    """The receiving half: ``open_header`` then ``open_body`` for each command."""

    __slots__ = ("_aead", "nonce", "_body_length")

    def __init__(self, key: bytes, nonce: int = 0) -> None:
        self._aead = ChaCha20Poly1305(_check_key(key))
        self.nonce = nonce
        self._body_length = None

    def open_header(self, header: bytes) -> int:
        """Decrypt the 20-byte length frame; returns the body frame length to read next."""
        if self._body_length is not None:
            raise FrameError("wire: frame header read twice without a body")
        if len(header) != HEADER_LENGTH:
            raise FrameError(f"wire: frame header is {len(header)} bytes, expected {HEADER_LENGTH}")
        if self.nonce >= MAX_NONCE - 2:
            raise FrameError("wire: transport nonce exhausted")
        try:
            plaintext = self._aead.decrypt(_NONCE.pack(self.nonce), header, None)
        except InvalidTag:
            raise FrameError("wire: frame header authentication failed") from None
        body_length, = _LENGTH.unpack(plaintext)
        if body_length < TAG_LENGTH or body_length > MAX_FRAME_LENGTH:
            raise FrameError(f"wire: frame length {body_length} outside "
                             f"[{TAG_LENGTH}, {MAX_FRAME_LENGTH}]")
        self._body_length = body_length
        return body_length

    def open_body(self, body: bytes) -> bytes:
        """Decrypt the body frame announced by the last header; then rekey."""
        if self._body_length is None:
            raise FrameError("wire: frame body without a header")
        if len(body) != self._body_length:
            raise FrameError(f"wire: frame body is {len(body)} bytes, expected {self._body_length}")
        try:
            command = self._aead.decrypt(_NONCE.pack(self.nonce + 1), body, None)
        except InvalidTag:
            raise FrameError("wire: frame body authentication failed") from None
        self.nonce += 2
        self._body_length = None
        self._aead = ChaCha20Poly1305(self._aead.encrypt(_REKEY_NONCE, _ZERO_KEY, None)[:KEY_LENGTH])
        return command
