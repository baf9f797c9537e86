# C-level API of AEZ v5 (aez_impl.h) for other Cython modules: `from katzenpost._core.aez
# cimport aez_ctx, aez_setup, aez_encrypt, aez_decrypt`. Declarations only; the extension
# that cimports them must list aez_impl.c in setup.py C_HELPERS.
from libc.stdint cimport uint8_t, uint64_t

cdef extern from "aez_impl.h" nogil:
    enum:
        AEZ_BLOCK_LEN
        AEZ_RAW_KEY_LEN
        AEZ_OK
        AEZ_AUTH_FAIL
        AEZ_NO_MEMORY
        AEZ_STACK_MAX
        AEZ_BACKEND_AUTO
        AEZ_BACKEND_PORTABLE
        AEZ_BACKEND_AESNI

    ctypedef struct aez_ctx:
        uint8_t I[16]
        uint8_t J[16]
        uint8_t L[16]

    void aez_setup(aez_ctx *ctx, const uint8_t *key, size_t key_len)
    void aez_encrypt(const aez_ctx *ctx, const uint8_t *nonce, size_t nonce_len,
                     const uint8_t *const *ad, const size_t *ad_len, size_t n_ad,
                     size_t tau, const uint8_t *msg, size_t msg_len, uint8_t *out)
    int aez_decrypt(const aez_ctx *ctx, const uint8_t *nonce, size_t nonce_len,
                    const uint8_t *const *ad, const size_t *ad_len, size_t n_ad,
                    size_t tau, const uint8_t *ct, size_t ct_len, uint8_t *out)
    int aez_hw_accelerated()
    void aez_wipe(aez_ctx *ctx)

    void aez_hash(const aez_ctx *ctx, uint64_t tau_bits, const uint8_t *const *strings,
                  const size_t *lens, size_t n_strings, uint8_t *delta)
    void aez_prf(const aez_ctx *ctx, const uint8_t *delta, uint8_t *out, size_t out_len)
    void aez_encipher(const aez_ctx *ctx, const uint8_t *delta, const uint8_t *inp,
                      size_t length, uint8_t *out)
    void aez_decipher(const aez_ctx *ctx, const uint8_t *delta, const uint8_t *inp,
                      size_t length, uint8_t *out)
    void aez_blake2b(const uint8_t *inp, size_t in_len, uint8_t *out, size_t out_len)

    int aez_set_backend(int backend)
    int aez_backend()
    int aez_cpu_has_aesni()
