# cython: language_level=3
"""Compiled Sphinx core: unwrap (single and batch, GIL released), header and packet creation,
SURB payload decryption and the primitives under them. Works on buffers only; the public API,
command objects and error messages live in katzenpost.sphinx.

X25519 backend at import: the lane backend "ifma" (libcrypto_mb of the PyPI package ipp-crypto,
eight X25519s per AVX-512 IFMA pass, for batches) if the CPU has the feature and the library
loads and passes its self-test, else "libsodium", else "openssl". The environment variable
KATZENPOST_X25519_BACKEND=ifma|libsodium|openssl forces one (import fails if it is unusable).
"""
import importlib.metadata as _metadata
import os

from libc.stdint cimport uint8_t, int8_t, int32_t, uint32_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

if sx_init() != 0:
    raise ImportError("katzenpost._core.sphinx: OpenSSL has no SHA256, SHA512-256 or AES-128-CTR")

# The C sizes; tests check them against katzenpost/sphinx/geometry.py, the source of truth
# (_core must not import the sphinx package).
GEOMETRY = {
    "GROUP_ELEMENT_LENGTH": SX_GE_LEN,
    "NODE_ID_LENGTH": SX_NODE_ID_LEN,
    "RECIPIENT_ID_LENGTH": SX_RECIPIENT_ID_LEN,
    "SURB_ID_LENGTH": SX_SURB_ID_LEN,
    "MAC_LENGTH": SX_MAC_LEN,
    "AD_LENGTH": SX_AD_LEN,
    "ALPHA_OFFSET": SX_ALPHA_OFF,
    "BETA_OFFSET": SX_BETA_OFF,
    "GAMMA_OFFSET": SX_GAMMA_OFF,
    "SPRP_KEY_LENGTH": SX_SPRP_KEY_LEN,
    "SPRP_IV_LENGTH": SX_SPRP_IV_LEN,
    "NEXT_NODE_HOP_LENGTH": SX_NEXT_NODE_LEN,
    "RECIPIENT_LENGTH": SX_RECIPIENT_LEN,
    "SURB_REPLY_LENGTH": SX_SURB_REPLY_LEN,
    "NODE_DELAY_LENGTH": SX_NODE_DELAY_LEN,
    "HEADER_LENGTH": SX_HEADER_LEN,
    "PER_HOP_ROUTING_INFO_LENGTH": SX_SLOT_LEN,
    "ROUTING_INFO_LENGTH": SX_BETA_LEN,
    "NR_HOPS": SX_NR_HOPS,
    "SPRP_KEY_MATERIAL_LENGTH": SX_SPRP_MATERIAL_LEN,
    "PAYLOAD_TAG_LENGTH": SX_TAG_LEN,
    "KDF_OUTPUT_LENGTH": SX_KDF_LEN,
    "MAX_TRIAL_KEYS": SX_MAX_KEYS,
}

# The other C constants mirrored in Python (commands.py ids, errors.py codes, batch.py
# flags); tests check each table against its Python twin.
COMMAND_IDS = {"NULL_CMD": SX_CMD_NULL, "NEXT_NODE_HOP_CMD": SX_CMD_NEXT_NODE,
               "RECIPIENT_CMD": SX_CMD_RECIPIENT, "SURB_REPLY_CMD": SX_CMD_SURB_REPLY,
               "NODE_DELAY_CMD": SX_CMD_NODE_DELAY}
STATUS_CODES = {"OK": SX_OK, "ERR_TRUNCATED": SX_ERR_TRUNCATED,
                "ERR_UNKNOWN_VERSION": SX_ERR_UNKNOWN_VERSION,
                "ERR_MAC_MISMATCH": SX_ERR_MAC_MISMATCH,
                "ERR_INVALID_COMMAND": SX_ERR_INVALID_COMMAND,
                "ERR_DUPLICATE_NEXT_NODE": SX_ERR_DUP_NEXT_NODE,
                "ERR_DUPLICATE_SURB_REPLY": SX_ERR_DUP_SURB_REPLY,
                "ERR_TRUNCATED_PAYLOAD": SX_ERR_TRUNCATED_PAYLOAD,
                "ERR_PAYLOAD_AUTH": SX_ERR_PAYLOAD_AUTH, "ERR_INTERNAL": SX_ERR_INTERNAL}
