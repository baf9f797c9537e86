# cython: boundscheck=False, wraparound=False, cdivision=True
"""AEZ v5 (as the Sphinx Packet Format Specification uses it) over the C core in aez_impl.c: argument checks here,
all cryptography in C with the GIL released. Holds no key material between calls and does
no I/O; the public API is katzenpost.sphinx.aez."""
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport uint8_t, uint64_t

# The AD vector is passed to C through these arrays; longer vectors use PyMem_Malloc.
cdef enum:
    AD_ON_STACK = 8
# A bound on tau (bytes) so that a typo gives a clear error instead of a huge allocation.
MAX_TAU = 1 << 24

_BACKEND_NAMES = {AEZ_BACKEND_PORTABLE: "portable", AEZ_BACKEND_AESNI: "aesni"}
_BACKEND_CODES = {"auto": AEZ_BACKEND_AUTO, "portable": AEZ_BACKEND_PORTABLE,
                  "aesni": AEZ_BACKEND_AESNI}

cdef uint8_t _empty[1]


cdef inline const uint8_t *_ptr(const unsigned char[::1] view) noexcept nogil:
    if view.shape[0] == 0:
        return _empty
    return &view[0]


cdef const unsigned char[::1] _bytes_view(obj, str name) except *:
    if isinstance(obj, str) or obj is None:
        raise TypeError(f"aez: {name} must be a bytes-like object, got {type(obj).__name__}")
    try:
        return obj
    except (TypeError, ValueError) as exc:
        raise TypeError(f"aez: {name} must be a contiguous bytes-like object "
                        f"({type(obj).__name__}: {exc})") from None


cdef size_t _check_tau(tau) except? 0:
    if isinstance(tau, bool) or not isinstance(tau, int):
        raise TypeError(f"aez: tau must be an int (bytes of authenticator), "
                        f"got {type(tau).__name__}")
    if tau < 0 or tau > MAX_TAU:
        raise ValueError(f"aez: tau must be in 0..{MAX_TAU} bytes, got {tau}")
    return <size_t>tau


cdef list _ad_strings(ad):
    """The AD vector as a list of bytes objects (kept alive by the caller during C calls)."""
    if not isinstance(ad, (list, tuple)):
        raise TypeError(f"aez: ad must be a list of byte strings, got {type(ad).__name__}")
    strings = []
    for index, item in enumerate(ad):
        if type(item) is bytes:
            strings.append(item)
        elif isinstance(item, (bytes, bytearray, memoryview)):
            strings.append(bytes(item))
        else:
            raise TypeError(f"aez: ad[{index}] must be a byte string, "
                            f"got {type(item).__name__}")
    return strings


cdef class _AdVector:
    """Pointer and length arrays for C over a list of bytes objects it keeps alive."""
    cdef list strings
    cdef const uint8_t *stack_ptrs[AD_ON_STACK]
    cdef size_t stack_lens[AD_ON_STACK]
    cdef const uint8_t **ptrs
    cdef size_t *lens
    cdef size_t count

    def __cinit__(self, ad):
        self.strings = _ad_strings(ad)
        self.count = len(self.strings)
        if self.count <= AD_ON_STACK:
            self.ptrs = self.stack_ptrs
            self.lens = self.stack_lens
        else:
            self.ptrs = <const uint8_t **>PyMem_Malloc(self.count * sizeof(uint8_t *))
            self.lens = <size_t *>PyMem_Malloc(self.count * sizeof(size_t))
            if self.ptrs == NULL or self.lens == NULL:
                raise MemoryError("aez: cannot allocate the AD vector")
        for k in range(self.count):
            item = self.strings[k]
            self.ptrs[k] = <const uint8_t *>PyBytes_AS_STRING(item)
            self.lens[k] = len(item)

    def __dealloc__(self):
        if self.ptrs != self.stack_ptrs and self.ptrs != NULL:
            PyMem_Free(self.ptrs)
        if self.lens != self.stack_lens and self.lens != NULL:
            PyMem_Free(self.lens)


