/* AEZ v5 (the Sphinx Packet Format Specification): Extract (with a small BLAKE2b), AEZ-hash, AEZ-prf,
 * AEZ-core, AEZ-tiny and the Encrypt/Decrypt wrappers, over two AES-round backends:
 * AES-NI (function-level target attributes, so this file loads on any x86-64) and a
 * constant-time bitsliced round (no secret-indexed memory). Must not allocate on the
 * Sphinx path, keep state outside the caller's aez_ctx, or touch Python. */
#include "aez_impl.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define AEZ_HAVE_X86 1
#include <cpuid.h>
#include <immintrin.h>
#define AEZ_NI_TARGET __attribute__((target("aes,sse4.1,ssse3")))
#else
#define AEZ_HAVE_X86 0
#endif

typedef uint8_t blk[16];

/* A bit plane of the portable backend: two 64-bit lanes (GCC/Clang vector extension). */
typedef uint64_t bsw __attribute__((vector_size(16)));

/* The AES work is done in batches of up to this many independent blocks: it fills the
 * AES-NI pipeline and the 4-block bitsliced lanes. */
#define BATCH 8

/* ------------------------------------------------------------------------------------ */
/* Block helpers (GF(2^128) with big-endian blocks).                                    */

static inline void xor16(uint8_t *r, const uint8_t *a, const uint8_t *b)
{
    uint64_t a0, a1, b0, b1;
    memcpy(&a0, a, 8); memcpy(&a1, a + 8, 8);
    memcpy(&b0, b, 8); memcpy(&b1, b + 8, 8);
    a0 ^= b0; a1 ^= b1;
    memcpy(r, &a0, 8); memcpy(r + 8, &a1, 8);
}

static inline void xor16_3(uint8_t *r, const uint8_t *a, const uint8_t *b, const uint8_t *c)
{
    xor16(r, a, b);
    xor16(r, r, c);
}

static inline uint64_t load_be64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline void store_be64(uint8_t *p, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, 8);
}

static inline void dbl(uint8_t r[16], const uint8_t x[16])
{
    /* The top bit folds back as 0x87 (x^128 = x^7 + x^2 + x + 1); branch-free. */
    uint64_t hi = load_be64(x), lo = load_be64(x + 8);
    uint64_t carry = 0u - (hi >> 63);
    store_be64(r, (hi << 1) | (lo >> 63));
    store_be64(r + 8, (lo << 1) ^ (carry & 0x87));
}

/* r = k * x for a small public k (double-and-add). */
static void mul_small(uint8_t r[16], size_t k, const uint8_t x[16])
{
    blk acc = {0};
    if (k != 0) {
        for (int bit = 63 - __builtin_clzll((unsigned long long)k); bit >= 0; bit--) {
            dbl(acc, acc);
            if ((k >> bit) & 1)
                xor16(acc, acc, x);
        }
    }
    memcpy(r, acc, 16);
}

/* pad(Z) for |Z| < 16: Z || 0x80 || 0* */
static void pad_block(uint8_t r[16], const uint8_t *z, size_t len)
{
    memset(r, 0, 16);
    if (len > 0)
        memcpy(r, z, len);
    r[len] = 0x80;
}

/* ------------------------------------------------------------------------------------ */
/* Backend selection.                                                                   */

struct aez_run;
typedef void (*aes_batch_fn)(const struct aez_run *run, blk *blocks, size_t n);

typedef struct aez_run {
    const aez_ctx *ctx;
    aes_batch_fn aes4;      /* 4 rounds, keys J, I, L, 0 */
    aes_batch_fn aes10;     /* 10 rounds, keys I, J, L, I, J, L, I, J, L, I */
    const bsw (*bs)[8];     /* portable backend: I, J, L as bit planes */
    bsw bs_keys[3][8];
} aez_run;

static int g_backend = -1; /* resolved lazily; races resolve to the same value */

int aez_cpu_has_aesni(void)
{
#if AEZ_HAVE_X86
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    return (c & bit_AES) && (c & bit_SSE4_1) && (c & bit_SSSE3);
#else
    return 0;
#endif
}

int aez_backend(void)
{
    int backend = __atomic_load_n(&g_backend, __ATOMIC_RELAXED);
    if (backend < 0) {
        backend = aez_cpu_has_aesni() ? AEZ_BACKEND_AESNI : AEZ_BACKEND_PORTABLE;
        __atomic_store_n(&g_backend, backend, __ATOMIC_RELAXED);
    }
    return backend;
}

int aez_set_backend(int backend)
{
    if (backend == AEZ_BACKEND_AUTO) {
        __atomic_store_n(&g_backend, -1, __ATOMIC_RELAXED);
        aez_backend();
        return 0;
    }
    if (backend == AEZ_BACKEND_AESNI && !aez_cpu_has_aesni())
        return -1;
    if (backend != AEZ_BACKEND_AESNI && backend != AEZ_BACKEND_PORTABLE)
        return -1;
    __atomic_store_n(&g_backend, backend, __ATOMIC_RELAXED);
    return 0;
}

int aez_hw_accelerated(void)
{
    return aez_backend() == AEZ_BACKEND_AESNI;
}

/* ------------------------------------------------------------------------------------ */
/* AES-NI backend.                                                                      */

#if AEZ_HAVE_X86
/* One lane count per instantiation so the compiler keeps every state in a register. */
#define NI_AES4_LANES(LANES)                                                            \
    do {                                                                                \
        __m128i s[LANES];                                                               \
        for (int t = 0; t < (LANES); t++)                                               \
            s[t] = _mm_loadu_si128((const __m128i *)blocks[k + t]);                     \
        for (int t = 0; t < (LANES); t++) s[t] = _mm_aesenc_si128(s[t], kj);            \
        for (int t = 0; t < (LANES); t++) s[t] = _mm_aesenc_si128(s[t], ki);            \
        for (int t = 0; t < (LANES); t++) s[t] = _mm_aesenc_si128(s[t], kl);            \
        for (int t = 0; t < (LANES); t++) s[t] = _mm_aesenc_si128(s[t], zero);          \
        for (int t = 0; t < (LANES); t++)                                               \
            _mm_storeu_si128((__m128i *)blocks[k + t], s[t]);                           \
    } while (0)