RESULT_FLAGS = {"FLAG_NEXT_HOP": SX_FLAG_NEXT_HOP, "FLAG_RECIPIENT": SX_FLAG_RECIPIENT,
                "FLAG_SURB_REPLY": SX_FLAG_SURB_REPLY, "FLAG_NODE_DELAY": SX_FLAG_NODE_DELAY,
                "FLAG_DUPLICATE": SX_FLAG_DUPLICATE}

_BACKENDS = {"openssl": SX_X25519_OPENSSL, "libsodium": SX_X25519_LIBSODIUM,
             "ifma": SX_X25519_IFMA}
_BACKEND_NAMES = {code: name for name, code in _BACKENDS.items()}
BACKEND_ENV = "KATZENPOST_X25519_BACKEND"


cdef inline void _require(Py_ssize_t actual, Py_ssize_t expected, str what) except *:
    if actual != expected:
        raise ValueError(f"sphinx: {what} must be {expected} bytes, got {actual}")


cdef inline const uint8_t *_ptr(const uint8_t[::1] buf) noexcept nogil:
    # Address of a possibly empty buffer (never dereferenced when the length is 0).
    return &buf[0] if buf.shape[0] > 0 else <const uint8_t *>b""


# ------------------------------------------------------------------ X25519 backend

# libcrypto_mb and the Intel runtime it needs (libsvml, libimf, libirng from libintlc), as the
# PyPI packages ipp-crypto and intel-cmplr-lib-rt install them (into <prefix>/lib, outside
# any search path: found through the packages' file lists). Runtime libraries in load order.
_CRYPTO_MB = ("libcrypto_mb.so.13", "libcrypto_mb.so")
_RUNTIME = ("libintlc.so.5", "libimf.so", "libsvml.so", "libirng.so")
_LOAD_FAILURES = {
    XMB_NO_CPU_FEATURE: "the CPU (or the OS) has no AVX-512 IFMA",
    XMB_NOT_FOUND: "libcrypto_mb or its Intel runtime libraries do not load "
                   "(pip install 'katzenpost[ifma]')",
    XMB_NO_SYMBOL: "the libcrypto_mb found has no mbx_x25519_mb8",
    XMB_SELF_TEST: "libcrypto_mb failed the X25519 known-answer self-test",
}


def _installed_files(distribution, names):
    """{file name: absolute path} of the files called `names` that pip installed for
    `distribution` ({} if it is not installed)."""
    try:
        files = _metadata.distribution(distribution).files or []
    except _metadata.PackageNotFoundError:
        return {}
    return {f.name: os.path.realpath(f.locate()) for f in files if f.name in names}


def crypto_mb_paths():
    """(libcrypto_mb path or soname, [runtime library paths in load order]) to load."""
    mb = _installed_files("ipp-crypto", _CRYPTO_MB)
    runtime = _installed_files("intel-cmplr-lib-rt", _RUNTIME)
    library = next((mb[n] for n in _CRYPTO_MB if n in mb), _CRYPTO_MB[0])
    return library, [runtime[n] for n in _RUNTIME if n in runtime]


cdef str _open_crypto_mb(str library, runtime, bint keep):
    """Load (keep) or probe libcrypto_mb and its runtime libraries; '' or why not."""
    encoded = [p.encode() for p in runtime]
    if len(encoded) > 8:
        raise ValueError("sphinx: at most 8 runtime libraries")
    cdef const char *paths[8]
    for i, p in enumerate(encoded):
        paths[i] = p
    name = library.encode()
    rc = (sx_load_ifma if keep else xmb_probe)(name, paths, len(encoded))
    return "" if rc == XMB_OK else _LOAD_FAILURES.get(rc, f"libcrypto_mb load error {rc}")


