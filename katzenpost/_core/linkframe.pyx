# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Per-frame crypto of the link layer: length header + body ChaCha20-Poly1305 and Noise rekey.

One ``FrameCipher`` per direction; each call does a whole frame step in one ``nogil`` block
over libcrypto. Policy (length bounds, error messages, state checks) stays in
``katzenpost.wire.framing``; this module only returns status values. No I/O, no logging.
Pure-Python twin: ``katzenpost.reference.linkframe``.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

cdef extern from "openssl/evp.h" nogil:
    ctypedef struct EVP_CIPHER_CTX:
        pass
    ctypedef struct EVP_CIPHER:
        pass
    ctypedef struct ENGINE:
        pass
    const EVP_CIPHER *EVP_chacha20_poly1305()
    EVP_CIPHER_CTX *EVP_CIPHER_CTX_new()
    void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *ctx)
    int EVP_EncryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl,
                           const unsigned char *key, const unsigned char *iv)
    int EVP_EncryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl,
                          const unsigned char *inp, int inl)
    int EVP_EncryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl)
    int EVP_DecryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl,
                           const unsigned char *key, const unsigned char *iv)
    int EVP_DecryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl,
                          const unsigned char *inp, int inl)
    int EVP_DecryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl)
    int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX *ctx, int type, int arg, void *ptr)
    int EVP_CTRL_AEAD_GET_TAG
    int EVP_CTRL_AEAD_SET_TAG

cdef extern from "openssl/crypto.h" nogil:
    void OPENSSL_cleanse(void *ptr, size_t len)

cdef enum:
    KEY_LENGTH = 32
    TAG_LENGTH = 16
    NONCE_LENGTH = 12
    HEADER_PLAINTEXT = 4

KEY_BYTES = KEY_LENGTH
TAG_BYTES = TAG_LENGTH
HEADER_BYTES = HEADER_PLAINTEXT + TAG_LENGTH
# The largest counter a frame may start at: it uses n and n+1, and 2^64-1 is reserved for rekey.
LAST_FRAME_NONCE = 0xFFFFFFFFFFFFFFFF - 2


cdef inline void _nonce(uint8_t *out, uint64_t counter) noexcept nogil:
    """32 zero bits, then the counter little-endian."""
    cdef int i
    memset(out, 0, 4)
    for i in range(8):
        out[4 + i] = <uint8_t>(counter >> (8 * i))


cdef int _seal(EVP_CIPHER_CTX *ctx, const uint8_t *key, uint64_t counter,
               const uint8_t *plaintext, int length, uint8_t *out) noexcept nogil:
    """out = ciphertext ‖ tag (length + 16 bytes); 0 on success."""
    cdef uint8_t nonce[NONCE_LENGTH]
    cdef int written = 0, final_len = 0
    _nonce(nonce, counter)
    if EVP_EncryptInit_ex(ctx, NULL, NULL, key, nonce) != 1:
        return -1
    if length > 0 and EVP_EncryptUpdate(ctx, out, &written, plaintext, length) != 1:
        return -1
    if EVP_EncryptFinal_ex(ctx, out + written, &final_len) != 1:
        return -1
    if EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TAG_LENGTH, out + length) != 1:
        return -1
    return 0


cdef int _open(EVP_CIPHER_CTX *ctx, const uint8_t *key, uint64_t counter,
               const uint8_t *ciphertext, int length, uint8_t *out) noexcept nogil:
    """Decrypt ciphertext ‖ tag (length includes the tag); 0 if authentic."""
    cdef uint8_t nonce[NONCE_LENGTH]
    cdef uint8_t tag[TAG_LENGTH]
    cdef int written = 0, final_len = 0
    cdef int body = length - TAG_LENGTH
    _nonce(nonce, counter)
    memcpy(tag, ciphertext + body, TAG_LENGTH)
    if EVP_DecryptInit_ex(ctx, NULL, NULL, key, nonce) != 1:
        return -1
    if body > 0 and EVP_DecryptUpdate(ctx, out, &written, ciphertext, body) != 1:
        return -1
    if EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TAG_LENGTH, tag) != 1:
        return -1
    if EVP_DecryptFinal_ex(ctx, out + written, &final_len) != 1:
        return -1
    return 0


cdef int _rekey(EVP_CIPHER_CTX *ctx, uint8_t *key) noexcept nogil:
    """Noise REKEY: key = first 32 bytes of ENCRYPT(key, 2^64-1, empty AD, 32 zero bytes)."""
    cdef uint8_t nonce[NONCE_LENGTH]
    cdef uint8_t zeros[KEY_LENGTH]
    cdef uint8_t fresh[KEY_LENGTH]
    cdef int written = 0
    memset(zeros, 0, KEY_LENGTH)
    _nonce(nonce, 0xFFFFFFFFFFFFFFFF)
    if EVP_EncryptInit_ex(ctx, NULL, NULL, key, nonce) != 1:
        return -1
    if EVP_EncryptUpdate(ctx, fresh, &written, zeros, KEY_LENGTH) != 1 or written != KEY_LENGTH:
        return -1
    memcpy(key, fresh, KEY_LENGTH)
    OPENSSL_cleanse(fresh, KEY_LENGTH)
    return 0


