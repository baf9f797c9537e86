"""Pure-Python twin of ``katzenpost._core.linkframe`` over ``cryptography`` (tests and benchmark
baseline only; production runs the compiled module). Same API, same bytes, same status values.
"""
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

KEY_BYTES = 32
TAG_BYTES = 16
HEADER_BYTES = 4 + TAG_BYTES
LAST_FRAME_NONCE = 2**64 - 1 - 2

_NONCE = struct.Struct("<4xQ")
_LENGTH = struct.Struct(">I")
_REKEY_NONCE = _NONCE.pack(2**64 - 1)
_ZERO_KEY = bytes(KEY_BYTES)


def _next_key(aead: ChaCha20Poly1305) -> bytes:
    return aead.encrypt(_REKEY_NONCE, _ZERO_KEY, None)[:KEY_BYTES]


def rekey(key: bytes) -> bytes:
    """Noise REKEY: first 32 bytes of ENCRYPT(k, 2^64-1, empty AD, 32 zero bytes)."""
    return _next_key(ChaCha20Poly1305(key))


class FrameCipher:
    """One direction of a link: counter and current key, rekeyed after every frame."""

    __slots__ = ("_aead", "_counter")

    def __init__(self, key, nonce: int = 0) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"linkframe: key must be {KEY_BYTES} bytes, got {len(key)}")
        if not 0 <= nonce < 2**64:  # the compiled twin stores it in a uint64_t
            raise OverflowError(f"linkframe: nonce {nonce} is not a 64-bit counter")
        self._aead = ChaCha20Poly1305(bytes(key))
        self._counter = nonce

    @property
    def nonce(self) -> int:
        return self._counter

    def _check_counter(self) -> None:
        if self._counter > LAST_FRAME_NONCE:
            raise OverflowError("linkframe: transport nonce exhausted")

    def _rekey(self) -> None:
        self._aead = ChaCha20Poly1305(_next_key(self._aead))

    def seal(self, command) -> bytes:
        body_length = len(command) + TAG_BYTES
        if body_length > 0xFFFFFFFF:
            raise OverflowError("linkframe: command too long")
        self._check_counter()
        counter, aead = self._counter, self._aead
        header = aead.encrypt(_NONCE.pack(counter), _LENGTH.pack(body_length), None)
        body = aead.encrypt(_NONCE.pack(counter + 1), bytes(command), None)
        self._rekey()
        self._counter = counter + 2
        return header + body

    def open_header(self, header) -> int:
        if len(header) != HEADER_BYTES:
            raise ValueError(f"linkframe: header must be {HEADER_BYTES} bytes")
        self._check_counter()
        try:
            plaintext = self._aead.decrypt(_NONCE.pack(self._counter), bytes(header), None)
        except InvalidTag:
            return -1
        return _LENGTH.unpack(plaintext)[0]

    def open_body(self, body):
        if len(body) < TAG_BYTES:
            raise ValueError("linkframe: body length out of range")
        self._check_counter()
        try:
            plaintext = self._aead.decrypt(_NONCE.pack(self._counter + 1), bytes(body), None)
        except InvalidTag:
            return None
        self._rekey()
        self._counter += 2
        return plaintext