def probe_crypto_mb(str library, runtime=()):
    """'' if `library` (after the `runtime` libraries) would serve as the lane backend, else
    why not; loads nothing for good and changes nothing (tests of the loader)."""
    return _open_crypto_mb(library, list(runtime), False)


def _load_crypto_mb():
    """Load libcrypto_mb for the lane backend; returns why not ('' when loaded)."""
    if not xmb_cpu_has_ifma():  # before any file lookup: most machines stop here
        return _LOAD_FAILURES[XMB_NO_CPU_FEATURE]
    library, runtime = crypto_mb_paths()
    return _open_crypto_mb(library, runtime, True)


def _select_backend():
    """Pick the backend at import (see the module docstring); returns the lane backend's
    status text for ifma_status()."""
    forced = os.environ.get(BACKEND_ENV, "")
    if forced and forced not in _BACKENDS:
        raise ImportError(f"katzenpost._core.sphinx: {BACKEND_ENV}={forced!r} is not one of "
                          f"{sorted(_BACKENDS)}")
    if forced and forced != "ifma":
        if sx_set_x25519_backend(_BACKENDS[forced]) != 0:
            raise ImportError(f"katzenpost._core.sphinx: {BACKEND_ENV}={forced} but that "
                              f"backend is not available")
        return f"not loaded ({BACKEND_ENV}={forced})"
    why = _load_crypto_mb()
    if why and forced:
        raise ImportError(f"katzenpost._core.sphinx: {BACKEND_ENV}=ifma but {why}")
    if not why:
        sx_set_x25519_backend(SX_X25519_IFMA)
    return why or "loaded"


_IFMA_STATUS = _select_backend()


def cpu_has_ifma():
    """True if the CPU has AVX-512 IFMA (and the OS saves the AVX-512 registers)."""
    return xmb_cpu_has_ifma() == 1


def ifma_status():
    """'loaded' if the lane backend is available, else why not (for logs and STATUS)."""
    return _IFMA_STATUS


def x25519_backend():
    """Name of the X25519 backend in use: "ifma", "libsodium" or "openssl". Under "ifma"
    batches run eight X25519s per pass and lone operations use the best scalar backend."""
    return _BACKEND_NAMES[sx_x25519_backend()]


def set_x25519_backend(str name):
    """Switch the X25519 implementation (tests and benchmarks); ValueError if unavailable."""
    if name not in _BACKENDS or sx_set_x25519_backend(_BACKENDS[name]) != 0:
        raise ValueError(f"sphinx: X25519 backend {name!r} is not available")


def available_x25519_backends():
    """Backends usable in this process, preferred first (the choice in use is unchanged)."""
    return [name for name in ("ifma", "libsodium", "openssl")
            if sx_x25519_available(_BACKENDS[name])]


def probe_libsodium(str library):
    """True if the shared library `library` would serve as the libsodium X25519 backend
    (loads, has both symbols, initialises). For tests of the loader; changes nothing."""
    return sx_probe_libsodium(library.encode()) == 1


def aez_backend():
    """AES-round backend of this module's AEZ: "aesni" or "portable"."""
    return "aesni" if aez_backend_c() == AEZ_BACKEND_AESNI else "portable"


def set_aez_backend(str name):
    """Switch this module's AEZ backend (tests and benchmarks); ValueError if unavailable."""
    codes = {"aesni": AEZ_BACKEND_AESNI, "portable": AEZ_BACKEND_PORTABLE}
    if name not in codes or aez_set_backend(codes[name]) != 0:
        raise ValueError(f"sphinx: AEZ backend {name!r} is not available")


# ------------------------------------------------------------------ primitives

def x25519(const uint8_t[::1] scalar, const uint8_t[::1] point):
    """X25519(scalar, point) like Go's ScalarMult: a low-order point gives 32 zero bytes."""
    _require(scalar.shape[0], 32, "X25519 scalar")
    _require(point.shape[0], 32, "X25519 point")
    cdef uint8_t out[32]
    cdef int rc
    with nogil:
        rc = sx_x25519(out, &scalar[0], &point[0])
    if rc != 0:
        raise MemoryError("sphinx: OpenSSL X25519 failed")
    return <bytes>out[:32]