cdef class FrameCipher:
    """One direction of a link: counter and current key, rekeyed after every frame.

    ``seal(command)`` -> header frame ‖ body frame; ``open_header(20 bytes)`` -> the decrypted
    length (-1 if the MAC fails); ``open_body(body)`` -> plaintext (None if the MAC fails).
    A failed open leaves the state unchanged. ``nonce`` is the counter of the next frame.
    """
    cdef EVP_CIPHER_CTX *_encrypt
    cdef EVP_CIPHER_CTX *_decrypt
    cdef uint8_t _key[KEY_LENGTH]
    cdef uint64_t _counter

    def __cinit__(self, const unsigned char[::1] key not None, uint64_t nonce=0):
        if key.shape[0] != KEY_LENGTH:
            raise ValueError(f"linkframe: key must be {KEY_LENGTH} bytes, got {key.shape[0]}")
        self._encrypt = EVP_CIPHER_CTX_new()
        self._decrypt = EVP_CIPHER_CTX_new()
        if self._encrypt == NULL or self._decrypt == NULL:
            raise MemoryError("linkframe: EVP_CIPHER_CTX_new failed")
        if (EVP_EncryptInit_ex(self._encrypt, EVP_chacha20_poly1305(), NULL, NULL, NULL) != 1
                or EVP_DecryptInit_ex(self._decrypt, EVP_chacha20_poly1305(), NULL, NULL, NULL) != 1):
            raise RuntimeError("linkframe: libcrypto lacks ChaCha20-Poly1305")
        memcpy(self._key, &key[0], KEY_LENGTH)
        self._counter = nonce

    def __dealloc__(self):
        OPENSSL_cleanse(self._key, KEY_LENGTH)
        if self._encrypt != NULL:
            EVP_CIPHER_CTX_free(self._encrypt)
        if self._decrypt != NULL:
            EVP_CIPHER_CTX_free(self._decrypt)

    @property
    def nonce(self):
        return self._counter

    cdef int _check_counter(self) except -1:
        if self._counter > LAST_FRAME_NONCE:
            raise OverflowError("linkframe: transport nonce exhausted")
        return 0

    def seal(self, const unsigned char[::1] command not None):
        """Encrypt BE32(len+16) and the command under counters n, n+1; then rekey."""
        cdef Py_ssize_t length = command.shape[0]
        cdef Py_ssize_t body_length = length + TAG_LENGTH
        if body_length > 0xFFFFFFFF or length > 0x7FFFFFFF - TAG_LENGTH:
            raise OverflowError("linkframe: command too long")
        self._check_counter()
        out = PyBytes_FromStringAndSize(NULL, HEADER_PLAINTEXT + TAG_LENGTH + body_length)
        cdef uint8_t *dst = <uint8_t *>PyBytes_AS_STRING(out)
        cdef const uint8_t *src = &command[0] if length > 0 else <const uint8_t *>dst
        cdef uint8_t header[HEADER_PLAINTEXT]
        cdef uint32_t announced = <uint32_t>body_length
        cdef int status
        header[0] = <uint8_t>(announced >> 24)
        header[1] = <uint8_t>(announced >> 16)
        header[2] = <uint8_t>(announced >> 8)
        header[3] = <uint8_t>announced
        with nogil:
            status = _seal(self._encrypt, self._key, self._counter, header, HEADER_PLAINTEXT, dst)
            if status == 0:
                status = _seal(self._encrypt, self._key, self._counter + 1, src, <int>length,
                               dst + HEADER_PLAINTEXT + TAG_LENGTH)
            if status == 0:
                status = _rekey(self._encrypt, self._key)
        if status != 0:
            raise RuntimeError("linkframe: libcrypto encryption failed")
        self._counter += 2
        return out

    def open_header(self, const unsigned char[::1] header not None):
        """The announced body length, or -1 if the header's MAC fails."""
        if header.shape[0] != HEADER_PLAINTEXT + TAG_LENGTH:
            raise ValueError(f"linkframe: header must be {HEADER_PLAINTEXT + TAG_LENGTH} bytes")
        self._check_counter()
        cdef uint8_t plain[HEADER_PLAINTEXT]
        cdef int status
        with nogil:
            status = _open(self._decrypt, self._key, self._counter, &header[0],
                           HEADER_PLAINTEXT + TAG_LENGTH, plain)
        if status != 0:
            return -1
        return ((<uint32_t>plain[0] << 24) | (<uint32_t>plain[1] << 16)
                | (<uint32_t>plain[2] << 8) | <uint32_t>plain[3])

    def open_body(self, const unsigned char[::1] body not None):
        """Decrypt the body under counter n+1 and rekey; None if the MAC fails."""
        cdef Py_ssize_t length = body.shape[0]
        if length < TAG_LENGTH or length > 0x7FFFFFFF:
            raise ValueError("linkframe: body length out of range")
        self._check_counter()
        out = PyBytes_FromStringAndSize(NULL, length - TAG_LENGTH)
        cdef uint8_t *dst = <uint8_t *>PyBytes_AS_STRING(out)
        cdef int authentic, rekeyed = -1
        with nogil:
            authentic = _open(self._decrypt, self._key, self._counter + 1, &body[0], <int>length, dst)
            if authentic == 0:
                rekeyed = _rekey(self._encrypt, self._key)
        if authentic != 0:
            return None
        if rekeyed != 0:
            raise RuntimeError("linkframe: libcrypto rekey failed")
        self._counter += 2
        return out
