"""The deterministic random reader behind the voting authority's topology (authority
`voting/server/rand.go` over Go's `math/rand`).

Every authority that computes the same shared random value must lay out the same topology, so
the "randomness" is a ChaCha20 keystream keyed with that value, consumed exactly as Go's
`math/rand.Rand` consumes its `Source.Int63`. Pure: no clock, no global state, no I/O.
"""
from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from katzenpost.voting.errors import VotingError

KEY_LEN = 32
# Keystream is generated in chunks; the stream is continuous, so buffering changes nothing.
_CHUNK = 512
_INT31_LIMIT = 1 << 31


class DeterministicRand:
    """Go `math/rand.Rand` over the reference's ChaCha20 source keyed with `key`.

    The original ChaCha20 (64-bit nonce of zeros, 64-bit block counter from 0) equals the
    RFC 7539 variant with a zero 12-byte nonce and counter 0 for the first 2^32 blocks, which
    is what OpenSSL computes here. Each `int63` consumes 8 keystream bytes; reads continue the
    same keystream across calls, including across `perm` calls.
    """

    __slots__ = ("_encryptor", "_buffer", "_offset")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_LEN:
            raise VotingError(f"voting/rand: key must be {KEY_LEN} bytes")
        # The 16-byte "nonce" of OpenSSL's ChaCha20 is the 32-bit counter then the 96-bit nonce.
        algorithm = algorithms.ChaCha20(bytes(key), bytes(16))
        self._encryptor = Cipher(algorithm, mode=None).encryptor()
        self._buffer = b""
        self._offset = 0

    def read(self, n: int) -> bytes:
        """The next `n` keystream bytes."""
        if n < 0:
            raise VotingError("voting/rand: negative read")
        out = bytearray()
        while len(out) < n:
            if self._offset == len(self._buffer):
                self._buffer = self._encryptor.update(bytes(max(_CHUNK, n - len(out))))
                self._offset = 0
            take = min(n - len(out), len(self._buffer) - self._offset)
            out += self._buffer[self._offset:self._offset + take]
            self._offset += take
        return bytes(out)

    def int63(self) -> int:
        """8 bytes little-endian with the top bit cleared (the reference's Int63)."""
        return int.from_bytes(self.read(8), "little") & 0x7FFF_FFFF_FFFF_FFFF

    def int31(self) -> int:
        return self.int63() >> 32

    def int31n(self, n: int) -> int:
        """Go's Int31n: masked for powers of two, else rejection sampling then modulo."""
        if not 0 < n < _INT31_LIMIT:
            raise VotingError(f"voting/rand: Int31n bound {n} out of range")
        if n & (n - 1) == 0:
            return self.int31() & (n - 1)
        limit = _INT31_LIMIT - 1 - (_INT31_LIMIT % n)
        value = self.int31()
        while value > limit:
            value = self.int31()
        return value % n

    def perm(self, n: int) -> list[int]:
        """Go's Perm(n): an inside-out shuffle; Perm(1) still draws once, Perm(0) never."""
        if n < 0:
            raise VotingError("voting/rand: negative Perm size")
        m = [0] * n
        for i in range(n):
            j = self.int31n(i + 1)
            m[i] = m[j]
            m[j] = i
        return m