cdef int _acquire(Py_buffer *view, obj, str name, bint writable) except -1:
    """Fills view with obj's bytes (contiguous), or raises TypeError naming the argument."""
    if isinstance(obj, str) or obj is None:
        raise TypeError(f"aez: {name} must be a bytes-like object, got {type(obj).__name__}")
    try:
        PyObject_GetBuffer(obj, view, PyBUF_WRITABLE if writable else PyBUF_SIMPLE)
    except TypeError:
        raise TypeError(f"aez: {name} must be a bytes-like object, "
                        f"got {type(obj).__name__}") from None
    except BufferError as exc:
        kind = "writable contiguous" if writable else "contiguous"
        raise TypeError(f"aez: {name} must be a {kind} bytes-like object "
                        f"({type(obj).__name__}: {exc})") from None
    return 0


cdef _AdVector _no_ad = _AdVector(())


cdef inline _AdVector _ad_vector(ad):
    # The Sphinx case (no AD) shares one empty vector: no allocation per call.
    if (type(ad) is list or type(ad) is tuple) and len(ad) == 0:
        return _no_ad
    return _AdVector(ad)


cdef class _CallBuffers:
    """The buffers of one Encrypt/Decrypt call (key, nonce, input, optional output), held
    for the call and released when this object dies, however the call ends."""
    cdef Py_buffer key, nonce, data, out
    cdef int held   # bit k set: buffer k acquired (key, nonce, data, out)

    def __dealloc__(self):
        if self.held & 8:
            PyBuffer_Release(&self.out)
        if self.held & 4:
            PyBuffer_Release(&self.data)
        if self.held & 2:
            PyBuffer_Release(&self.nonce)
        if self.held & 1:
            PyBuffer_Release(&self.key)


cdef _CallBuffers _call_buffers(key, nonce, data, str data_name, bint has_out, out):
    """Acquire the arguments (out first when the call writes into one): a bad argument
    raises TypeError naming it, and whatever was acquired is released with the object."""
    cdef _CallBuffers b = _CallBuffers.__new__(_CallBuffers)
    if has_out:
        _acquire(&b.out, out, "out", True)
        b.held |= 8
    _acquire(&b.key, key, "key", False)
    b.held |= 1
    _acquire(&b.nonce, nonce, "nonce", False)
    b.held |= 2
    _acquire(&b.data, data, data_name, False)
    b.held |= 4
    return b


cdef void _encrypt_call(_CallBuffers b, _AdVector ad_v, size_t tau_n, uint8_t *out) noexcept:
    cdef aez_ctx ctx
    with nogil:
        aez_setup(&ctx, <const uint8_t *>b.key.buf, b.key.len)
        aez_encrypt(&ctx, <const uint8_t *>b.nonce.buf, b.nonce.len, ad_v.ptrs, ad_v.lens,
                    ad_v.count, tau_n, <const uint8_t *>b.data.buf, b.data.len, out)
        aez_wipe(&ctx)


cdef int _decrypt_call(_CallBuffers b, _AdVector ad_v, size_t tau_n, uint8_t *out) noexcept:
    cdef aez_ctx ctx
    cdef int rc
    with nogil:
        aez_setup(&ctx, <const uint8_t *>b.key.buf, b.key.len)
        rc = aez_decrypt(&ctx, <const uint8_t *>b.nonce.buf, b.nonce.len, ad_v.ptrs, ad_v.lens,
                         ad_v.count, tau_n, <const uint8_t *>b.data.buf, b.data.len, out)
        aez_wipe(&ctx)
    return rc


def encrypt(key, nonce, ad, tau, msg):
    """AEZ Encrypt: len(msg) + tau bytes. ad is a list of byte strings, tau in bytes."""
    cdef size_t tau_n = _check_tau(tau)
    cdef _AdVector ad_v = _ad_vector(ad)
    cdef _CallBuffers b = _call_buffers(key, nonce, msg, "msg", False, None)
    out = PyBytes_FromStringAndSize(NULL, b.data.len + tau_n)
    _encrypt_call(b, ad_v, tau_n, <uint8_t *>PyBytes_AS_STRING(out))
    return out