AEZ_NI_TARGET static void ni_aes4(const aez_run *run, blk *blocks, size_t n)
{
    const __m128i ki = _mm_loadu_si128((const __m128i *)run->ctx->I);
    const __m128i kj = _mm_loadu_si128((const __m128i *)run->ctx->J);
    const __m128i kl = _mm_loadu_si128((const __m128i *)run->ctx->L);
    const __m128i zero = _mm_setzero_si128();
    size_t k = 0;
    for (; k + 8 <= n; k += 8)
        NI_AES4_LANES(8);
    for (; k + 4 <= n; k += 4)
        NI_AES4_LANES(4);
    for (; k < n; k++)
        NI_AES4_LANES(1);
}

#define NI_AES10_LANES(LANES)                                                           \
    do {                                                                                \
        __m128i s[LANES];                                                               \
        for (int t = 0; t < (LANES); t++)                                               \
            s[t] = _mm_loadu_si128((const __m128i *)blocks[k + t]);                     \
        for (int round = 0; round < 3; round++) {                                       \
            for (int t = 0; t < (LANES); t++) s[t] = _mm_aesenc_si128(s[t], ki);        \
            for (int t = 0; t < (LANES); t++) s[t] = _mm_aesenc_si128(s[t], kj);        \
            for (int t = 0; t < (LANES); t++) s[t] = _mm_aesenc_si128(s[t], kl);        \
        }                                                                               \
        for (int t = 0; t < (LANES); t++) s[t] = _mm_aesenc_si128(s[t], ki);            \
        for (int t = 0; t < (LANES); t++)                                               \
            _mm_storeu_si128((__m128i *)blocks[k + t], s[t]);                           \
    } while (0)

AEZ_NI_TARGET static void ni_aes10(const aez_run *run, blk *blocks, size_t n)
{
    const __m128i ki = _mm_loadu_si128((const __m128i *)run->ctx->I);
    const __m128i kj = _mm_loadu_si128((const __m128i *)run->ctx->J);
    const __m128i kl = _mm_loadu_si128((const __m128i *)run->ctx->L);
    size_t k = 0;
    for (; k + 4 <= n; k += 4)
        NI_AES10_LANES(4);
    for (; k < n; k++)
        NI_AES10_LANES(1);
}
#endif

/* ------------------------------------------------------------------------------------ */
/* Portable backend: a bitsliced AES round over 8 blocks at once.                        */
/* A bit plane is two 64-bit lanes (GCC/Clang vector extension: SSE2 on x86-64, plain     */
/* integer code elsewhere), each lane one group of 4 blocks. In a lane, q[b] bit p holds  */
/* bit b of byte p of the group (byte p = 16*block + 4*col + row), so SubBytes is Boolean */
/* logic on the 8 planes and ShiftRows/MixColumns are fixed bit moves: no memory access   */
/* or branch depends on secret data.                                                      */

/* Exchanges the bits of b under mask with the bits of a under mask << shift. */
static inline void swap_bits(bsw *a, bsw *b, uint64_t mask, int shift)
{
    bsw t = ((*a >> shift) ^ *b) & mask;
    *b ^= t;
    *a ^= t << shift;
}

static inline bsw transpose8x8(bsw x)
{
    bsw t;
    t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAULL;  x ^= t ^ (t << 7);
    t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCULL; x ^= t ^ (t << 14);
    t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0ULL; x ^= t ^ (t << 28);
    return x;
}

static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--)
        v = (v << 8) | p[k];
    return v;
}

static inline void store_le64(uint8_t *p, uint64_t v)
{
    for (int k = 0; k < 8; k++) {
        p[k] = (uint8_t)v;
        v >>= 8;
    }
}

/* The word index (which 8 bytes) and the bit-in-byte index trade places, then each word's
 * 8x8 (byte, word) matrix is transposed, giving bit p of plane b = bit b of byte p. */
static void bs_swap_index_bits(bsw q[8])
{
    for (int k = 0; k < 8; k += 2)
        swap_bits(&q[k], &q[k + 1], 0x5555555555555555ULL, 1);
    for (int k = 0; k < 8; k++)
        if (!(k & 2))
            swap_bits(&q[k], &q[k + 2], 0x3333333333333333ULL, 2);
    for (int k = 0; k < 4; k++)
        swap_bits(&q[k], &q[k + 4], 0x0F0F0F0F0F0F0F0FULL, 4);
}

/* 128 bytes (8 blocks) -> 8 planes; lane 0 holds bytes 0..63, lane 1 bytes 64..127. */
static void bs_pack(bsw q[8], const uint8_t in[128])
{
    for (int k = 0; k < 8; k++) {
        bsw w = {load_le64(in + 8 * k), load_le64(in + 64 + 8 * k)};
        q[k] = w;
    }
    bs_swap_index_bits(q);
    for (int k = 0; k < 8; k++)
        q[k] = transpose8x8(q[k]);
}

static void bs_unpack(uint8_t out[128], const bsw q_in[8])
{
    bsw q[8];
    for (int k = 0; k < 8; k++)
        q[k] = transpose8x8(q_in[k]);
    bs_swap_index_bits(q);
    for (int k = 0; k < 8; k++) {
        store_le64(out + 8 * k, q[k][0]);
        store_le64(out + 64 + 8 * k, q[k][1]);
    }
}

