/* AEZ v5 (Hoang, Krovetz, Rogaway) in C: the whole algorithm, byte-compatible with
 * Yawning/aez @ ec7426b as used by Katzenpost Sphinx (the Sphinx Packet Format Specification).
 * Pure functions on caller buffers: no I/O, no allocation on the Sphinx sizes, no global
 * state besides the one-time choice of the AES-round backend (AES-NI or bitsliced). */
#ifndef KATZENPOST_AEZ_IMPL_H
#define KATZENPOST_AEZ_IMPL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AEZ_BLOCK_LEN 16
#define AEZ_RAW_KEY_LEN 48     /* a key of this length is used raw (no BLAKE2b) */

/* Return codes of aez_decrypt. */
#define AEZ_OK 0
#define AEZ_AUTH_FAIL (-1)     /* ciphertext does not authenticate (or is shorter than tau) */
#define AEZ_NO_MEMORY (-2)     /* tau > 0 and a ciphertext above AEZ_STACK_MAX: malloc failed */

/* Largest ciphertext decrypted with tau > 0 on the stack; larger ones use malloc. */
#define AEZ_STACK_MAX 4096

/* Backends of aez_set_backend / aez_backend. */
#define AEZ_BACKEND_AUTO 0
#define AEZ_BACKEND_PORTABLE 1
#define AEZ_BACKEND_AESNI 2

/* Expanded key. Plain data: may live on the stack, be copied, be shared read-only between
 * threads. Fields are private to aez_impl.c. */
typedef struct aez_ctx {
    _Alignas(16) uint8_t I[16];
    _Alignas(16) uint8_t J[16];
    _Alignas(16) uint8_t L[16];
    _Alignas(16) uint8_t L_mult[8][16];   /* k * L in GF(2^128), k = 0..7 */
    uint64_t bs_keys[3][8];               /* I, J, L bitsliced (portable backend only) */
    int bs_ready;                         /* bs_keys filled in by aez_setup */
} aez_ctx;

/* Key setup (AEZ Extract): a 48-byte key is split raw into I, J, L; any other length
 * (0 included) goes through unkeyed BLAKE2b-384 first. */
void aez_setup(aez_ctx *ctx, const uint8_t *key, size_t key_len);

/* Encrypt msg (msg_len bytes, any length) with a nonce of any length, n_ad associated-data
 * strings (ad[k] of ad_len[k] bytes; ad/ad_len may be NULL when n_ad == 0) and tau bytes of
 * authenticator. Writes msg_len + tau bytes to out. out may equal or overlap msg (in place;
 * the buffer must then hold msg_len + tau bytes). Never fails. */
void aez_encrypt(const aez_ctx *ctx, const uint8_t *nonce, size_t nonce_len,
                 const uint8_t *const *ad, const size_t *ad_len, size_t n_ad,
                 size_t tau, const uint8_t *msg, size_t msg_len, uint8_t *out);

/* Decrypt ct (ct_len bytes); on success writes ct_len - tau bytes to out and returns AEZ_OK.
 * Returns AEZ_AUTH_FAIL if ct_len < tau or the tag does not verify (out is then not
 * written), AEZ_NO_MEMORY only if tau > 0, ct_len > AEZ_STACK_MAX and malloc failed.
 * out may equal or overlap ct (in place). With tau == 0 it never fails and never allocates. */
int aez_decrypt(const aez_ctx *ctx, const uint8_t *nonce, size_t nonce_len,
                const uint8_t *const *ad, const size_t *ad_len, size_t n_ad,
                size_t tau, const uint8_t *ct, size_t ct_len, uint8_t *out);

/* Zeroes an expanded key (a memset the compiler may not drop). */
void aez_wipe(aez_ctx *ctx);

/* 1 if the AES-NI backend is in use, 0 for the portable (bitsliced, constant-time) one. */
int aez_hw_accelerated(void);

/* Lower-level pieces (vector tests, callers with a precomputed delta). */

/* AEZ-hash: delta = H(tau_bits; strings[0], ..., strings[n-1]); strings[0] is the nonce. */
void aez_hash(const aez_ctx *ctx, uint64_t tau_bits, const uint8_t *const *strings,
              const size_t *lens, size_t n_strings, uint8_t delta[16]);

/* AEZ-prf: out_len bytes of E^{-1,3}(delta xor [k]_128), k = 0, 1, ... */
void aez_prf(const aez_ctx *ctx, const uint8_t delta[16], uint8_t *out, size_t out_len);

/* Encipher (d = 0) / decipher (d = 1) len bytes under delta; out may equal or overlap in. */
void aez_encipher(const aez_ctx *ctx, const uint8_t delta[16], const uint8_t *in, size_t len,
                  uint8_t *out);
void aez_decipher(const aez_ctx *ctx, const uint8_t delta[16], const uint8_t *in, size_t len,
                  uint8_t *out);

/* Unkeyed BLAKE2b with a digest of out_len (1..64) bytes. */
void aez_blake2b(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len);

/* Backend choice. aez_set_backend is for tests and benchmarks: it changes the process-wide
 * choice (of this extension module) and returns 0, or -1 if AES-NI is asked for on a CPU
 * without it. aez_backend returns AEZ_BACKEND_PORTABLE or AEZ_BACKEND_AESNI. */
int aez_set_backend(int backend);
int aez_backend(void);
int aez_cpu_has_aesni(void);

#ifdef __cplusplus
}
#endif

#endif /* KATZENPOST_AEZ_IMPL_H */
