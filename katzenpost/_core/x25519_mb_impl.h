/* Eight-lane X25519 from Intel's multi-buffer crypto library (libcrypto_mb, PyPI package
 * ipp-crypto): mbx_x25519_mb8 computes eight independent scalar multiplications in the
 * lanes of one AVX-512 IFMA pass. The library is loaded at run time (dlopen), never linked:
 * machines without it, or without the CPU feature, use the scalar backends. */
#ifndef KATZENPOST_X25519_MB_IMPL_H
#define KATZENPOST_X25519_MB_IMPL_H

#include <stddef.h>
#include <stdint.h>

#define XMB_LANES 8

/* Why xmb_load refused the library (0 = loaded and self-tested). */
#define XMB_OK 0
#define XMB_NO_CPU_FEATURE 1 /* the CPU (or the OS, for the AVX-512 state) lacks IFMA */
#define XMB_NOT_FOUND 2      /* libcrypto_mb or one of its runtime libraries does not load */
#define XMB_NO_SYMBOL 3      /* loaded, but without mbx_x25519_mb8 */
#define XMB_SELF_TEST 4      /* known-answer self-test failed: never used */

/* 1 if the CPU reports AVX-512F and AVX-512 IFMA and the OS saves the AVX-512 registers. */
int xmb_cpu_has_ifma(void);

/* Loads the runtime libraries (full paths, in order: each may be needed by the next, and
 * libcrypto_mb finds them by soname once they are loaded), then `library` (a path or a
 * soname for the standard search), and runs the known-answer self-test. Idempotent once it
 * succeeded; not thread-safe (call it from module import). Returns an XMB_* code. */
int xmb_load(const char *library, const char *const *runtime, size_t n_runtime);

/* What xmb_load would return for these files, without keeping anything loaded or changing
 * the backend in use (tests of the loader). */
int xmb_probe(const char *library, const char *const *runtime, size_t n_runtime);

/* 1 once xmb_load succeeded. */
int xmb_loaded(void);

/* out[i] = X25519(scalar[i], point[i]) for every lane whose three pointers are non-NULL (the
 * other lanes are skipped: no dummy data). A low-order point gives the all-zero secret as
 * Go's ScalarMult does. Returns 0, or -1 if the library flagged a lane for another reason
 * (never expected; those lanes' outputs are zeroed). Requires xmb_loaded(). */
int xmb_x25519_mb8(uint8_t *const out[XMB_LANES], const uint8_t *const scalar[XMB_LANES],
                   const uint8_t *const point[XMB_LANES]);

#endif /* KATZENPOST_X25519_MB_IMPL_H */