def x25519_many(const uint8_t[::1] scalars, const uint8_t[::1] points):
    """X25519 of n concatenated 32-byte scalars and points, pairwise (n * 32 bytes out), eight
    lanes at a time under the lane backend: the batch form of x25519 (GIL released)."""
    if scalars.shape[0] % 32 or scalars.shape[0] != points.shape[0]:
        raise ValueError(f"sphinx: X25519 inputs must be equal multiples of 32 bytes, got "
                         f"{scalars.shape[0]} and {points.shape[0]}")
    cdef Py_ssize_t n = scalars.shape[0] // 32, g, j, count
    out = bytearray(32 * n)
    cdef uint8_t[::1] view = out
    cdef uint8_t *o[SX_LANES]
    cdef const uint8_t *k[SX_LANES]
    cdef const uint8_t *p[SX_LANES]
    cdef int rc = 0
    with nogil:
        g = 0
        while g < n and rc == 0:
            count = min(<Py_ssize_t>SX_LANES, n - g)
            for j in range(SX_LANES):
                o[j] = &view[32 * (g + j)] if j < count else NULL
                k[j] = &scalars[32 * (g + j)] if j < count else NULL
                p[j] = &points[32 * (g + j)] if j < count else NULL
            rc = sx_x25519_lanes(o, k, p)
            g += count
    if rc != 0:
        raise MemoryError("sphinx: X25519 failed")
    return bytes(out)


def sha512_256(const uint8_t[::1] data):
    cdef uint8_t out[32]
    cdef int rc
    with nogil:
        rc = sx_sha512_256(_ptr(data), data.shape[0], out)
    if rc != 0:
        raise MemoryError("sphinx: OpenSSL SHA-512/256 failed")
    return <bytes>out[:32]


def hmac_sha256(const uint8_t[::1] key, const uint8_t[::1] data):
    cdef uint8_t out[32]
    cdef int rc
    with nogil:
        rc = sx_hmac_sha256(_ptr(key), key.shape[0], _ptr(data), data.shape[0], out)
    if rc != 0:
        raise MemoryError("sphinx: OpenSSL HMAC-SHA256 failed")
    return <bytes>out[:32]


def hkdf_expand(const uint8_t[::1] prk, const uint8_t[::1] info, Py_ssize_t length):
    """HKDF-Expand-SHA256 (no Extract step)."""
    if not 0 <= length <= 255 * 32:
        raise ValueError(f"sphinx: HKDF-Expand length must be 0..8160, got {length}")
    out = bytearray(length)
    cdef uint8_t[::1] view = out
    cdef int rc
    with nogil:
        rc = sx_hkdf_expand(_ptr(prk), prk.shape[0], _ptr(info), info.shape[0],
                            <uint8_t *>_ptr(view), length)
    if rc != 0:
        raise MemoryError("sphinx: OpenSSL HKDF-Expand failed")
    return bytes(out)


def kdf(const uint8_t[::1] shared_secret):
    """The 144-byte Sphinx KDF output (mu, kappa, iota, pi, b) for a 32-byte secret."""
    _require(shared_secret.shape[0], 32, "KDF input")
    cdef sx_packet_keys keys
    cdef int rc
    with nogil:
        rc = sx_kdf(&shared_secret[0], &keys)
    okm = (<uint8_t *>&keys)[:SX_KDF_LEN]
    sx_wipe(&keys, sizeof(keys))
    if rc != 0:
        raise MemoryError("sphinx: OpenSSL KDF failed")
    return okm


def aes128_ctr(const uint8_t[::1] key, const uint8_t[::1] iv, const uint8_t[::1] data):
    """AES-128-CTR with the 16-byte IV as a 128-bit big-endian counter."""
    _require(key.shape[0], 16, "AES-128 key")
    _require(iv.shape[0], 16, "AES-CTR IV")
    if data.shape[0] > 0x7FFFFFFF:  # OpenSSL takes an int length
        raise ValueError(f"sphinx: AES-128-CTR input of {data.shape[0]} bytes exceeds 2**31 - 1")
    out = bytearray(data.shape[0])
    cdef uint8_t[::1] view = out
    cdef int rc
    with nogil:
        rc = sx_aes128_ctr(&key[0], &iv[0], _ptr(data), <uint8_t *>_ptr(view), data.shape[0])
    if rc != 0:
        raise MemoryError("sphinx: OpenSSL AES-128-CTR failed")
    return bytes(out)


