/* Eight-lane X25519 through libcrypto_mb (see x25519_mb_impl.h). */
#include "x25519_mb_impl.h"

#include <cpuid.h>
#include <dlfcn.h>
#include <string.h>

/* mbx_status mbx_x25519_mb8(int8u *const out[8], const int8u *const scalar[8],
 *                           const int8u *const point[8]): 4 status bits per lane. */
typedef uint32_t (*mb8_fn)(uint8_t *const[XMB_LANES], const uint8_t *const[XMB_LANES],
                           const uint8_t *const[XMB_LANES]);
#define MBX_LANE_STATUS(st, lane) (((st) >> (4 * (lane))) & 0xf)
#define MBX_STATUS_LOW_ORDER 0x4 /* a low-order point: the library writes the all-zero secret */

static mb8_fn mb8;

int xmb_cpu_has_ifma(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE))
        return 0;
    /* XCR0: the OS saves SSE, AVX, opmask, ZMM0-15 upper halves and ZMM16-31 (bits 1,2,5,6,7);
     * without that the instructions fault even though CPUID lists them. */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0xe6) != 0xe6)
        return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    return (b & bit_AVX512F) && (b & bit_AVX512IFMA);
}

/* RFC 7748 section 5.2 (two vectors) and 6.1 (Alice's public key from the base point),
 * two low-order points, and a skipped lane whose output must stay untouched. */
static int lanes_x25519(mb8_fn fn, uint8_t *const out[XMB_LANES],
                        const uint8_t *const scalar[XMB_LANES], const uint8_t *const point[XMB_LANES]);

static int self_test(mb8_fn fn)
{
    static const uint8_t k1[32] = {
        0xa5, 0x46, 0xe3, 0x6b, 0xf0, 0x52, 0x7c, 0x9d, 0x3b, 0x16, 0x15, 0x4b, 0x82, 0x46, 0x5e, 0xdd,
        0x62, 0x14, 0x4c, 0x0a, 0xc1, 0xfc, 0x5a, 0x18, 0x50, 0x6a, 0x22, 0x44, 0xba, 0x44, 0x9a, 0xc4};
    static const uint8_t u1[32] = {
        0xe6, 0xdb, 0x68, 0x67, 0x58, 0x30, 0x30, 0xdb, 0x35, 0x94, 0xc1, 0xa4, 0x24, 0xb1, 0x5f, 0x7c,
        0x72, 0x66, 0x24, 0xec, 0x26, 0xb3, 0x35, 0x3b, 0x10, 0xa9, 0x03, 0xa6, 0xd0, 0xab, 0x1c, 0x4c};
    static const uint8_t r1[32] = {
        0xc3, 0xda, 0x55, 0x37, 0x9d, 0xe9, 0xc6, 0x90, 0x8e, 0x94, 0xea, 0x4d, 0xf2, 0x8d, 0x08, 0x4f,
        0x32, 0xec, 0xcf, 0x03, 0x49, 0x1c, 0x71, 0xf7, 0x54, 0xb4, 0x07, 0x55, 0x77, 0xa2, 0x85, 0x52};
    static const uint8_t k2[32] = {
        0x4b, 0x66, 0xe9, 0xd4, 0xd1, 0xb4, 0x67, 0x3c, 0x5a, 0xd2, 0x26, 0x91, 0x95, 0x7d, 0x6a, 0xf5,
        0xc1, 0x1b, 0x64, 0x21, 0xe0, 0xea, 0x01, 0xd4, 0x2c, 0xa4, 0x16, 0x9e, 0x79, 0x18, 0xba, 0x0d};
    static const uint8_t u2[32] = {
        0xe5, 0x21, 0x0f, 0x12, 0x78, 0x68, 0x11, 0xd3, 0xf4, 0xb7, 0x95, 0x9d, 0x05, 0x38, 0xae, 0x2c,
        0x31, 0xdb, 0xe7, 0x10, 0x6f, 0xc0, 0x3c, 0x3e, 0xfc, 0x4c, 0xd5, 0x49, 0xc7, 0x15, 0xa4, 0x93};
    static const uint8_t r2[32] = {
        0x95, 0xcb, 0xde, 0x94, 0x76, 0xe8, 0x90, 0x7d, 0x7a, 0xad, 0xe4, 0x5c, 0xb4, 0xb8, 0x73, 0xf8,
        0x8b, 0x59, 0x5a, 0x68, 0x79, 0x9f, 0xa1, 0x52, 0xe6, 0xf8, 0xf7, 0x64, 0x7a, 0xac, 0x79, 0x57};
    static const uint8_t alice[32] = {
        0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2, 0x66, 0x45,
        0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5, 0x1d, 0xb9, 0x2c, 0x2a};
    static const uint8_t alice_pub[32] = {
        0x85, 0x20, 0xf0, 0x09, 0x89, 0x30, 0xa7, 0x54, 0x74, 0x8b, 0x7d, 0xdc, 0xb4, 0x3e, 0xf7, 0x5a,
        0x0d, 0xbf, 0x3a, 0x0d, 0x26, 0x38, 0x1a, 0xf4, 0xeb, 0xa4, 0xa9, 0x8e, 0xaa, 0x9b, 0x4e, 0x6a};
    static const uint8_t base[32] = {9}, zero[32] = {0};
    static const uint8_t order8[32] = {
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a,
        0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00};
    const uint8_t *scalar[XMB_LANES] = {k1, k2, alice, k1, k2, k1, k2, alice};
    const uint8_t *point[XMB_LANES] = {u1, u2, base, zero, order8, u1, u2, base};
    const uint8_t *expect[XMB_LANES] = {r1, r2, alice_pub, zero, zero, NULL, r2, alice_pub};
    uint8_t out[XMB_LANES][32];
    uint8_t *outp[XMB_LANES];
    memset(out, 0xa5, sizeof out);
    for (int i = 0; i < XMB_LANES; i++)
        outp[i] = expect[i] != NULL ? out[i] : NULL; /* lane 5 is skipped */
    if (lanes_x25519(fn, outp, scalar, point) != 0)
        return -1;
    for (int i = 0; i < XMB_LANES; i++) {
        if (expect[i] != NULL && memcmp(out[i], expect[i], 32) != 0)
            return -1;
        if (expect[i] == NULL)
            for (int b = 0; b < 32; b++)
                if (out[i][b] != 0xa5)
                    return -1;
    }
    return 0;
}

