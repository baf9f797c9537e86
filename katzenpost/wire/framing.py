"""Transport framing of the link layer: encrypted length header, body, rekey (the Wire Protocol Specification).

Sans-I/O: ``FrameSealer.seal(command) -> wire bytes`` and ``FrameOpener.open_header(20 bytes)
-> body length`` / ``open_body(body) -> command``. Command i uses counters 2i and 2i+1 under its
own key; both sides rekey after every command and never reset the counter. The per-frame crypto
runs in ``katzenpost._core.linkframe`` (libcrypto, GIL released); no I/O here.
"""
from __future__ import annotations

from .._core.linkframe import FrameCipher  # production always runs the compiled path
from .errors import FrameError
from .noise import KEY_LENGTH, TAG_LENGTH

MAX_FRAME_LENGTH = 1048576  # bound on the encrypted body (command + tag)
HEADER_PLAINTEXT_LENGTH = 4
HEADER_LENGTH = HEADER_PLAINTEXT_LENGTH + TAG_LENGTH
MAX_COMMAND_LENGTH = MAX_FRAME_LENGTH - TAG_LENGTH


def _new_cipher(key: bytes, nonce: int, cipher_class=None):
    if len(key) != KEY_LENGTH:
        raise ValueError(f"wire: transport key must be {KEY_LENGTH} bytes, got {len(key)}")
    return (cipher_class or FrameCipher)(bytes(key), nonce)


class FrameSealer:
    """The sending half of a session: one ``seal`` per command."""

    __slots__ = ("_cipher",)

    def __init__(self, key: bytes, nonce: int = 0, *, cipher_class=None) -> None:
        self._cipher = _new_cipher(key, nonce, cipher_class)

    @property
    def nonce(self) -> int:
        return self._cipher.nonce

    def seal(self, command: bytes) -> bytes:
        """Header frame ‖ body frame for one serialised command; then rekey."""
        if len(command) > MAX_COMMAND_LENGTH:
            raise FrameError(f"wire: command of {len(command)} bytes exceeds the "
                             f"{MAX_COMMAND_LENGTH}-byte frame limit")
        try:
            return self._cipher.seal(command)
        except OverflowError:
            raise FrameError("wire: transport nonce exhausted") from None


class FrameOpener:
    """The receiving half: ``open_header`` then ``open_body`` for each command."""

    __slots__ = ("_cipher", "_body_length")

    def __init__(self, key: bytes, nonce: int = 0, *, cipher_class=None) -> None:
        self._cipher = _new_cipher(key, nonce, cipher_class)
        self._body_length = 0

    @property
    def nonce(self) -> int:
        return self._cipher.nonce

    def open_header(self, header: bytes) -> int:
        """Decrypt the 20-byte length frame; returns the body frame length to read next."""
        if self._body_length:
            raise FrameError("wire: frame header read twice without a body")
        if len(header) != HEADER_LENGTH:
            raise FrameError(f"wire: frame header is {len(header)} bytes, expected {HEADER_LENGTH}")
        try:
            body_length = self._cipher.open_header(header)
        except OverflowError:
            raise FrameError("wire: transport nonce exhausted") from None
        if body_length < 0:
            raise FrameError("wire: frame header authentication failed")
        if body_length < TAG_LENGTH or body_length > MAX_FRAME_LENGTH:
            raise FrameError(f"wire: frame length {body_length} outside "
                             f"[{TAG_LENGTH}, {MAX_FRAME_LENGTH}]")
        self._body_length = body_length
        return body_length

    def open_body(self, body: bytes) -> bytes:
        """Decrypt the body frame announced by the last header; then rekey."""
        if not self._body_length:
            raise FrameError("wire: frame body without a header")
        if len(body) != self._body_length:
            raise FrameError(f"wire: frame body is {len(body)} bytes, expected {self._body_length}")
        command = self._cipher.open_body(body)
        if command is None:
            raise FrameError("wire: frame body authentication failed")
        self._body_length = 0
        return command