# ------------------------------------------------------------------ unwrap

cdef inline Py_ssize_t _key_count(const uint8_t[::1] keys) except -1:
    if keys.shape[0] == 0 or keys.shape[0] % 32 or keys.shape[0] > 32 * SX_MAX_KEYS:
        raise ValueError(f"sphinx: private keys must be 1..{SX_MAX_KEYS} x 32 bytes, "
                         f"got {keys.shape[0]} bytes")
    return keys.shape[0] // 32


def unwrap(const uint8_t[::1] private_keys, uint8_t[::1] packet):
    """Unwrap one packet in place (a writable buffer) with 1..3 concatenated private keys.

    Returns (status, key_index, replay_tag or None, routing slot (82 bytes) or None).
    """
    cdef Py_ssize_t n_keys = _key_count(private_keys)
    cdef sx_unwrap_result res
    cdef uint8_t dummy = 0
    cdef uint8_t *pkt = &packet[0] if packet.shape[0] > 0 else &dummy
    with nogil:
        sx_unwrap(&private_keys[0], n_keys, pkt, packet.shape[0], &res)
    tag = res.tag[:32] if res.has_tag else None
    slot = res.slot[:SX_SLOT_LEN] if res.key_index >= 0 else None
    return res.status, res.key_index, tag, slot


cdef tuple _check_matrix(obj, str name, bint writable):
    """The shape of `obj`, or a clear error if it is not a C-contiguous uint8 matrix (before
    Cython's own, terser buffer checks)."""
    try:
        view = memoryview(obj)
    except TypeError:
        raise TypeError(f"sphinx: {name} must be a uint8[rows, bytes] array, "
                        f"got {type(obj).__name__}") from None
    if view.format not in ("B", "=B", "<B", ">B") or view.ndim != 2:
        raise ValueError(f"sphinx: {name} must be a 2-D uint8 array, got format "
                         f"{view.format!r} with {view.ndim} dimension(s)")
    if not view.c_contiguous:
        raise ValueError(f"sphinx: {name} must be C-contiguous (rows laid out back to back)")
    if writable and view.readonly:
        raise ValueError(f"sphinx: {name} must be writable (packets are unwrapped in place)")
    return tuple(view.shape)


# Per-packet result arrays of UnwrapBatch: (attribute, bytes per row or 0 for a vector).
_RESULT_ARRAYS = (("status", 0), ("key_index", 0), ("flags", 0), ("delay_ms", 0),
                  ("tags", 32), ("next_hop", 32), ("recipient", 64), ("surb_id", 16))


cdef _check_batch(packets_array, Py_ssize_t n, keys_array, result):
    """Every length the nogil loop relies on, checked with an error naming the argument."""
    rows = _check_matrix(packets_array, "packets", True)[0]
    key_shape = _check_matrix(keys_array, "keys", False)
    if not 0 <= n <= rows:
        raise ValueError(f"sphinx: batch count {n} outside 0..{rows}")
    if not 1 <= key_shape[0] <= SX_MAX_KEYS or key_shape[1] != 32:
        raise ValueError(f"sphinx: keys must be uint8[1..{SX_MAX_KEYS}, 32], got shape {key_shape}")
    for name, width in _RESULT_ARRAYS:
        shape = tuple(getattr(result, name).shape)
        if shape[0] < n:
            raise ValueError(f"sphinx: result.{name} holds {shape[0]} rows, batch needs {n}")
        if width and shape[1:] != (width,):
            raise ValueError(f"sphinx: result.{name} rows must be {width} bytes, got shape {shape}")


