"""Pure-Python twin of katzenpost._core.replay: SipHash-2-4-128, the same probe indexes and the
same test-and-set answers. For differential tests and the benchmark baseline only; never used
by the node (it is ~1000x slower)."""

MASK64 = (1 << 64) - 1
TAG_LENGTH = 32


def _rotl(x, b):
    return ((x << b) | (x >> (64 - b))) & MASK64


def _sipround(v0, v1, v2, v3):
    v0 = (v0 + v1) & MASK64
    v1 = _rotl(v1, 13) ^ v0
    v0 = _rotl(v0, 32)
    v2 = (v2 + v3) & MASK64
    v3 = _rotl(v3, 16) ^ v2
    v0 = (v0 + v3) & MASK64
    v3 = _rotl(v3, 21) ^ v0
    v2 = (v2 + v1) & MASK64
    v1 = _rotl(v1, 17) ^ v2
    v2 = _rotl(v2, 32)
    return v0, v1, v2, v3


def siphash24_128_words(key: bytes, data: bytes) -> tuple[int, int]:
    """SipHash-2-4 with 128-bit output, as two 64-bit words (h1, h2)."""
    if len(key) != 16:
        raise ValueError(f"reference replay: SipHash key must be 16 bytes, got {len(key)}")
    k0 = int.from_bytes(key[:8], "little")
    k1 = int.from_bytes(key[8:], "little")
    v0 = 0x736F6D6570736575 ^ k0
    v1 = 0x646F72616E646F6D ^ k1 ^ 0xEE
    v2 = 0x6C7967656E657261 ^ k0
    v3 = 0x7465646279746573 ^ k1
    full = len(data) - len(data) % 8
    words = [int.from_bytes(data[i:i + 8], "little") for i in range(0, full, 8)]
    words.append(((len(data) & 0xFF) << 56) | int.from_bytes(data[full:], "little"))
    for m in words:
        v3 ^= m
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
        v0 ^= m
    v2 ^= 0xEE
    for _ in range(4):
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    h1 = v0 ^ v1 ^ v2 ^ v3
    v1 ^= 0xDD
    for _ in range(4):
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    return h1, v0 ^ v1 ^ v2 ^ v3


def siphash24_128(key: bytes, data: bytes) -> bytes:
    h1, h2 = siphash24_128_words(key, data)
    return h1.to_bytes(8, "little") + h2.to_bytes(8, "little")


def bloom_indexes(m_bits: int, k_probes: int, key: bytes, tag: bytes) -> list[int]:
    """Probe j is ((h1 + j*h2) mod 2^64) scaled onto [0, m_bits) by a multiply-high."""
    h1, h2 = siphash24_128_words(key, tag)
    return [((((h1 + j * h2) & MASK64) * m_bits) >> 64) for j in range(k_probes)]


class ReferenceBloom:
    """The Bloom filter of _core.replay.BloomKernel over a Python int bit set."""

    def __init__(self, m_bits: int, k_probes: int, key: bytes):
        self.m_bits = m_bits
        self.k_probes = k_probes
        self.key = bytes(key)
        self.bits = bytearray(m_bits // 8)
        self.added = 0

    def _probe(self, tag: bytes, set_bits: bool) -> bool:
        if len(tag) != TAG_LENGTH:
            raise ValueError(f"reference replay: a tag is {TAG_LENGTH} bytes, got {len(tag)}")
        present = True
        for idx in bloom_indexes(self.m_bits, self.k_probes, self.key, tag):
            byte, bit = idx >> 3, 1 << (idx & 7)
            if not self.bits[byte] & bit:
                present = False
                if set_bits:
                    self.bits[byte] |= bit
        return present

    def check_and_add(self, tags, mask=None) -> list[int]:
        """Same answers as BloomKernel.check_and_add; masked-out rows report 0."""
        out = []
        for i, tag in enumerate(tags):
            if mask is not None and not mask[i]:
                out.append(0)
                continue
            present = self._probe(bytes(tag), True)
            self.added += not present
            out.append(int(present))
        return out

    def contains(self, tags) -> list[int]:
        return [int(self._probe(bytes(tag), False)) for tag in tags]