/* mbx_x25519_mb8 of `library` after its runtime libraries, self-tested; XMB_OK with *fn and
 * *handle set (the library stays loaded), else the reason (the library is closed again; the
 * runtime libraries stay: they may already be in use by another copy). */
static int open_crypto_mb(const char *library, const char *const *runtime, size_t n_runtime,
                          mb8_fn *fn, void **handle)
{
    /* RTLD_LOCAL: once a runtime library is loaded, libcrypto_mb's NEEDED entry matches it by
     * soname and binds to it; nothing is added to the global symbol namespace. */
    for (size_t i = 0; i < n_runtime; i++)
        if (dlopen(runtime[i], RTLD_NOW | RTLD_LOCAL) == NULL)
            return XMB_NOT_FOUND;
    void *lib = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL)
        return XMB_NOT_FOUND;
    mb8_fn found = (mb8_fn)dlsym(lib, "mbx_x25519_mb8");
    int rc = found == NULL ? XMB_NO_SYMBOL : self_test(found) != 0 ? XMB_SELF_TEST : XMB_OK;
    if (rc != XMB_OK) {
        dlclose(lib);
        return rc;
    }
    *fn = found;
    *handle = lib;
    return XMB_OK;
}

int xmb_load(const char *library, const char *const *runtime, size_t n_runtime)
{
    void *handle = NULL; /* kept open for the life of the process, as libsodium's */
    if (mb8 != NULL)
        return XMB_OK;
    if (!xmb_cpu_has_ifma())
        return XMB_NO_CPU_FEATURE;
    return open_crypto_mb(library, runtime, n_runtime, &mb8, &handle);
}

int xmb_probe(const char *library, const char *const *runtime, size_t n_runtime)
{
    mb8_fn fn = NULL;
    void *handle = NULL;
    if (!xmb_cpu_has_ifma())
        return XMB_NO_CPU_FEATURE;
    int rc = open_crypto_mb(library, runtime, n_runtime, &fn, &handle);
    if (rc == XMB_OK)
        dlclose(handle);
    return rc;
}

int xmb_loaded(void) { return mb8 != NULL; }

int xmb_x25519_mb8(uint8_t *const out[XMB_LANES], const uint8_t *const scalar[XMB_LANES],
                   const uint8_t *const point[XMB_LANES])
{
    return lanes_x25519(mb8, out, scalar, point);
}

static int lanes_x25519(mb8_fn fn, uint8_t *const out[XMB_LANES],
                        const uint8_t *const scalar[XMB_LANES], const uint8_t *const point[XMB_LANES])
{
    const uint8_t *s[XMB_LANES], *p[XMB_LANES];
    uint8_t *o[XMB_LANES], tmp[XMB_LANES][32];
    int rc = 0;
    /* A lane runs only with all three pointers, so the library never sees a half-set lane;
     * results go through tmp so an output may alias its lane's point. */
    for (int i = 0; i < XMB_LANES; i++) {
        int on = out[i] != NULL && scalar[i] != NULL && point[i] != NULL;
        o[i] = on ? tmp[i] : NULL;
        s[i] = on ? scalar[i] : NULL;
        p[i] = on ? point[i] : NULL;
    }
    uint32_t status = fn(o, s, p);
    for (int i = 0; i < XMB_LANES; i++) {
        if (o[i] == NULL)
            continue;
        uint32_t lane = MBX_LANE_STATUS(status, i);
        /* Low order: the library has written zeros (what Go's ScalarMult returns); writing
         * them again keeps that behaviour independent of the library version. Whether a
         * point has low order is public (the packet's group element, or a path's public
         * key in creation), so this branch leaks nothing. */
        if (lane != 0) {
            memset(tmp[i], 0, 32);
            rc |= lane != MBX_STATUS_LOW_ORDER ? -1 : 0;
        }
        memcpy(out[i], tmp[i], 32);
    }
    /* Wipe what the shared secrets left on the stack (volatile: not a dead store). */
    volatile uint8_t *v = &tmp[0][0];
    for (size_t b = 0; b < sizeof tmp; b++)
        v[b] = 0;
    return rc;
}