def unwrap_batch(packets_array, Py_ssize_t n, keys_array, result):
    """Unwrap rows 0..n-1 of `packets_array` (uint8[N, L], C-contiguous, writable) in place,
    trying each row of `keys_array` (uint8[1..3, 32]) in order.

    Fills the numpy arrays of `result` (katzenpost.sphinx.batch.UnwrapBatch) and returns
    the number of packets that unwrapped without error. The loop holds no GIL.
    """
    _check_batch(packets_array, n, keys_array, result)
    cdef uint8_t[:, ::1] packets = packets_array
    cdef const uint8_t[:, ::1] keys = keys_array
    cdef int32_t[::1] status = result.status
    cdef int8_t[::1] key_index = result.key_index
    cdef uint8_t[::1] flags = result.flags
    cdef uint32_t[::1] delay_ms = result.delay_ms
    cdef uint8_t[:, ::1] tags = result.tags
    cdef uint8_t[:, ::1] next_hop = result.next_hop
    cdef uint8_t[:, ::1] recipient = result.recipient
    cdef uint8_t[:, ::1] surb_id = result.surb_id
    cdef Py_ssize_t g, i, j, count, row_len = packets.shape[1], ok = 0
    cdef sx_unwrap_result res[SX_LANES]
    cdef uint8_t *rows[SX_LANES]
    cdef uint8_t dummy = 0
    with nogil:
        g = 0
        while g < n:  # groups of eight packets: their X25519s run in lanes
            count = min(<Py_ssize_t>SX_LANES, n - g)
            for j in range(count):
                rows[j] = &packets[g + j, 0] if row_len > 0 else &dummy
            sx_unwrap_group(&keys[0, 0], keys.shape[0], rows, count, row_len, res)
            for j in range(count):
                i = g + j
                status[i] = res[j].status
                key_index[i] = res[j].key_index
                flags[i] = res[j].flags
                delay_ms[i] = res[j].delay_ms
                memcpy(&tags[i, 0], res[j].tag, 32)
                memcpy(&next_hop[i, 0], res[j].next_hop, 32)
                memcpy(&recipient[i, 0], res[j].recipient, 64)
                memcpy(&surb_id[i, 0], res[j].surb_id, 16)
                ok += res[j].status == SX_OK
            g += count
        sx_wipe(res, sizeof(res))  # the decrypted routing slots
    return ok


# ------------------------------------------------------------------ creation and SURBs

cdef _fill_request(sx_header_request *req, tuple request):
    """Check one creation's inputs (as create_header documents them) into `req`."""
    if len(request) != 6:
        raise ValueError("sphinx: a creation request is (ephemeral, ids, public_keys, blocks, "
                         "block_lens, filler)")
    ephemeral, ids, public_keys, blocks, block_lens, filler = request
    cdef Py_ssize_t n = len(block_lens), i
    if not 1 <= n <= SX_NR_HOPS:
        raise ValueError(f"sphinx: path must have 1..{SX_NR_HOPS} hops, got {n}")
    cdef const uint8_t[::1] e = ephemeral, d = ids, k = public_keys, b = blocks, f = filler
    _require(e.shape[0], 32, "ephemeral key")
    _require(d.shape[0], 32 * n, "node ids")
    _require(k.shape[0], 32 * n, "public keys")
    _require(b.shape[0], SX_SLOT_LEN * n, "command blocks")
    _require(f.shape[0], SX_SLOT_LEN * (SX_NR_HOPS - n), "filler")
    req.n_hops = n
    for i in range(n):
        req.block_lens[i] = block_lens[i]
    memcpy(req.ephemeral, &e[0], 32)
    memcpy(req.ids, &d[0], 32 * n)
    memcpy(req.public_keys, &k[0], 32 * n)
    memcpy(req.blocks, &b[0], SX_SLOT_LEN * n)
    memcpy(req.filler, _ptr(f), f.shape[0])