def decrypt(key, nonce, ad, tau, ct):
    """AEZ Decrypt: the plaintext (len(ct) - tau bytes), or None if ct does not verify."""
    cdef size_t tau_n = _check_tau(tau)
    cdef _AdVector ad_v = _ad_vector(ad)
    cdef _CallBuffers b = _call_buffers(key, nonce, ct, "ct", False, None)
    if <size_t>b.data.len < tau_n:
        return None
    out = PyBytes_FromStringAndSize(NULL, b.data.len - tau_n)
    cdef int rc = _decrypt_call(b, ad_v, tau_n, <uint8_t *>PyBytes_AS_STRING(out))
    if rc == AEZ_NO_MEMORY:
        raise MemoryError(f"aez: cannot allocate {b.data.len} bytes to decrypt")
    return out if rc == AEZ_OK else None


def encrypt_into(key, nonce, ad, tau, msg, out):
    """Encrypt msg into the writable buffer out (exactly len(msg) + tau bytes). msg may be a
    view of the start of out (in-place encryption)."""
    cdef size_t tau_n = _check_tau(tau)
    cdef _AdVector ad_v = _ad_vector(ad)
    cdef _CallBuffers b = _call_buffers(key, nonce, msg, "msg", True, out)
    if <size_t>b.out.len != <size_t>b.data.len + tau_n:
        raise ValueError(f"aez: out must hold len(msg) + tau = {b.data.len + tau_n} bytes, "
                         f"got {b.out.len}")
    _encrypt_call(b, ad_v, tau_n, <uint8_t *>b.out.buf)


def decrypt_into(key, nonce, ad, tau, ct, out):
    """Decrypt ct into the writable buffer out (exactly len(ct) - tau bytes); True if it
    verified (out is not written otherwise). ct may be out itself (in place)."""
    cdef size_t tau_n = _check_tau(tau)
    cdef _AdVector ad_v = _ad_vector(ad)
    cdef _CallBuffers b = _call_buffers(key, nonce, ct, "ct", True, out)
    if <size_t>b.data.len < tau_n:
        return False
    if <size_t>b.out.len != <size_t>b.data.len - tau_n:
        raise ValueError(f"aez: out must hold len(ct) - tau = {b.data.len - tau_n} bytes, "
                         f"got {b.out.len}")
    cdef int rc = _decrypt_call(b, ad_v, tau_n, <uint8_t *>b.out.buf)
    if rc == AEZ_NO_MEMORY:
        raise MemoryError("aez: cannot allocate the buffer to decrypt into")
    return rc == AEZ_OK


# ----- lower-level pieces, for the AEZ JSON vectors (extract, hash, prf) -----

def _extract(key):
    """(I, J, L) of the key as 48 bytes."""
    cdef const unsigned char[::1] key_v = _bytes_view(key, "key")
    cdef aez_ctx ctx
    with nogil:
        aez_setup(&ctx, _ptr(key_v), key_v.shape[0])
    extracted = bytes(ctx.I[:16]) + bytes(ctx.J[:16]) + bytes(ctx.L[:16])
    aez_wipe(&ctx)
    return extracted


def _hash(key, tau_bits, data):
    """AEZ-hash delta (16 bytes); data[0] is the nonce, data[1:] the AD strings."""
    if isinstance(tau_bits, bool) or not isinstance(tau_bits, int) or not (
            0 <= tau_bits < (1 << 64)):
        raise ValueError(f"aez: tau_bits must be an int in 0..2**64-1, got {tau_bits!r}")
    cdef const unsigned char[::1] key_v = _bytes_view(key, "key")
    cdef _AdVector strings = _AdVector(data)
    cdef uint64_t tau_b = tau_bits
    cdef uint8_t delta[16]
    cdef aez_ctx ctx
    with nogil:
        aez_setup(&ctx, _ptr(key_v), key_v.shape[0])
        aez_hash(&ctx, tau_b, strings.ptrs, strings.lens, strings.count, delta)
        aez_wipe(&ctx)
    return bytes(delta[:16])