/* SubBytes through the tower field GF((2^4)^2): GF(16) = GF(2)[z]/(z^4 + z + 1) and
 * GF(256) = GF(16)[y]/(y^2 + y + 8). The AES field maps into it linearly (x -> 0x20, a root
 * of the AES polynomial there), where a1 y + a0 has inverse (a1 y + a0 + a1) / d with
 * d = 8 a1^2 + a0 a1 + a0^2 in GF(16); the way back is merged with the affine map. All
 * matrices were derived offline and the whole circuit is checked on all 256 inputs by the
 * tests (through the vectors and the differential tests). */

/* r = a * b in GF(16), bitsliced (a[i] is the z^i coefficient plane). */
static inline void gf16_mul(bsw r[4], const bsw a[4], const bsw b[4])
{
    bsw c0 = a[0] & b[0];
    bsw c1 = (a[0] & b[1]) ^ (a[1] & b[0]);
    bsw c2 = (a[0] & b[2]) ^ (a[1] & b[1]) ^ (a[2] & b[0]);
    bsw c3 = (a[0] & b[3]) ^ (a[1] & b[2]) ^ (a[2] & b[1]) ^ (a[3] & b[0]);
    bsw c4 = (a[1] & b[3]) ^ (a[2] & b[2]) ^ (a[3] & b[1]);
    bsw c5 = (a[2] & b[3]) ^ (a[3] & b[2]);
    bsw c6 = a[3] & b[3];
    /* z^4 = z + 1, z^5 = z^2 + z, z^6 = z^3 + z^2 */
    r[0] = c0 ^ c4;
    r[1] = c1 ^ c4 ^ c5;
    r[2] = c2 ^ c5 ^ c6;
    r[3] = c3 ^ c6;
}

static inline void gf16_sqr(bsw r[4], const bsw a[4])
{
    r[0] = a[0] ^ a[2];
    r[1] = a[2];
    r[2] = a[1] ^ a[3];
    r[3] = a[3];
}

static void bs_sub_bytes(bsw q[8])
{
    bsw t[8], p[4], d[4], d2[4], d4[4], d8[4], d6[4], d_inv[4], sum[4], u[8];
    /* Into the tower basis: t[0..3] = a0, t[4..7] = a1. */
    t[0] = q[0] ^ q[5] ^ q[7];
    t[1] = q[2];
    t[2] = q[2] ^ q[3] ^ q[4] ^ q[5] ^ q[6] ^ q[7];
    t[3] = q[3] ^ q[4];
    t[4] = q[4] ^ q[5] ^ q[6];
    t[5] = q[1] ^ q[4] ^ q[6] ^ q[7];
    t[6] = q[2] ^ q[3] ^ q[5] ^ q[7];
    t[7] = q[5] ^ q[7];
    /* d = 8 a1^2 + a0^2 (linear) + a0 a1 */
    gf16_mul(p, t, t + 4);
    d[0] = t[0] ^ t[2] ^ t[6] ^ p[0];
    d[1] = t[2] ^ t[5] ^ t[6] ^ t[7] ^ p[1];
    d[2] = t[1] ^ t[3] ^ t[5] ^ p[2];
    d[3] = t[3] ^ t[4] ^ t[6] ^ t[7] ^ p[3];
    /* d^-1 = d^14 = d^2 d^4 d^8 (0 -> 0) */
    gf16_sqr(d2, d);
    gf16_sqr(d4, d2);
    gf16_sqr(d8, d4);
    gf16_mul(d6, d2, d4);
    gf16_mul(d_inv, d6, d8);
    /* inverse = a1 d^-1 y + (a0 + a1) d^-1 */
    for (int k = 0; k < 4; k++)
        sum[k] = t[k] ^ t[k + 4];
    gf16_mul(u, sum, d_inv);
    gf16_mul(u + 4, t + 4, d_inv);
    /* Back to the AES basis and the affine map, then + 0x63. */
    q[0] = ~(u[0] ^ u[2] ^ u[6]);
    q[1] = ~(u[0] ^ u[1] ^ u[2] ^ u[3] ^ u[4] ^ u[5]);
    q[2] = u[0] ^ u[3] ^ u[5] ^ u[6];
    q[3] = u[0] ^ u[2] ^ u[5];
    q[4] = u[0] ^ u[1] ^ u[3] ^ u[4] ^ u[5];
    q[5] = ~(u[1] ^ u[2] ^ u[3] ^ u[5] ^ u[6] ^ u[7]);
    q[6] = ~(u[4] ^ u[6] ^ u[7]);
    q[7] = u[1] ^ u[2];
}

/* Row r of every block rotates left by r columns: new byte 4c+r = old byte 4((c+r)%4)+r,
 * i.e. a right rotation by 4r bits inside each 16-bit (one block) field. */
static inline bsw shift_rows_plane(bsw x)
{
    bsw r0 = x & 0x1111111111111111ULL;
    bsw r1 = x & 0x2222222222222222ULL;
    bsw r2 = x & 0x4444444444444444ULL;
    bsw r3 = x & 0x8888888888888888ULL;
    r1 = ((r1 >> 4) & 0x0FFF0FFF0FFF0FFFULL) | ((r1 << 12) & 0xF000F000F000F000ULL);
    r2 = ((r2 >> 8) & 0x00FF00FF00FF00FFULL) | ((r2 << 8) & 0xFF00FF00FF00FF00ULL);
    r3 = ((r3 >> 12) & 0x000F000F000F000FULL) | ((r3 << 4) & 0xFFF0FFF0FFF0FFF0ULL);
    return r0 | r1 | r2 | r3;
}