def create_headers(requests):
    """create_header for each (ephemeral, ids, public_keys, blocks, block_lens, filler) of
    `requests`, eight at a time with their X25519s in lanes (GIL released). Returns a list of
    (header, SPRP keys) in order."""
    cdef Py_ssize_t n = len(requests), g, i, count
    cdef sx_header_request *req = <sx_header_request *>calloc(max(n, 1), sizeof(sx_header_request))
    if req == NULL:
        raise MemoryError("sphinx: no memory for the creation requests")
    headers = bytearray(SX_HEADER_LEN * n)
    sprp = bytearray(SX_NR_HOPS * SX_SPRP_MATERIAL_LEN * n)
    cdef uint8_t[::1] header_view = headers
    cdef uint8_t[::1] sprp_view = sprp
    cdef int status[SX_LANES]
    cdef int rc = SX_OK
    try:
        for i in range(n):
            _fill_request(&req[i], tuple(requests[i]))
        with nogil:
            g = 0
            while g < n and rc == SX_OK:
                count = min(<Py_ssize_t>SX_LANES, n - g)
                rc = sx_create_header_group(&req[g], count, &header_view[SX_HEADER_LEN * g],
                                            &sprp_view[SX_NR_HOPS * SX_SPRP_MATERIAL_LEN * g],
                                            status)
                g += count
        if rc == SX_ERR_BAD_ARGUMENT:
            raise ValueError("sphinx: command block too long for its hop")
        if rc != SX_OK:
            raise MemoryError("sphinx: OpenSSL failed during header creation")
        step = SX_NR_HOPS * SX_SPRP_MATERIAL_LEN
        out = [(bytes(headers[SX_HEADER_LEN * i : SX_HEADER_LEN * (i + 1)]),
                bytes(sprp[step * i : step * i + SX_SPRP_MATERIAL_LEN * req[i].n_hops]))
               for i in range(n)]
    finally:
        sx_wipe(req, max(n, 1) * sizeof(sx_header_request))
        free(req)
        if n:
            sx_wipe(&sprp_view[0], sprp_view.shape[0])
    return out


def create_header(const uint8_t[::1] ephemeral, const uint8_t[::1] ids,
                  const uint8_t[::1] public_keys, const uint8_t[::1] blocks, block_lens,
                  const uint8_t[::1] filler):
    """Spec 5.1 for n = len(block_lens) hops. ids/public_keys: n x 32 bytes; blocks: n x 82
    (user commands, zero-padded); filler: (5 - n) x 82. Returns (header, n x 64 SPRP keys)."""
    return create_headers([(ephemeral, ids, public_keys, blocks, block_lens, filler)])[0]


def encrypt_payload(const uint8_t[::1] sprp_keys, const uint8_t[::1] payload):
    """0^16 || payload, AEZ-encrypted under each 64-byte key entry, last entry first."""
    if sprp_keys.shape[0] % SX_SPRP_MATERIAL_LEN:
        raise ValueError("sphinx: SPRP key material must be a multiple of 64 bytes")
    out = bytearray(SX_TAG_LEN + payload.shape[0])
    cdef uint8_t[::1] view = out
    with nogil:
        sx_encrypt_payload(_ptr(sprp_keys), sprp_keys.shape[0] // SX_SPRP_MATERIAL_LEN,
                           _ptr(payload), payload.shape[0], &view[0])
    return bytes(out)


def decrypt_surb_payload(const uint8_t[::1] payload, const uint8_t[::1] keys):
    """Spec 5.6 on checked inputs (len(keys) a non-zero multiple of 64, payload >= 16 bytes).

    Returns (status, whole decrypted buffer); the plaintext is buffer[16:] when status is 0.
    """
    if keys.shape[0] == 0 or keys.shape[0] % SX_SPRP_MATERIAL_LEN:
        raise ValueError("sphinx: SURB keys must be a non-zero multiple of 64 bytes")
    if payload.shape[0] < SX_TAG_LEN:
        raise ValueError("sphinx: SURB payload shorter than its tag")
    out = bytearray(payload)
    cdef uint8_t[::1] view = out
    cdef int rc
    with nogil:
        rc = sx_decrypt_surb_payload(&keys[0], keys.shape[0] // SX_SPRP_MATERIAL_LEN, &view[0],
                                     view.shape[0])
    return rc, bytes(out)