def _prf(key, delta, tau):
    """AEZ-prf: tau bytes under delta (16 bytes)."""
    cdef const unsigned char[::1] key_v = _bytes_view(key, "key")
    cdef const unsigned char[::1] delta_v = _bytes_view(delta, "delta")
    cdef size_t tau_n = _check_tau(tau)
    if delta_v.shape[0] != 16:
        raise ValueError(f"aez: delta must be 16 bytes, got {delta_v.shape[0]}")
    out = PyBytes_FromStringAndSize(NULL, tau_n)
    cdef uint8_t *out_p = <uint8_t *>PyBytes_AS_STRING(out)
    cdef aez_ctx ctx
    with nogil:
        aez_setup(&ctx, _ptr(key_v), key_v.shape[0])
        aez_prf(&ctx, &delta_v[0], out_p, tau_n)
        aez_wipe(&ctx)
    return out


def _cipher(key, delta, data, bint decipher):
    """AEZ Encipher (or Decipher) of data under a 16-byte delta, tau-free."""
    cdef const unsigned char[::1] key_v = _bytes_view(key, "key")
    cdef const unsigned char[::1] delta_v = _bytes_view(delta, "delta")
    cdef const unsigned char[::1] data_v = _bytes_view(data, "data")
    if delta_v.shape[0] != 16:
        raise ValueError(f"aez: delta must be 16 bytes, got {delta_v.shape[0]}")
    out = PyBytes_FromStringAndSize(NULL, data_v.shape[0])
    cdef uint8_t *out_p = <uint8_t *>PyBytes_AS_STRING(out)
    cdef aez_ctx ctx
    with nogil:
        aez_setup(&ctx, _ptr(key_v), key_v.shape[0])
        if decipher:
            aez_decipher(&ctx, &delta_v[0], _ptr(data_v), data_v.shape[0], out_p)
        else:
            aez_encipher(&ctx, &delta_v[0], _ptr(data_v), data_v.shape[0], out_p)
        aez_wipe(&ctx)
    return out


def _encipher(key, delta, data):
    return _cipher(key, delta, data, False)


def _decipher(key, delta, data):
    return _cipher(key, delta, data, True)


def _blake2b(data, size_t digest_size):
    """The C BLAKE2b (unkeyed), checked against hashlib by the tests."""
    cdef const unsigned char[::1] data_v = _bytes_view(data, "data")
    if digest_size < 1 or digest_size > 64:
        raise ValueError(f"aez: digest_size must be in 1..64, got {digest_size}")
    out = PyBytes_FromStringAndSize(NULL, digest_size)
    cdef uint8_t *out_p = <uint8_t *>PyBytes_AS_STRING(out)
    with nogil:
        aez_blake2b(_ptr(data_v), data_v.shape[0], out_p, digest_size)
    return out


def _set_backend(str name):
    """Force the AES-round backend ("portable", "aesni" or "auto") process-wide; for tests
    and benchmarks only."""
    if name not in _BACKEND_CODES:
        raise ValueError(f"aez: backend must be one of {sorted(_BACKEND_CODES)}, got {name!r}")
    if aez_set_backend(_BACKEND_CODES[name]) != 0:
        raise RuntimeError(f"aez: backend {name!r} is not available on this CPU")


def _backend():
    """The backend in use: "aesni" or "portable"."""
    return _BACKEND_NAMES[aez_backend()]


def cpu_has_aesni():
    """True if this CPU has AES-NI (and SSE4.1, SSSE3)."""
    return bool(aez_cpu_has_aesni())


def hardware_accelerated():
    """True if calls now run on the AES-NI backend."""
    return bool(aez_hw_accelerated())


HARDWARE_ACCELERATED = bool(aez_hw_accelerated())