/* Inside each column (a nibble of the plane), new row r takes old row r+k (mod 4). */
static inline bsw rot_rows1(bsw x)
{
    return ((x >> 1) & 0x7777777777777777ULL) | ((x << 3) & 0x8888888888888888ULL);
}
static inline bsw rot_rows2(bsw x)
{
    return ((x >> 2) & 0x3333333333333333ULL) | ((x << 2) & 0xCCCCCCCCCCCCCCCCULL);
}

/* out_r = 2 a_r + 3 a_{r+1} + a_{r+2} + a_{r+3} = 2 (a_r + a_{r+1}) + a_{r+1} + a_{r+2} + a_{r+3} */
static void bs_mix_columns(bsw q[8])
{
    bsw t[8], rest[8];
    for (int b = 0; b < 8; b++) {
        bsw a1 = rot_rows1(q[b]);
        bsw a23 = rot_rows2(q[b] ^ a1);    /* a_{r+2} + a_{r+3} */
        t[b] = q[b] ^ a1;
        rest[b] = a1 ^ a23;
    }
    /* xtime on the bitsliced t: multiply by x modulo 0x11B. */
    q[0] = t[7] ^ rest[0];
    q[1] = t[0] ^ t[7] ^ rest[1];
    q[2] = t[1] ^ rest[2];
    q[3] = t[2] ^ t[7] ^ rest[3];
    q[4] = t[3] ^ t[7] ^ rest[4];
    q[5] = t[4] ^ rest[5];
    q[6] = t[5] ^ rest[6];
    q[7] = t[6] ^ rest[7];
}

static inline void bs_round(bsw q[8], const bsw *key)
{
    bs_sub_bytes(q);
    for (int b = 0; b < 8; b++)
        q[b] = shift_rows_plane(q[b]);
    bs_mix_columns(q);
    if (key)
        for (int b = 0; b < 8; b++)
            q[b] ^= key[b];
}

/* The round key replicated over 4 blocks, as one 64-bit lane per plane. */
static void bs_key(uint64_t q[8], const uint8_t key[16])
{
    uint8_t eight[128];
    bsw planes[8];
    for (int k = 0; k < 8; k++)
        memcpy(eight + 16 * k, key, 16);
    bs_pack(planes, eight);
    for (int b = 0; b < 8; b++)
        q[b] = planes[b][0];
}

static void bs_keys_fill(uint64_t keys[3][8], const aez_ctx *ctx)
{
    bs_key(keys[0], ctx->I);
    bs_key(keys[1], ctx->J);
    bs_key(keys[2], ctx->L);
}

static void bs_batch(const aez_run *run, blk *blocks, size_t n, int ten_rounds)
{
    const bsw *ki = run->bs[0], *kj = run->bs[1], *kl = run->bs[2];
    for (size_t k = 0; k < n; k += 8) {
        size_t lanes = n - k < 8 ? n - k : 8;
        uint8_t group[128] = {0};
        bsw q[8];
        memcpy(group, blocks[k], 16 * lanes);
        bs_pack(q, group);
        if (ten_rounds) {
            for (int round = 0; round < 3; round++) {
                bs_round(q, ki);
                bs_round(q, kj);
                bs_round(q, kl);
            }
            bs_round(q, ki);
        } else {
            bs_round(q, kj);
            bs_round(q, ki);
            bs_round(q, kl);
            bs_round(q, NULL);
        }
        bs_unpack(group, q);
        memcpy(blocks[k], group, 16 * lanes);
    }
}

static void bs_aes4(const aez_run *run, blk *blocks, size_t n) { bs_batch(run, blocks, n, 0); }
static void bs_aes10(const aez_run *run, blk *blocks, size_t n) { bs_batch(run, blocks, n, 1); }

static void run_init(aez_run *run, const aez_ctx *ctx)
{
    run->ctx = ctx;
#if AEZ_HAVE_X86
    if (aez_backend() == AEZ_BACKEND_AESNI) {
        run->aes4 = ni_aes4;
        run->aes10 = ni_aes10;
        run->bs = NULL;
        return;
    }
#endif
    run->aes4 = bs_aes4;
    run->aes10 = bs_aes10;
    uint64_t fresh[3][8];
    const uint64_t (*keys)[8] = (const uint64_t (*)[8])ctx->bs_keys;
    if (!ctx->bs_ready) {       /* the backend was switched after aez_setup */
        bs_keys_fill(fresh, ctx);
        keys = (const uint64_t (*)[8])fresh;
    }
    for (int k = 0; k < 3; k++)
        for (int b = 0; b < 8; b++)
            run->bs_keys[k][b] = (bsw){keys[k][b], keys[k][b]};
    run->bs = (const bsw (*)[8])run->bs_keys;
}

/* memset through a volatile pointer so that wiping a buffer about to die is not elided. */
static void *(*const volatile wipe_memset)(void *, int, size_t) = memset;

void aez_wipe(aez_ctx *ctx)
{
    wipe_memset(ctx, 0, sizeof *ctx);
}

/* The portable backend copies the key planes into the run: wipe them when done. */
static void run_done(aez_run *run)
{
    if (run->bs != NULL)
        wipe_memset(run->bs_keys, 0, sizeof run->bs_keys);
}

/* ------------------------------------------------------------------------------------ */
/* BLAKE2b (RFC 7693), unkeyed, for Extract on keys that are not 48 bytes.              */

static const uint64_t blake2b_iv[8] = {
    0x6A09E667F3BCC908ULL, 0xBB67AE8584CAA73BULL, 0x3C6EF372FE94F82BULL,
    0xA54FF53A5F1D36F1ULL, 0x510E527FADE682D1ULL, 0x9B05688C2B3E6C1FULL,
    0x1F83D9ABFB41BD6BULL, 0x5BE0CD19137E2179ULL,
};

