"""Pure-Python AEZ v5 (as the Sphinx Packet Format Specification uses it), written straight from the AEZ v5 paper.

The differential-test oracle and benchmark baseline for katzenpost._core.aez; slow and not
constant-time (table lookups), so never used to protect real traffic.
"""
import hashlib

__all__ = ["encrypt", "decrypt", "extract", "aez_hash", "aez_prf", "encipher", "decipher",
           "aes_round", "HARDWARE_ACCELERATED"]

HARDWARE_ACCELERATED = False

_MASK128 = (1 << 128) - 1


# ---------------------------------------------------------------- AES round (aesenc)

def _xtime(x):
    x <<= 1
    return (x ^ 0x11B) if x & 0x100 else x


def _gf_mul(a, b):
    product = 0
    while b:
        if b & 1:
            product ^= a
        a = _xtime(a)
        b >>= 1
    return product


def _make_sbox():
    inverse = [0] * 256
    for x in range(1, 256):
        for y in range(1, 256):
            if _gf_mul(x, y) == 1:
                inverse[x] = y
                break
    sbox = []
    for x in range(256):
        b = inverse[x]
        s = b
        for shift in range(1, 5):
            s ^= ((b << shift) | (b >> (8 - shift))) & 0xFF
        sbox.append(s ^ 0x63)
    return sbox


SBOX = _make_sbox()

# MixColumns matrix; T[k][x] = column k of the matrix times S(x), as a 32-bit column word
# (row 0 in the top byte).
_MIX = ((2, 3, 1, 1), (1, 2, 3, 1), (1, 1, 2, 3), (3, 1, 1, 2))
_T = [[(_gf_mul(_MIX[0][k], SBOX[x]) << 24) | (_gf_mul(_MIX[1][k], SBOX[x]) << 16)
       | (_gf_mul(_MIX[2][k], SBOX[x]) << 8) | _gf_mul(_MIX[3][k], SBOX[x])
       for x in range(256)] for k in range(4)]


def _to_columns(block):
    """A 128-bit block (big-endian int) as 4 column words."""
    return ((block >> 96) & 0xFFFFFFFF, (block >> 64) & 0xFFFFFFFF,
            (block >> 32) & 0xFFFFFFFF, block & 0xFFFFFFFF)


def _from_columns(cols):
    return (cols[0] << 96) | (cols[1] << 64) | (cols[2] << 32) | cols[3]


def _round_columns(cols, key_cols):
    """One aesenc on column words: ShiftRows picks row r of column c + r."""
    t0, t1, t2, t3 = _T
    out = []
    for c in range(4):
        word = (t0[cols[c] >> 24]
                ^ t1[(cols[(c + 1) % 4] >> 16) & 0xFF]
                ^ t2[(cols[(c + 2) % 4] >> 8) & 0xFF]
                ^ t3[cols[(c + 3) % 4] & 0xFF])
        out.append(word ^ key_cols[c])
    return out


def aes_round(state, key):
    """Intel AESENC on 16-byte strings: MixColumns(ShiftRows(SubBytes(state))) xor key."""
    cols = _round_columns(_to_columns(int.from_bytes(state, "big")),
                          _to_columns(int.from_bytes(key, "big")))
    return _from_columns(cols).to_bytes(16, "big")


# ---------------------------------------------------------------- GF(2^128) and padding

def _dbl(x):
    x <<= 1
    if x >> 128:
        x = (x & _MASK128) ^ 0x87
    return x


def _mul(k, x):
    """k * x for a small integer k (double-and-add)."""
    result = 0
    for bit in bin(k)[2:] if k else "":
        result = _dbl(result)
        if bit == "1":
            result ^= x
    return result


def _int(b):
    return int.from_bytes(b, "big")


def _bytes(x, n=16):
    return x.to_bytes(n, "big")


def _pad(z):
    """pad(Z) = Z || 0x80 || 0* for |Z| < 16, as an int."""
    return _int(z + b"\x80" + bytes(15 - len(z)))


# ---------------------------------------------------------------- key and E^{j,i}

def extract(key):
    """(I, J, L) as 48 bytes: a 48-byte key raw, anything else through BLAKE2b-384."""
    key = bytes(key)
    return key if len(key) == 48 else hashlib.blake2b(key, digest_size=48).digest()