static const uint8_t blake2b_sigma[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

static inline uint64_t rotr64(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

static void blake2b_compress(uint64_t h[8], const uint8_t block[128], uint64_t counter,
                             int last)
{
    uint64_t m[16], v[16];
    for (int k = 0; k < 16; k++)
        m[k] = load_le64(block + 8 * k);
    for (int k = 0; k < 8; k++) {
        v[k] = h[k];
        v[k + 8] = blake2b_iv[k];
    }
    v[12] ^= counter;           /* inputs here stay far below 2^64 bytes */
    if (last)
        v[14] = ~v[14];
#define B2_G(a, b, c, d, x, y)                                                          \
    do {                                                                                \
        v[a] = v[a] + v[b] + (x); v[d] = rotr64(v[d] ^ v[a], 32);                       \
        v[c] = v[c] + v[d];       v[b] = rotr64(v[b] ^ v[c], 24);                       \
        v[a] = v[a] + v[b] + (y); v[d] = rotr64(v[d] ^ v[a], 16);                       \
        v[c] = v[c] + v[d];       v[b] = rotr64(v[b] ^ v[c], 63);                       \
    } while (0)
    for (int round = 0; round < 12; round++) {
        const uint8_t *s = blake2b_sigma[round];
        B2_G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        B2_G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        B2_G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        B2_G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        B2_G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        B2_G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        B2_G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        B2_G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
#undef B2_G
    for (int k = 0; k < 8; k++)
        h[k] ^= v[k] ^ v[k + 8];
}

void aez_blake2b(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len)
{
    uint64_t h[8];
    uint8_t block[128];
    uint8_t digest[64];
    if (out_len < 1 || out_len > 64)
        return;
    memcpy(h, blake2b_iv, sizeof h);
    h[0] ^= 0x01010000ULL ^ (uint64_t)out_len;
    size_t done = 0;
    while (in_len - done > 128) {
        blake2b_compress(h, in + done, (uint64_t)(done + 128), 0);
        done += 128;
    }
    memset(block, 0, sizeof block);
    if (in_len > done)
        memcpy(block, in + done, in_len - done);
    blake2b_compress(h, block, (uint64_t)in_len, 1);
    for (int k = 0; k < 8; k++)
        store_le64(digest + 8 * k, h[k]);
    memcpy(out, digest, out_len);
    memset(block, 0, sizeof block);
    memset(digest, 0, sizeof digest);
}

/* ------------------------------------------------------------------------------------ */
/* Key setup.                                                                           */

void aez_setup(aez_ctx *ctx, const uint8_t *key, size_t key_len)
{
    uint8_t extracted[AEZ_RAW_KEY_LEN];
    memset(ctx, 0, sizeof *ctx);
    if (key_len == AEZ_RAW_KEY_LEN)
        memcpy(extracted, key, AEZ_RAW_KEY_LEN);
    else
        aez_blake2b(key, key_len, extracted, AEZ_RAW_KEY_LEN);
    memcpy(ctx->I, extracted, 16);
    memcpy(ctx->J, extracted + 16, 16);
    memcpy(ctx->L, extracted + 32, 16);
    memcpy(ctx->L_mult[1], ctx->L, 16);
    for (size_t k = 2; k < 8; k += 2) {
        dbl(ctx->L_mult[k], ctx->L_mult[k / 2]);
        xor16(ctx->L_mult[k + 1], ctx->L_mult[k], ctx->L);
    }
    if (aez_backend() == AEZ_BACKEND_PORTABLE) {
        bs_keys_fill(ctx->bs_keys, ctx);
        ctx->bs_ready = 1;
    }
    wipe_memset(extracted, 0, sizeof extracted);
}

/* ------------------------------------------------------------------------------------ */
/* The tweakable block cipher E^{j,i}.                                                  */

/* Offset j*J + 2^ceil(i/8) * I + (i mod 8) * L for j >= 0 and a small i. */
static void offset(const aez_ctx *ctx, size_t j, size_t i, uint8_t out[16])
{
    blk jj, ii;
    mul_small(jj, j, ctx->J);
    memcpy(ii, ctx->I, 16);
    for (size_t e = (i + 7) / 8; e > 0; e--)
        dbl(ii, ii);
    xor16_3(out, jj, ii, ctx->L_mult[i % 8]);
}

/* out = E^{j,i}(in) for j >= 0 (AES4) */
static void e_aes4(const aez_run *run, size_t j, size_t i, const uint8_t in[16],
                   uint8_t out[16])
{
    blk b[1];
    offset(run->ctx, j, i, b[0]);
    xor16(b[0], b[0], in);
    run->aes4(run, b, 1);
    memcpy(out, b[0], 16);
}

/* out = E^{-1,i}(in) (AES10), i in 0..7 */
static void e_aes10(const aez_run *run, size_t i, const uint8_t in[16], uint8_t out[16])
{
    blk b[1];
    xor16(b[0], in, run->ctx->L_mult[i]);
    run->aes10(run, b, 1);
    memcpy(out, b[0], 16);
}

/* ------------------------------------------------------------------------------------ */
/* AEZ-hash and AEZ-prf.                                                                */

static void hash_string(const aez_run *run, size_t j, const uint8_t *s, size_t len,
                        uint8_t delta[16])
{
    const aez_ctx *ctx = run->ctx;
    blk jj, ipow, batch[BATCH];
    size_t full = len / 16, filled = 0;
    mul_small(jj, j, ctx->J);
    memcpy(ipow, ctx->I, 16);
    for (size_t i = 1; i <= full; i++) {
        if (i % 8 == 1)
            dbl(ipow, ipow);
        xor16_3(batch[filled], jj, ipow, ctx->L_mult[i % 8]);
        xor16(batch[filled], batch[filled], s + 16 * (i - 1));
        if (++filled == BATCH || i == full) {
            run->aes4(run, batch, filled);
            for (size_t k = 0; k < filled; k++)
                xor16(delta, delta, batch[k]);
            filled = 0;
        }
    }
    if (len % 16 != 0 || len == 0) {
        pad_block(batch[0], len ? s + 16 * full : NULL, len % 16);
        xor16_3(batch[0], batch[0], jj, ctx->I);      /* E^{j,0}: offset j*J + I */
        run->aes4(run, batch, 1);
        xor16(delta, delta, batch[0]);
    }
}

static void hash_run(const aez_run *run, uint64_t tau_bits, const uint8_t *nonce,
                     size_t nonce_len, int have_nonce, const uint8_t *const *ad,
                     const size_t *ad_len, size_t n_ad, uint8_t delta[16])
{
    blk tau_block = {0};
    for (int k = 0; k < 8; k++)
        tau_block[15 - k] = (uint8_t)(tau_bits >> (8 * k));
    e_aes4(run, 3, 1, tau_block, delta);
    if (have_nonce)
        hash_string(run, 4, nonce, nonce_len, delta);
    for (size_t k = 0; k < n_ad; k++)
        hash_string(run, 5 + k, ad[k], ad_len[k], delta);
}

void aez_hash(const aez_ctx *ctx, uint64_t tau_bits, const uint8_t *const *strings,
              const size_t *lens, size_t n_strings, uint8_t delta[16])
{
    aez_run run;
    run_init(&run, ctx);
    if (n_strings == 0)
        hash_run(&run, tau_bits, NULL, 0, 0, NULL, NULL, 0, delta);
    else
        hash_run(&run, tau_bits, strings[0], lens[0], 1, strings + 1, lens + 1,
                 n_strings - 1, delta);
    run_done(&run);
}

/* Writes out_len prf bytes to out, or (out == NULL) ORs their difference from expect into
 * *diff without branching on it. */
static void prf_run(const aez_run *run, const uint8_t delta[16], uint8_t *out,
                    const uint8_t *expect, size_t out_len, uint8_t *diff)
{
    blk batch[BATCH];
    uint64_t counter = 0;
    size_t done = 0;
    while (done < out_len) {
        size_t n = 0;
        for (; n < BATCH && done + 16 * n < out_len; n++, counter++) {
            blk ctr = {0};
            for (int k = 0; k < 8; k++)
                ctr[15 - k] = (uint8_t)(counter >> (8 * k));
            xor16_3(batch[n], delta, ctr, run->ctx->L_mult[3]);
        }
        run->aes10(run, batch, n);
        for (size_t k = 0; k < n; k++) {
            size_t take = out_len - done < 16 ? out_len - done : 16;
            if (out == NULL) {
                for (size_t b = 0; b < take; b++)
                    *diff |= (uint8_t)(batch[k][b] ^ expect[done + b]);
            } else {
                memcpy(out + done, batch[k], take);
            }
            done += take;
        }
    }
}

void aez_prf(const aez_ctx *ctx, const uint8_t delta[16], uint8_t *out, size_t out_len)
{
    aez_run run;
    run_init(&run, ctx);
    prf_run(&run, delta, out, NULL, out_len, NULL);
    run_done(&run);
}

/* ------------------------------------------------------------------------------------ */
/* AEZ-core (|X| >= 32).                                                                */

static void core(const aez_run *run, const uint8_t delta[16], const uint8_t *in, size_t len,
                 uint8_t *out, int d)
{
    const aez_ctx *ctx = run->ctx;
    const size_t f = len % 32, m = (len - 32 - f) / 32;
    blk two_j, ipow, xs = {0}, ys = {0};
    blk tw1[BATCH], tw2[BATCH], t[BATCH], u[BATCH], w[BATCH], y[BATCH], z[BATCH];
    dbl(two_j, ctx->J);

    /* Pass 1: W_i = X_i + E^{1,i}(X'_i); V_i = X'_i + E^{0,0}(W_i); kept in out. */
    memcpy(ipow, ctx->I, 16);
    for (size_t i0 = 1; i0 <= m; i0 += BATCH) {
        size_t n = m - i0 + 1 < BATCH ? m - i0 + 1 : BATCH;
        for (size_t k = 0; k < n; k++) {
            size_t i = i0 + k;
            if (i % 8 == 1)
                dbl(ipow, ipow);
            xor16_3(tw1[k], ctx->J, ipow, ctx->L_mult[i % 8]);
            xor16(t[k], in + 32 * (i - 1) + 16, tw1[k]);
        }
        run->aes4(run, t, n);
        for (size_t k = 0; k < n; k++) {
            xor16(w[k], in + 32 * (i0 + k - 1), t[k]);
            xor16(u[k], w[k], ctx->I);
        }
        run->aes4(run, u, n);
        for (size_t k = 0; k < n; k++) {
            uint8_t *pair = out + 32 * (i0 + k - 1);
            blk v;
            xor16(v, in + 32 * (i0 + k - 1) + 16, u[k]);
            xor16(xs, xs, v);
            memcpy(pair, w[k], 16);
            memcpy(pair + 16, v, 16);
        }
    }

    /* The fragment and the last two blocks of the input, saved before out overwrites them. */
    const uint8_t *frag_in = in + 32 * m;
    uint8_t frag[32];
    blk x_x, x_y, s_x, s_y, s, e_pair[2];
    memcpy(frag, frag_in, f);
    memcpy(x_x, frag_in + f, 16);
    memcpy(x_y, frag_in + f + 16, 16);

    if (f > 0 && f < 16) {
        pad_block(e_pair[0], frag, f);
        e_aes4(run, 0, 4, e_pair[0], e_pair[0]);
        xor16(xs, xs, e_pair[0]);
    } else if (f >= 16) {
        blk off4, off5;
        offset(ctx, 0, 4, off4);
        offset(ctx, 0, 5, off5);
        xor16(e_pair[0], frag, off4);
        pad_block(e_pair[1], frag + 16, f - 16);
        xor16(e_pair[1], e_pair[1], off5);
        run->aes4(run, e_pair, 2);
        xor16_3(xs, xs, e_pair[0], e_pair[1]);
    }

    e_aes4(run, 0, 1 + d, x_y, s_x);
    xor16_3(s_x, s_x, x_x, delta);
    xor16(s_x, s_x, xs);
    e_aes10(run, 1 + d, s_x, s_y);
    xor16(s_y, s_y, x_y);
    xor16(s, s_x, s_y);

    /* Pass 2: S'_i = E^{2,i}(S); Y = W + S'; Z = V + S'; C' = Y + E^{0,0}(Z); C = Z + E^{1,i}(C'). */
    memcpy(ipow, ctx->I, 16);
    for (size_t i0 = 1; i0 <= m; i0 += BATCH) {
        size_t n = m - i0 + 1 < BATCH ? m - i0 + 1 : BATCH;
        for (size_t k = 0; k < n; k++) {
            size_t i = i0 + k;
            if (i % 8 == 1)
                dbl(ipow, ipow);
            xor16_3(tw1[k], ctx->J, ipow, ctx->L_mult[i % 8]);
            xor16_3(tw2[k], two_j, ipow, ctx->L_mult[i % 8]);
            xor16(t[k], s, tw2[k]);
        }
        run->aes4(run, t, n);
        for (size_t k = 0; k < n; k++) {
            const uint8_t *pair = out + 32 * (i0 + k - 1);
            xor16(y[k], pair, t[k]);
            xor16(z[k], pair + 16, t[k]);
            xor16(ys, ys, y[k]);
            xor16(u[k], z[k], ctx->I);
        }
        run->aes4(run, u, n);
        for (size_t k = 0; k < n; k++) {
            xor16(w[k], y[k], u[k]);            /* C'_i */
            xor16(t[k], w[k], tw1[k]);
        }
        run->aes4(run, t, n);
        for (size_t k = 0; k < n; k++) {
            uint8_t *pair = out + 32 * (i0 + k - 1);
            xor16(pair, z[k], t[k]);
            memcpy(pair + 16, w[k], 16);
        }
    }

    /* Fragment out. */
    uint8_t *frag_out = out + 32 * m;
    if (f > 0 && f < 16) {
        e_aes10(run, 4, s, e_pair[0]);
        for (size_t b = 0; b < f; b++)
            frag[b] ^= e_pair[0][b];
        pad_block(e_pair[0], frag, f);
        e_aes4(run, 0, 4, e_pair[0], e_pair[0]);
        xor16(ys, ys, e_pair[0]);
    } else if (f >= 16) {
        blk off4, off5;
        xor16(e_pair[0], s, ctx->L_mult[4]);
        xor16(e_pair[1], s, ctx->L_mult[5]);
        run->aes10(run, e_pair, 2);
        for (size_t b = 0; b < f; b++)
            frag[b] ^= b < 16 ? e_pair[0][b] : e_pair[1][b - 16];
        offset(ctx, 0, 4, off4);
        offset(ctx, 0, 5, off5);
        xor16(e_pair[0], frag, off4);
        pad_block(e_pair[1], frag + 16, f - 16);
        xor16(e_pair[1], e_pair[1], off5);
        run->aes4(run, e_pair, 2);
        xor16_3(ys, ys, e_pair[0], e_pair[1]);
    }

    /* C_y = S_x + E^{-1,2-d}(S_y); C_x = S_y + delta + Ys + E^{0,2-d}(C_y). */
    blk c_x, c_y;
    e_aes10(run, 2 - d, s_y, c_y);
    xor16(c_y, c_y, s_x);
    e_aes4(run, 0, 2 - d, c_y, c_x);
    xor16_3(c_x, c_x, s_y, delta);
    xor16(c_x, c_x, ys);
    memcpy(frag_out, frag, f);
    memcpy(frag_out + f, c_x, 16);
    memcpy(frag_out + f + 16, c_y, 16);
}

/* ------------------------------------------------------------------------------------ */
/* AEZ-tiny (1 <= |X| < 32).                                                            */

/* B = E^{0,3}(pad0(x) with top bit set, + delta); returns its top bit. */
static int tiny_top_bit(const aez_run *run, const uint8_t delta[16], const uint8_t *x,
                        size_t n)
{
    blk b = {0};
    memcpy(b, x, n);
    b[0] |= 0x80;
    xor16(b, b, delta);
    e_aes4(run, 0, 3, b, b);
    return b[0] >> 7;
}

static void tiny(const aez_run *run, const uint8_t delta[16], const uint8_t *in, size_t n,
                 uint8_t *out, int d)
{
    const size_t half_bits = 4 * n, half_bytes = (n + 1) / 2;
    const int rounds = n == 1 ? 24 : n == 2 ? 16 : n < 16 ? 10 : 8;
    const size_t tweak_i = n < 16 ? 7 : 6;
    uint8_t x[32] = {0};
    blk left = {0}, right = {0}, mask = {0}, offset_t;
    memcpy(x, in, n);

    if (d == 1 && n < 16)       /* branch-free: the bit is secret */
        x[0] ^= (uint8_t)(tiny_top_bit(run, delta, x, n) << 7);

    /* Split into halves of 4n bits each, left-aligned in 16-byte blocks. */
    memcpy(left, x, half_bytes);
    if (n % 2 == 0) {
        memcpy(right, x + n / 2, n / 2);
    } else {
        left[half_bytes - 1] &= 0xF0;
        for (size_t k = 0; k < half_bytes; k++)
            right[k] = (uint8_t)((x[n / 2 + k] << 4) | (x[n / 2 + k + 1] >> 4));
    }
    memset(mask, 0xFF, half_bits / 8);
    if (half_bits % 8)
        mask[half_bits / 8] = 0xF0;
    offset(run->ctx, 0, tweak_i, offset_t);

    for (int round = 0; round < rounds; round++) {
        uint8_t *src = round % 2 == 0 ? right : left;
        uint8_t *dst = round % 2 == 0 ? left : right;
        int c = d == 0 ? round : rounds - 1 - round;
        blk b[1];
        memcpy(b[0], src, 16);
        b[0][half_bits / 8] |= (uint8_t)(0x80 >> (half_bits % 8));
        b[0][15] ^= (uint8_t)c;
        xor16_3(b[0], b[0], delta, offset_t);
        run->aes4(run, b, 1);
        for (int k = 0; k < 16; k++)
            dst[k] ^= b[0][k] & mask[k];
    }

    /* Output R || L. */
    uint8_t y[32] = {0};
    if (n % 2 == 0) {
        memcpy(y, right, n / 2);
        memcpy(y + n / 2, left, n / 2);
    } else {
        memcpy(y, right, half_bytes);
        y[n / 2] = (uint8_t)((y[n / 2] & 0xF0) | (left[0] >> 4));
        for (size_t k = 0; k < n / 2; k++)
            y[n / 2 + 1 + k] = (uint8_t)((left[k] << 4) | (left[k + 1] >> 4));
    }
    if (d == 0 && n < 16)
        y[0] ^= (uint8_t)(tiny_top_bit(run, delta, y, n) << 7);
    memcpy(out, y, n);
    memset(x, 0, sizeof x);
    memset(y, 0, sizeof y);
}

static void cipher_run(const aez_run *run, const uint8_t delta[16], const uint8_t *in,
                       size_t len, uint8_t *out, int d)
{
    if (len == 0)
        return;
    /* core and tiny handle out == in or disjoint buffers; other overlaps go in place. */
    if (in != out && in < out + len && out < in + len) {
        memmove(out, in, len);
        in = out;
    }
    if (len < 32)
        tiny(run, delta, in, len, out, d);
    else
        core(run, delta, in, len, out, d);
}

void aez_encipher(const aez_ctx *ctx, const uint8_t delta[16], const uint8_t *in, size_t len,
                  uint8_t *out)
{
    aez_run run;
    run_init(&run, ctx);
    cipher_run(&run, delta, in, len, out, 0);
    run_done(&run);
}

void aez_decipher(const aez_ctx *ctx, const uint8_t delta[16], const uint8_t *in, size_t len,
                  uint8_t *out)
{
    aez_run run;
    run_init(&run, ctx);
    cipher_run(&run, delta, in, len, out, 1);
    run_done(&run);
}

/* ------------------------------------------------------------------------------------ */
/* Encrypt / Decrypt.                                                                   */

void aez_encrypt(const aez_ctx *ctx, const uint8_t *nonce, size_t nonce_len,
                 const uint8_t *const *ad, const size_t *ad_len, size_t n_ad,
                 size_t tau, const uint8_t *msg, size_t msg_len, uint8_t *out)
{
    aez_run run;
    blk delta;
    run_init(&run, ctx);
    hash_run(&run, (uint64_t)tau * 8, nonce, nonce_len, 1, ad, ad_len, n_ad, delta);
    if (msg_len == 0) {
        prf_run(&run, delta, out, NULL, tau, NULL);
    } else {
        if (out != msg)
            memmove(out, msg, msg_len);
        memset(out + msg_len, 0, tau);
        cipher_run(&run, delta, out, msg_len + tau, out, 0);
    }
    run_done(&run);
}

/* Decipher into a scratch buffer, check the tau zero bytes, copy out on success. Kept out
 * of aez_decrypt so that the tau == 0 (Sphinx) path does not reserve the stack buffer. */
__attribute__((noinline)) static int decrypt_checked(const aez_run *run,
                                                     const uint8_t delta[16], size_t tau,
                                                     const uint8_t *ct, size_t ct_len,
                                                     uint8_t *out)
{
    uint8_t stack_buf[AEZ_STACK_MAX];
    uint8_t *plain = ct_len <= AEZ_STACK_MAX ? stack_buf : malloc(ct_len);
    if (plain == NULL)
        return AEZ_NO_MEMORY;
    cipher_run(run, delta, ct, ct_len, plain, 1);
    uint8_t nonzero = 0;
    for (size_t k = ct_len - tau; k < ct_len; k++)
        nonzero |= plain[k];
    int rc = nonzero == 0 ? AEZ_OK : AEZ_AUTH_FAIL;
    if (rc == AEZ_OK)
        memmove(out, plain, ct_len - tau);
    wipe_memset(plain, 0, ct_len);
    if (plain != stack_buf)
        free(plain);
    return rc;
}

int aez_decrypt(const aez_ctx *ctx, const uint8_t *nonce, size_t nonce_len,
                const uint8_t *const *ad, const size_t *ad_len, size_t n_ad,
                size_t tau, const uint8_t *ct, size_t ct_len, uint8_t *out)
{
    aez_run run;
    blk delta;
    if (ct_len < tau)
        return AEZ_AUTH_FAIL;
    run_init(&run, ctx);
    hash_run(&run, (uint64_t)tau * 8, nonce, nonce_len, 1, ad, ad_len, n_ad, delta);
    int rc = AEZ_OK;
    if (ct_len == tau) {
        uint8_t diff = 0;
        prf_run(&run, delta, NULL, ct, tau, &diff);
        rc = diff == 0 ? AEZ_OK : AEZ_AUTH_FAIL;
    } else if (tau == 0) {
        cipher_run(&run, delta, ct, ct_len, out, 1);
    } else {
        rc = decrypt_checked(&run, delta, tau, ct, ct_len, out);
    }
    run_done(&run);
    return rc;
}