class _Key:
    def __init__(self, key):
        material = extract(key)
        self.I, self.J, self.L = (_int(material[k:k + 16]) for k in (0, 16, 32))
        self.aes4_keys = [_to_columns(k) for k in (self.J, self.I, self.L, 0)]
        self.aes10_keys = [_to_columns(k) for k in
                           (self.I, self.J, self.L) * 3 + (self.I,)]

    def _rounds(self, x, keys):
        cols = _to_columns(x)
        for key_cols in keys:
            cols = _round_columns(cols, key_cols)
        return _from_columns(cols)

    def E(self, j, i, x):
        """The tweakable block cipher E_K^{j,i} on an int block."""
        if j == -1:
            return self._rounds(x ^ _mul(i, self.L), self.aes10_keys)
        i_power = self.I
        for _ in range((i + 7) // 8):
            i_power = _dbl(i_power)
        offset = _mul(j, self.J) ^ i_power ^ _mul(i % 8, self.L)
        return self._rounds(x ^ offset, self.aes4_keys)


# ---------------------------------------------------------------- hash, prf

def _hash(k, tau_bits, strings):
    delta = k.E(3, 1, tau_bits)
    for index, t in enumerate(strings):
        j = 4 + index
        full = len(t) // 16
        for i in range(1, full + 1):
            delta ^= k.E(j, i, _int(t[16 * (i - 1):16 * i]))
        if len(t) % 16 or not t:
            delta ^= k.E(j, 0, _pad(t[16 * full:]))
    return delta


def _prf(k, delta, tau):
    out = b""
    counter = 0
    while len(out) < tau:
        out += _bytes(k.E(-1, 3, delta ^ counter))
        counter += 1
    return out[:tau]


def aez_hash(key, tau_bits, strings):
    """AEZ-hash delta (16 bytes) of [nonce, ad_1, ...] with the tag length in bits."""
    return _bytes(_hash(_Key(key), tau_bits, [bytes(s) for s in strings]))


def aez_prf(key, delta, tau):
    """AEZ-prf: tau bytes under the 16-byte delta."""
    return _prf(_Key(key), _int(delta), tau)


# ---------------------------------------------------------------- AEZ-core, AEZ-tiny

def _core(k, delta, x, d):
    n = len(x)
    f = n % 32
    m = (n - 32 - f) // 32
    blocks = [_int(x[16 * b:16 * b + 16]) for b in range(2 * m)]
    x_uv = x[32 * m:32 * m + f]
    x_x = _int(x[32 * m + f:32 * m + f + 16])
    x_y = _int(x[32 * m + f + 16:])

    ws, vs, xs = [], [], 0
    for i in range(1, m + 1):
        xi, xpi = blocks[2 * i - 2], blocks[2 * i - 1]
        w = xi ^ k.E(1, i, xpi)
        v = xpi ^ k.E(0, 0, w)
        ws.append(w)
        vs.append(v)
        xs ^= v
    if 0 < f < 16:
        xs ^= k.E(0, 4, _pad(x_uv))
    elif f >= 16:
        xs ^= k.E(0, 4, _int(x_uv[:16])) ^ k.E(0, 5, _pad(x_uv[16:]))

    s_x = x_x ^ delta ^ xs ^ k.E(0, 1 + d, x_y)
    s_y = x_y ^ k.E(-1, 1 + d, s_x)
    s = s_x ^ s_y

    out, ys = [], 0
    for i in range(1, m + 1):
        s_prime = k.E(2, i, s)
        y = ws[i - 1] ^ s_prime
        z = vs[i - 1] ^ s_prime
        c_prime = y ^ k.E(0, 0, z)
        c = z ^ k.E(1, i, c_prime)
        out += [c, c_prime]
        ys ^= y
    if 0 < f < 16:
        c_uv = bytes(a ^ b for a, b in zip(x_uv, _bytes(k.E(-1, 4, s))))
        ys ^= k.E(0, 4, _pad(c_uv))
    elif f >= 16:
        c_u = _bytes(_int(x_uv[:16]) ^ k.E(-1, 4, s))
        c_v = bytes(a ^ b for a, b in zip(x_uv[16:], _bytes(k.E(-1, 5, s))))
        c_uv = c_u + c_v
        ys ^= k.E(0, 4, _int(c_u)) ^ k.E(0, 5, _pad(c_v))
    else:
        c_uv = b""
    c_y = s_x ^ k.E(-1, 2 - d, s_y)
    c_x = s_y ^ delta ^ ys ^ k.E(0, 2 - d, c_y)
    return b"".join(_bytes(b) for b in out) + c_uv + _bytes(c_x) + _bytes(c_y)


def _tiny_flip(k, delta, value, n):
    """The top-bit tweak of AEZ-tiny for n < 16 bytes: returns value (an 8n-bit int) with
    its top bit flipped iff E^{0,3}(delta xor (value padded, top bit set)) has its top bit set."""
    block = (value << (128 - 8 * n)) | (1 << 127)
    if k.E(0, 3, delta ^ block) >> 127:
        value ^= 1 << (8 * n - 1)
    return value


def _tiny(k, delta, x, d):
    n = len(x)
    rounds = 24 if n == 1 else 16 if n == 2 else 10 if n < 16 else 8
    tweak = 7 if n < 16 else 6
    h = 4 * n                        # bits per half
    value = _int(x)
    if d == 1 and n < 16:
        value = _tiny_flip(k, delta, value, n)
    left, right = value >> h, value & ((1 << h) - 1)
    constants = range(rounds) if d == 0 else range(rounds - 1, -1, -1)
    constants = list(constants)

    def feistel(z, c):
        block = (z << (128 - h)) | (1 << (127 - h))     # Z || 1 || 0*
        block ^= c                                       # round constant in the last byte
        return k.E(0, tweak, delta ^ block) >> (128 - h)

    for r in range(rounds // 2):
        left ^= feistel(right, constants[2 * r])
        right ^= feistel(left, constants[2 * r + 1])
    value = (right << h) | left
    if d == 0 and n < 16:
        value = _tiny_flip(k, delta, value, n)
    return value.to_bytes(n, "big")


def _cipher(k, delta, x, d):
    if not x:
        return b""
    if len(x) < 32:
        return _tiny(k, delta, x, d)
    return _core(k, delta, x, d)


def encipher(key, delta, x):
    """AEZ Encipher of x under the 16-byte delta."""
    return _cipher(_Key(key), _int(delta), bytes(x), 0)


def decipher(key, delta, x):
    """AEZ Decipher of x under the 16-byte delta."""
    return _cipher(_Key(key), _int(delta), bytes(x), 1)


# ---------------------------------------------------------------- Encrypt / Decrypt

def _check(ad, tau):
    if not isinstance(ad, (list, tuple)):
        raise TypeError(f"aez: ad must be a list of byte strings, got {type(ad).__name__}")
    if isinstance(tau, bool) or not isinstance(tau, int):
        raise TypeError(f"aez: tau must be an int, got {type(tau).__name__}")
    if tau < 0:
        raise ValueError(f"aez: tau must be >= 0, got {tau}")
    return [bytes(a) for a in ad]


def encrypt(key, nonce, ad, tau, msg):
    """AEZ Encrypt -> len(msg) + tau bytes (ad: list of byte strings; tau in bytes)."""
    ad = _check(ad, tau)
    k = _Key(key)
    msg = bytes(msg)
    delta = _hash(k, 8 * tau, [bytes(nonce)] + ad)
    if not msg:
        return _prf(k, delta, tau)
    return _cipher(k, delta, msg + bytes(tau), 0)


def decrypt(key, nonce, ad, tau, ct):
    """AEZ Decrypt -> the plaintext, or None if ct does not verify."""
    ad = _check(ad, tau)
    k = _Key(key)
    ct = bytes(ct)
    if len(ct) < tau:
        return None
    delta = _hash(k, 8 * tau, [bytes(nonce)] + ad)
    if len(ct) == tau:
        return b"" if ct == _prf(k, delta, tau) else None
    x = _cipher(k, delta, ct, 1)
    if any(x[len(ct) - tau:]):
        return None
    return x[:len(ct) - tau]
