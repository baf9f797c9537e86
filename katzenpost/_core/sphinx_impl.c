/* Katzenpost Sphinx in C (see sphinx_impl.h). The primitives come from OpenSSL libcrypto
 * (EVP interfaces only); X25519 uses libsodium's crypto_scalarmult when the system library is
 * present (chosen by measurement: OpenSSL 3.0's EVP path costs a key object per call, see
 * bench/bench_sphinx.py), otherwise OpenSSL's EVP_PKEY_derive; batches run their X25519s eight
 * at a time through libcrypto_mb (x25519_mb_impl.c) when that backend is active. Per-thread
 * OpenSSL contexts are reused across calls; nothing else holds state between calls. */
#include "sphinx_impl.h"
#include "aez_impl.h"
#include "x25519_mb_impl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Constant-time test builds (tests/test_sphinx_constant_time.py, valgrind memcheck with the
 * secrets marked undefined) mark the values that are public by design as defined: the
 * protocol's behaviour reveals them anyway (whether a MAC matched, the routing commands the
 * node acts on). A no-op in normal builds. */
#ifdef SX_CTGRIND
#include <valgrind/memcheck.h>
#define SX_PUBLIC(ptr, len) VALGRIND_MAKE_MEM_DEFINED(ptr, len)
#else
#define SX_PUBLIC(ptr, len) ((void)0)
#endif

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

static const uint8_t KDF_INFO[] = "katzenpost-kdf-v0-hkdf-sha256";
#define KDF_INFO_LEN (sizeof(KDF_INFO) - 1)
#define SHA256_BLOCK 64

static EVP_MD *md_sha256;
static EVP_MD *md_sha512_256;
static EVP_CIPHER *cipher_aes128_ctr;

typedef int (*scalarmult_fn)(unsigned char *, const unsigned char *, const unsigned char *);
static scalarmult_fn sodium_scalarmult;
/* The active backend (what sx_x25519_backend reports) and the one-at-a-time X25519 under it:
 * with the lane backend, lone operations still go to the best scalar one. Both are read with
 * relaxed atomics from any thread. */
static int x25519_backend = SX_X25519_OPENSSL;
static int scalar_backend = SX_X25519_OPENSSL;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_status = -1;

/* OpenSSL contexts of one thread, allocated on its first use and freed when it exits: no
 * allocation per hash or per AES-CTR call. */
typedef struct {
    EVP_MD_CTX *md;                      /* SHA-256, SHA-512/256: reset after secret inputs */
    EVP_MD_CTX *hmac_inner, *hmac_outer; /* HKDF's keyed states, reset after each use */
    EVP_CIPHER_CTX *aes; /* AES-128-CTR fetched once; re-keyed per call, then with zeros */
} thread_ctx;
static pthread_key_t thread_ctx_key;

/* ---------------------------------------------------------------- setup */

/* Secrets (keys, shared secrets, HMAC pads, keystreams, routing information) are wiped with
 * OPENSSL_cleanse, which the compiler cannot drop as a dead store the way it may drop a
 * final memset. */
void sx_wipe(void *buf, size_t len) { OPENSSL_cleanse(buf, len); }

static void free_thread_ctx(void *p)
{
    thread_ctx *tc = p;
    EVP_MD_CTX_free(tc->md); /* the providers clear their state when freeing it */
    EVP_MD_CTX_free(tc->hmac_inner);
    EVP_MD_CTX_free(tc->hmac_outer);
    EVP_CIPHER_CTX_free(tc->aes);
    free(tc);
}

/* This thread's contexts, or NULL if they cannot be allocated (reported as SX_ERR_INTERNAL). */
static thread_ctx *get_thread_ctx(void)
{
    thread_ctx *tc = pthread_getspecific(thread_ctx_key);
    if (tc != NULL)
        return tc;
    tc = calloc(1, sizeof *tc);
    if (tc == NULL)
        return NULL;
    tc->md = EVP_MD_CTX_new();
    tc->hmac_inner = EVP_MD_CTX_new();
    tc->hmac_outer = EVP_MD_CTX_new();
    tc->aes = EVP_CIPHER_CTX_new();
    if (tc->md == NULL || tc->hmac_inner == NULL || tc->hmac_outer == NULL || tc->aes == NULL ||
        EVP_EncryptInit_ex2(tc->aes, cipher_aes128_ctr, NULL, NULL, NULL) <= 0 ||
        pthread_setspecific(thread_ctx_key, tc) != 0) {
        free_thread_ctx(tc);
        return NULL;
    }
    return tc;
}

/* crypto_scalarmult_curve25519 of the library `name`, after a successful sodium_init, or
 * NULL (library absent, a symbol missing, init failed: the library is closed again). On
 * success *handle keeps the library loaded. */
static scalarmult_fn open_libsodium(const char *name, void **handle)
{
    void *lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL)
        return NULL;
    int (*sodium_init)(void) = (int (*)(void))dlsym(lib, "sodium_init");
    scalarmult_fn fn = (scalarmult_fn)dlsym(lib, "crypto_scalarmult_curve25519");
    /* sodium_init (thread-safe itself) picks the fastest code for this CPU; 1 means it
     * had already run, < 0 is a failure. */
    if (sodium_init == NULL || fn == NULL || sodium_init() < 0) {
        dlclose(lib);
        return NULL;
    }
    *handle = lib;
    return fn;
}

int sx_probe_libsodium(const char *name)
{
    void *handle = NULL;
    if (open_libsodium(name, &handle) == NULL)
        return 0;
    dlclose(handle);
    return 1;
}

static void init_once_body(void)
{
    static const char *const names[] = {"libsodium.so.23", "libsodium.so.26", "libsodium.so"};
    md_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    md_sha512_256 = EVP_MD_fetch(NULL, "SHA512-256", NULL);
    cipher_aes128_ctr = EVP_CIPHER_fetch(NULL, "AES-128-CTR", NULL);
    if (md_sha256 == NULL || md_sha512_256 == NULL || cipher_aes128_ctr == NULL ||
        pthread_key_create(&thread_ctx_key, free_thread_ctx) != 0)
        return;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && sodium_scalarmult == NULL; i++) {
        void *handle = NULL; /* kept open for the life of the process */
        sodium_scalarmult = open_libsodium(names[i], &handle);
    }
    int best = sodium_scalarmult != NULL ? SX_X25519_LIBSODIUM : SX_X25519_OPENSSL;
    __atomic_store_n(&scalar_backend, best, __ATOMIC_RELAXED);
    __atomic_store_n(&x25519_backend, best, __ATOMIC_RELAXED);
    init_status = 0;
}

int sx_init(void)
{
    pthread_once(&init_once, init_once_body);
    return init_status;
}

int sx_load_ifma(const char *library, const char *const *runtime, size_t n_runtime)
{
    if (sx_init() != 0)
        return -1;
    return xmb_load(library, runtime, n_runtime);
}

int sx_x25519_backend(void) { return __atomic_load_n(&x25519_backend, __ATOMIC_RELAXED); }

int sx_x25519_available(int backend)
{
    return backend == SX_X25519_OPENSSL ||
           (backend == SX_X25519_LIBSODIUM && sodium_scalarmult != NULL) ||
           (backend == SX_X25519_IFMA && xmb_loaded());
}

int sx_set_x25519_backend(int backend)
{
    if (!sx_x25519_available(backend))
        return -1;
    int scalar = backend;
    if (backend == SX_X25519_IFMA)
        scalar = sodium_scalarmult != NULL ? SX_X25519_LIBSODIUM : SX_X25519_OPENSSL;
    __atomic_store_n(&scalar_backend, scalar, __ATOMIC_RELAXED);
    __atomic_store_n(&x25519_backend, backend, __ATOMIC_RELAXED);
    return 0;
}

/* ---------------------------------------------------------------- X25519 */

/* A private-key object with a placeholder public half: OpenSSL would otherwise compute the
 * real public key (a second scalar multiplication) that derive never reads. */
static EVP_PKEY *private_key_without_public(const uint8_t scalar[32])
{
    static const uint8_t placeholder[32] = {9};
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "X25519", NULL);
    if (ctx == NULL)
        return NULL;
    OSSL_PARAM params[3] = {
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PRIV_KEY, (void *)scalar, 32),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)placeholder, 32),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_PKEY_fromdata_init(ctx) <= 0 || EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_KEYPAIR, params) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    return pkey;
}

/* 1 if u (top bit ignored, as X25519 does) encodes a point of small order: 0, 1, the two
 * points of order 8, p - 1, and the non-canonical p and p + 1. X25519 of these is zero for
 * every clamped scalar, and of no other u. */
static int is_small_order(const uint8_t point[32])
{
    static const uint8_t small_order[7][32] = {
        {0},
        {1},
        {0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a,
         0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00},
        {0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b,
         0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57},
        {0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
         0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
        {0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
         0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
        {0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
         0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
    };
    int found = 0;
    for (size_t k = 0; k < 7; k++) {
        uint8_t diff = (uint8_t)((point[31] & 0x7f) ^ small_order[k][31]);
        for (size_t b = 0; b < 31; b++)
            diff |= (uint8_t)(point[b] ^ small_order[k][b]);
        found |= diff == 0;
    }
    return found;
}

static int x25519_openssl(uint8_t out[32], const uint8_t scalar[32], const uint8_t point[32])
{
    int rc = -1;
    size_t out_len = 32;
    EVP_PKEY *priv = private_key_without_public(scalar);
    EVP_PKEY *peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, point, 32);
    EVP_PKEY_CTX *ctx = priv != NULL ? EVP_PKEY_CTX_new(priv, NULL) : NULL;
    if (peer != NULL && ctx != NULL && EVP_PKEY_derive_init(ctx) > 0 &&
        EVP_PKEY_derive_set_peer(ctx, peer) > 0) {
        rc = 0;
        /* OpenSSL refuses an all-zero result (small-order point); Go returns the zeros. Any
         * other failure is OpenSSL's own (memory): reported, not turned into a secret. */
        if (EVP_PKEY_derive(ctx, out, &out_len) <= 0 || out_len != 32) {
            memset(out, 0, 32);
            rc = is_small_order(point) ? 0 : -1;
        }
    }
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(peer);
    EVP_PKEY_free(priv);
    return rc;
}

int sx_x25519(uint8_t out[32], const uint8_t scalar[32], const uint8_t point[32])
{
    uint8_t tmp[32];
    int rc = 0;
    if (__atomic_load_n(&scalar_backend, __ATOMIC_RELAXED) == SX_X25519_LIBSODIUM) {
        /* libsodium returns -1 for a low-order point (public); Go's ScalarMult yields zeros. */
        int low_order = sodium_scalarmult(tmp, scalar, point) != 0;
        SX_PUBLIC(&low_order, sizeof low_order);
        if (low_order)
            memset(tmp, 0, 32);
    } else {
        rc = x25519_openssl(tmp, scalar, point);
    }
    memcpy(out, tmp, 32);
    sx_wipe(tmp, sizeof tmp);
    return rc;
}

static int ct_is_zero(const uint8_t *a, size_t len)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < len; i++)
        acc |= a[i];
    return acc == 0;
}

/* 1 if u (top bit ignored) is at least 2^255 - 2^16. libcrypto_mb 2026.2's eight-lane X25519
 * gets u just below p wrong (measured: every u in about [p - 1500, p), among them p - 1, a
 * point of small order whose all-zero secret an attacker knows, so a crafted packet would
 * unwrap differently from the reference). Such lanes go to the scalar backend; the margin is
 * wide, and honest group elements land there with probability 2^-239. The point is public
 * (a packet's group element, or a path's public key), so the branch leaks nothing. */
static int near_p(const uint8_t point[32])
{
    uint8_t all = (uint8_t)(point[31] | 0x80);
    for (size_t b = 2; b < 31; b++)
        all &= point[b];
    return all == 0xff;
}

int sx_x25519_lanes(uint8_t *const out[SX_LANES], const uint8_t *const scalar[SX_LANES],
                    const uint8_t *const point[SX_LANES])
{
    uint8_t *lane_out[SX_LANES] = {0}, *scalar_out[SX_LANES] = {0};
    size_t lanes = 0;
    int use_lanes = sx_x25519_backend() == SX_X25519_IFMA, rc = 0;
    for (size_t i = 0; i < SX_LANES; i++) {
        if (out[i] == NULL)
            continue;
        if (use_lanes && !near_p(point[i])) {
            lane_out[i] = out[i];
            lanes++;
        } else {
            scalar_out[i] = out[i];
        }
    }
    /* One eight-lane pass costs about as much as eight lanes' work, so a lone operation is
     * cheaper on the scalar backend; which lanes run depends only on public facts (how many
     * packets, which of them failed a MAC, their group elements). */
    if (lanes == 1)
        for (size_t i = 0; i < SX_LANES; i++) {
            scalar_out[i] = scalar_out[i] != NULL ? scalar_out[i] : lane_out[i];
            lane_out[i] = NULL;
        }
    if (lanes >= 2 && xmb_x25519_mb8(lane_out, scalar, point) != 0)
        rc = -1;
    /* Defence in depth against more inputs the library gets wrong: an all-zero secret is
     * the one wrong answer an attacker could predict, and is right only for small order. */
    for (size_t i = 0; lanes >= 2 && i < SX_LANES; i++)
        if (lane_out[i] != NULL && ct_is_zero(lane_out[i], 32) && !is_small_order(point[i]))
            scalar_out[i] = lane_out[i];
    for (size_t i = 0; i < SX_LANES; i++)
        if (scalar_out[i] != NULL && sx_x25519(scalar_out[i], scalar[i], point[i]) != 0)
            rc = -1;
    return rc;
}

/* ---------------------------------------------------------------- hashes */

int sx_sha512_256(const uint8_t *msg, size_t len, uint8_t out[32])
{
    thread_ctx *tc = get_thread_ctx();
    unsigned int out_len = 0;
    if (tc == NULL || EVP_DigestInit_ex2(tc->md, md_sha512_256, NULL) <= 0 ||
        EVP_DigestUpdate(tc->md, msg, len) <= 0 || EVP_DigestFinal_ex(tc->md, out, &out_len) <= 0)
        return -1;
    return 0;
}

/* SHA-256 of msg[0] || ... || msg[n-1] in the thread's reused context. */
static int sha256_pieces(EVP_MD_CTX *md, const uint8_t *const *msg, const size_t *len, size_t n,
                         uint8_t out[32])
{
    unsigned int out_len = 0;
    if (EVP_DigestInit_ex2(md, md_sha256, NULL) <= 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (len[i] > 0 && EVP_DigestUpdate(md, msg[i], len[i]) <= 0)
            return -1;
    return EVP_DigestFinal_ex(md, out, &out_len) > 0 ? 0 : -1;
}

/* HMAC-SHA256 key pads (key XOR ipad, key XOR opad); secret, wiped by the callers. */
typedef struct {
    uint8_t ipad[SHA256_BLOCK];
    uint8_t opad[SHA256_BLOCK];
} hmac_pads;

static int hmac_keying(EVP_MD_CTX *md, hmac_pads *pads, const uint8_t *key, size_t key_len)
{
    uint8_t hashed[32];
    int rc = 0;
    memset(pads->ipad, 0, SHA256_BLOCK);
    if (key_len > SHA256_BLOCK) {
        rc = sha256_pieces(md, &key, &key_len, 1, hashed);
        key = hashed;
        key_len = sizeof hashed;
    }
    memcpy(pads->ipad, key, key_len);
    for (size_t i = 0; i < SHA256_BLOCK; i++) {
        pads->opad[i] = pads->ipad[i] ^ 0x5c;
        pads->ipad[i] ^= 0x36;
    }
    sx_wipe(hashed, sizeof hashed);
    return rc;
}

/* HMAC(key, msg[0] || ... || msg[n-1]) for n <= 3. The pads are hashed again for every
 * message: with OpenSSL 3.0 that costs less than copying keyed contexts (each copy
 * allocates). */
static int hmac_pieces(EVP_MD_CTX *md, const hmac_pads *pads, const uint8_t *const *msg,
                       const size_t *len, size_t n, uint8_t out[32])
{
    const uint8_t *inner_msg[4] = {pads->ipad};
    size_t inner_len[4] = {SHA256_BLOCK};
    uint8_t inner[32];
    for (size_t i = 0; i < n; i++) {
        inner_msg[i + 1] = msg[i];
        inner_len[i + 1] = len[i];
    }
    const uint8_t *outer_msg[2] = {pads->opad, inner};
    const size_t outer_len[2] = {SHA256_BLOCK, sizeof inner};
    int rc = sha256_pieces(md, inner_msg, inner_len, n + 1, inner);
    if (rc == 0)
        rc = sha256_pieces(md, outer_msg, outer_len, 2, out);
    sx_wipe(inner, sizeof inner);
    return rc;
}

/* Leaves nothing of the last hash (its final state is the HMAC output) in the context. */
static int hmac_done(EVP_MD_CTX *md, hmac_pads *pads, int rc)
{
    sx_wipe(pads, sizeof *pads);
    return EVP_DigestInit_ex2(md, md_sha256, NULL) > 0 ? rc : -1;
}

int sx_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t len,
                   uint8_t out[32])
{
    thread_ctx *tc = get_thread_ctx();
    hmac_pads pads;
    if (tc == NULL)
        return -1;
    int rc = hmac_keying(tc->md, &pads, key, key_len);
    if (rc == 0)
        rc = hmac_pieces(tc->md, &pads, &msg, &len, 1, out);
    return hmac_done(tc->md, &pads, rc);
}

/* HKDF hashes five messages under one key: the pads are hashed once into the thread's keyed
 * contexts, then copied for each message (cheaper than hashing the pads again). */
static int hkdf_keyed(thread_ctx *tc, const hmac_pads *pads, const uint8_t *info,
                      size_t info_len, uint8_t *out, size_t out_len)
{
    unsigned int digest_len = 0;
    uint8_t t[32];
    size_t t_len = 0;
    int rc = EVP_DigestInit_ex2(tc->hmac_inner, md_sha256, NULL) > 0 &&
             EVP_DigestUpdate(tc->hmac_inner, pads->ipad, SHA256_BLOCK) > 0 &&
             EVP_DigestInit_ex2(tc->hmac_outer, md_sha256, NULL) > 0 &&
             EVP_DigestUpdate(tc->hmac_outer, pads->opad, SHA256_BLOCK) > 0 ? 0 : -1;
    for (uint8_t counter = 1; rc == 0 && out_len > 0; counter++) {
        if (EVP_MD_CTX_copy_ex(tc->md, tc->hmac_inner) <= 0 ||
            EVP_DigestUpdate(tc->md, t, t_len) <= 0 ||
            EVP_DigestUpdate(tc->md, info, info_len) <= 0 ||
            EVP_DigestUpdate(tc->md, &counter, 1) <= 0 ||
            EVP_DigestFinal_ex(tc->md, t, &digest_len) <= 0 ||
            EVP_MD_CTX_copy_ex(tc->md, tc->hmac_outer) <= 0 ||
            EVP_DigestUpdate(tc->md, t, sizeof t) <= 0 ||
            EVP_DigestFinal_ex(tc->md, t, &digest_len) <= 0)
            rc = -1;
        t_len = sizeof t;
        size_t take = out_len < t_len ? out_len : t_len;
        memcpy(out, t, take);
        out += take;
        out_len -= take;
    }
    sx_wipe(t, sizeof t);
    /* The keyed states are as good as the key: reset them. */
    if (EVP_DigestInit_ex2(tc->hmac_inner, md_sha256, NULL) <= 0 ||
        EVP_DigestInit_ex2(tc->hmac_outer, md_sha256, NULL) <= 0)
        rc = -1;
    return rc;
}

int sx_hkdf_expand(const uint8_t *prk, size_t prk_len, const uint8_t *info, size_t info_len,
                   uint8_t *out, size_t out_len)
{
    thread_ctx *tc = get_thread_ctx();
    hmac_pads pads;
    if (tc == NULL)
        return -1;
    int rc = hmac_keying(tc->md, &pads, prk, prk_len);
    if (rc == 0)
        rc = hkdf_keyed(tc, &pads, info, info_len, out, out_len);
    return hmac_done(tc->md, &pads, rc);
}

int sx_kdf(const uint8_t *shared_secret, sx_packet_keys *keys)
{
    return sx_hkdf_expand(shared_secret, 32, KDF_INFO, KDF_INFO_LEN, (uint8_t *)keys, SX_KDF_LEN);
}

/* ---------------------------------------------------------------- AES-128-CTR */

int sx_aes128_ctr(const uint8_t key[16], const uint8_t iv[16], const uint8_t *in, uint8_t *out,
                  size_t len)
{
    static const uint8_t zeros[16] = {0};
    thread_ctx *tc = get_thread_ctx();
    int out_len = 0, rc = -1;
    if (tc == NULL || len > 0x7fffffff)
        return -1;
    /* A NULL cipher keeps the one fetched at allocation: only the key schedule is redone. */
    if (EVP_EncryptInit_ex2(tc->aes, NULL, key, iv, NULL) > 0 &&
        EVP_EncryptUpdate(tc->aes, out, &out_len, in, (int)len) > 0 && (size_t)out_len == len)
        rc = 0;
    /* Overwrite the key schedule that would otherwise stay in the reused context. */
    if (EVP_EncryptInit_ex2(tc->aes, NULL, zeros, zeros, NULL) <= 0)
        rc = -1;
    return rc;
}

/* ---------------------------------------------------------------- unwrap */

static int ct_equal(const uint8_t *a, const uint8_t *b, size_t len)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < len; i++)
        acc |= a[i] ^ b[i];
    return acc == 0;
}

/* Keep the fields of the first command of each type (the server reads only those). */
static void record_command(const uint8_t *cmd, sx_unwrap_result *res, const uint8_t **next_mac)
{
    switch (cmd[0]) {
    case SX_CMD_NEXT_NODE:
        memcpy(res->next_hop, cmd + 1, SX_NODE_ID_LEN);
        *next_mac = cmd + 1 + SX_NODE_ID_LEN;
        break;
    case SX_CMD_RECIPIENT: memcpy(res->recipient, cmd + 1, SX_RECIPIENT_ID_LEN); break;
    case SX_CMD_SURB_REPLY: memcpy(res->surb_id, cmd + 1, SX_SURB_ID_LEN); break;
    default:
        res->delay_ms = ((uint32_t)cmd[1] << 24) | ((uint32_t)cmd[2] << 16) |
                        ((uint32_t)cmd[3] << 8) | (uint32_t)cmd[4];
    }
}

/* Parse the decrypted slot as the reference does: one command at a time, in wire order; a
 * second NextNodeHop or SURBReply is an error as soon as it is read (before any later bytes
 * are looked at), an unknown id, a truncated command or non-zero bytes after the null
 * terminator are "invalid per-hop command". */
static int parse_slot(const uint8_t *slot, sx_unwrap_result *res, const uint8_t **next_mac)
{
    size_t off = 0;
    while (off < SX_SLOT_LEN) {
        const uint8_t *cmd = slot + off;
        size_t remaining = SX_SLOT_LEN - off, need;
        uint8_t flag;
        switch (cmd[0]) {
        case SX_CMD_NULL:
            return ct_is_zero(cmd + 1, remaining - 1) ? SX_OK : SX_ERR_INVALID_COMMAND;
        case SX_CMD_NEXT_NODE: need = SX_NEXT_NODE_LEN; flag = SX_FLAG_NEXT_HOP; break;
        case SX_CMD_RECIPIENT: need = SX_RECIPIENT_LEN; flag = SX_FLAG_RECIPIENT; break;
        case SX_CMD_SURB_REPLY: need = SX_SURB_REPLY_LEN; flag = SX_FLAG_SURB_REPLY; break;
        case SX_CMD_NODE_DELAY: need = SX_NODE_DELAY_LEN; flag = SX_FLAG_NODE_DELAY; break;
        default: return SX_ERR_INVALID_COMMAND;
        }
        if (remaining < need)
            return SX_ERR_INVALID_COMMAND;
        if (res->flags & flag) {
            res->flags |= SX_FLAG_DUPLICATE;
            if (flag == SX_FLAG_NEXT_HOP)
                return SX_ERR_DUP_NEXT_NODE;
            if (flag == SX_FLAG_SURB_REPLY)
                return SX_ERR_DUP_SURB_REPLY;
        } else {
            res->flags |= flag;
            record_command(cmd, res, next_mac);
        }
        off += need;
    }
    return SX_OK;
}

/* What a group unwrap keeps per packet; wiped before sx_unwrap_group returns. */
typedef struct {
    sx_packet_keys pk;
    uint8_t secret[32];
    uint8_t beta[SX_BETA_LEN + SX_SLOT_LEN]; /* decrypted routing information (secret) */
    uint8_t next_alpha[SX_GE_LEN];
    const uint8_t *next_mac;
} lane_state;

/* The checks before any key is used; returns SX_OK if the packet goes on to the MAC. */
static int check_header(const uint8_t *pkt, size_t len, sx_unwrap_result *res)
{
    memset(res, 0, sizeof *res);
    res->key_index = -1;
    if (len < SX_HEADER_LEN)
        return SX_ERR_TRUNCATED;
    if (pkt[0] != 0 || pkt[1] != 0)
        return SX_ERR_UNKNOWN_VERSION;
    if (sx_sha512_256(pkt + SX_ALPHA_OFF, SX_GE_LEN, res->tag) != 0)
        return SX_ERR_INTERNAL;
    res->has_tag = 1;
    return SX_OK;
}

/* One trial key over every lane still waiting (waiting[i]): the shared secrets in lanes, then
 * the KDF and MAC per packet. Lanes whose MAC matches record the key and stop waiting. */
static void try_key(const uint8_t *key, int8_t key_index, uint8_t *const pkts[], size_t count,
                    lane_state *st, sx_unwrap_result *res, int *waiting)
{
    uint8_t *out[SX_LANES] = {0};
    const uint8_t *scalar[SX_LANES] = {0}, *point[SX_LANES] = {0};
    for (size_t i = 0; i < count; i++) {
        if (!waiting[i])
            continue;
        out[i] = st[i].secret;
        scalar[i] = key;
        point[i] = pkts[i] + SX_ALPHA_OFF;
    }
    int lanes_rc = sx_x25519_lanes(out, scalar, point);
    for (size_t i = 0; i < count; i++) {
        uint8_t mac[32];
        if (!waiting[i])
            continue;
        if (lanes_rc != 0 || sx_kdf(st[i].secret, &st[i].pk) != 0 ||
            sx_hmac_sha256(st[i].pk.header_mac, sizeof st[i].pk.header_mac, pkts[i], SX_GAMMA_OFF,
                           mac) != 0) {
            res[i].status = SX_ERR_INTERNAL;
            waiting[i] = 0;
        } else {
            int match = ct_equal(mac, pkts[i] + SX_GAMMA_OFF, SX_MAC_LEN);
            SX_PUBLIC(&match, sizeof match); /* the node's behaviour shows it */
            if (match) {
                res[i].key_index = key_index;
                waiting[i] = 0;
            }
        }
        sx_wipe(st[i].secret, sizeof st[i].secret);
    }
}

/* After a MAC match: decrypt the routing information, parse the current slot, decrypt the
 * payload. Returns SX_OK when the packet only needs the blinding (forward) or is done. */
static int decrypt_routing(uint8_t *pkt, size_t len, lane_state *st, sx_unwrap_result *res)
{
    memcpy(st->beta, pkt + SX_BETA_OFF, SX_BETA_LEN);
    memset(st->beta + SX_BETA_LEN, 0, SX_SLOT_LEN);
    if (sx_aes128_ctr(st->pk.header_key, st->pk.header_iv, st->beta, st->beta, sizeof st->beta) != 0)
        return SX_ERR_INTERNAL;
    SX_PUBLIC(st->beta, sizeof st->beta); /* commands acted on; the rest goes out on the wire */
    memcpy(res->slot, st->beta, SX_SLOT_LEN);
    int status = parse_slot(st->beta, res, &st->next_mac);
    if (status != SX_OK)
        return status;
    size_t payload_len = len - SX_HEADER_LEN;
    uint8_t *payload = pkt + SX_HEADER_LEN;
    if (payload_len > 0) {
        aez_ctx sprp;
        aez_setup(&sprp, st->pk.payload_key, SX_SPRP_KEY_LEN);
        aez_decrypt(&sprp, st->pk.header_iv, SX_SPRP_IV_LEN, NULL, NULL, 0, 0, payload, payload_len,
                    payload);
        aez_wipe(&sprp);
    }
    if (res->flags & SX_FLAG_NEXT_HOP)
        return SX_OK;
    if (payload_len < SX_TAG_LEN)
        return SX_ERR_TRUNCATED_PAYLOAD;
    SX_PUBLIC(payload, SX_TAG_LEN); /* accepted or dropped: visible */
    if (!(res->flags & SX_FLAG_SURB_REPLY) && !ct_is_zero(payload, SX_TAG_LEN))
        return SX_ERR_PAYLOAD_AUTH;
    return SX_OK;
}

/* The forward packets' blinded group elements, in lanes, then their new headers. */
static void blind_forward(uint8_t *const pkts[], size_t count, lane_state *st,
                          sx_unwrap_result *res, const int *forward)
{
    uint8_t *out[SX_LANES] = {0};
    const uint8_t *scalar[SX_LANES] = {0}, *point[SX_LANES] = {0};
    for (size_t i = 0; i < count; i++) {
        if (!forward[i])
            continue;
        out[i] = st[i].next_alpha;
        scalar[i] = st[i].pk.blinding;
        point[i] = pkts[i] + SX_ALPHA_OFF;
    }
    int rc = sx_x25519_lanes(out, scalar, point);
    for (size_t i = 0; i < count; i++) {
        if (!forward[i])
            continue;
        if (rc != 0) {
            res[i].status = SX_ERR_INTERNAL;
            continue;
        }
        memcpy(pkts[i] + SX_ALPHA_OFF, st[i].next_alpha, SX_GE_LEN);
        memcpy(pkts[i] + SX_BETA_OFF, st[i].beta + SX_SLOT_LEN, SX_BETA_LEN);
        memcpy(pkts[i] + SX_GAMMA_OFF, st[i].next_mac, SX_MAC_LEN);
    }
}

int sx_unwrap_group(const uint8_t *keys, size_t n_keys, uint8_t *const pkts[], size_t count,
                    size_t len, sx_unwrap_result *res)
{
    lane_state st[SX_LANES];
    int waiting[SX_LANES] = {0}, forward[SX_LANES] = {0};
    if (count > SX_LANES)
        return -1;
    for (size_t i = 0; i < count; i++) {
        res[i].status = check_header(pkts[i], len, &res[i]);
        waiting[i] = res[i].status == SX_OK;
    }
    /* Trial decryption as the reference: key k only for the packets no earlier key opened. */
    for (size_t k = 0; k < n_keys; k++)
        try_key(keys + 32 * k, (int8_t)k, pkts, count, st, res, waiting);
    for (size_t i = 0; i < count; i++) {
        if (waiting[i])
            res[i].status = SX_ERR_MAC_MISMATCH;
        else if (res[i].key_index >= 0) {
            res[i].status = decrypt_routing(pkts[i], len, &st[i], &res[i]);
            forward[i] = res[i].status == SX_OK && (res[i].flags & SX_FLAG_NEXT_HOP);
        }
    }
    blind_forward(pkts, count, st, res, forward);
    sx_wipe(st, count * sizeof st[0]);
    return 0;
}

int sx_unwrap(const uint8_t *keys, size_t n_keys, uint8_t *pkt, size_t len,
              sx_unwrap_result *res)
{
    uint8_t *const pkts[1] = {pkt};
    sx_unwrap_group(keys, n_keys, pkts, 1, len, res);
    return res->status;
}

/* ---------------------------------------------------------------- creation */

/* Everything header creation derives for a path; wiped before sx_create_header returns. */
typedef struct {
    sx_packet_keys keys[SX_NR_HOPS];
    uint8_t alphas[SX_NR_HOPS][SX_GE_LEN];
    uint8_t streams[SX_NR_HOPS][SX_BETA_LEN + SX_SLOT_LEN];
    uint8_t fillers[SX_NR_HOPS][SX_BETA_LEN]; /* phi_i: (i + 1) * 82 bytes */
} header_state;

static int check_blocks(size_t n_hops, const size_t *block_lens)
{
    if (n_hops < 1 || n_hops > SX_NR_HOPS)
        return SX_ERR_BAD_ARGUMENT;
    for (size_t i = 0; i < n_hops; i++) {
        size_t limit = i + 1 < n_hops ? SX_SLOT_LEN - SX_NEXT_NODE_LEN : SX_SLOT_LEN;
        if (block_lens[i] > limit)
            return SX_ERR_BAD_ARGUMENT;
    }
    return SX_OK;
}

/* One X25519 per packet of a creation group, in lanes: out[i] = X25519(scalar[i], point[i])
 * for the packets with more than `hop` hops (the others sit the pass out). */
static int creation_pass(size_t count, const sx_header_request *req, size_t hop,
                         uint8_t *const out[], const uint8_t *const scalar[],
                         const uint8_t *const point[])
{
    uint8_t *o[SX_LANES] = {0};
    for (size_t i = 0; i < count; i++)
        o[i] = req[i].n_hops > hop ? out[i] : NULL;
    return sx_x25519_lanes(o, scalar, point) == 0 ? SX_OK : SX_ERR_INTERNAL;
}

/* Per-hop secrets, keys and (cumulatively blinded) group elements (the Sphinx Packet Format
 * Specification, header creation, step 2) of up to eight packets, each X25519 step one lane
 * pass over the packets that have that hop. */
static int derive_hop_keys(size_t count, const sx_header_request *req, header_state *st)
{
    static const uint8_t base_point[32] = {9};
    uint8_t secret[SX_LANES][32];
    uint8_t *out[SX_LANES] = {0};
    const uint8_t *scalar[SX_LANES] = {0}, *point[SX_LANES] = {0};
    size_t max_hops = 0;
    int rc;
    if (count > SX_LANES)
        return SX_ERR_BAD_ARGUMENT;
    for (size_t i = 0; i < count; i++) {
        max_hops = req[i].n_hops > max_hops ? req[i].n_hops : max_hops;
        out[i] = st[i].alphas[0];
        scalar[i] = req[i].ephemeral;
        point[i] = base_point;
    }
    rc = creation_pass(count, req, 0, out, scalar, point);
    for (size_t h = 0; rc == SX_OK && h < max_hops; h++) {
        for (size_t i = 0; i < count; i++) {
            out[i] = secret[i];
            point[i] = req[i].public_keys + SX_GE_LEN * h;
        }
        rc = creation_pass(count, req, h, out, scalar, point);
        for (size_t j = 0; rc == SX_OK && j < h; j++) {
            const uint8_t *blinding[SX_LANES] = {0}, *prev[SX_LANES] = {0};
            for (size_t i = 0; i < count; i++) {
                blinding[i] = st[i].keys[j].blinding;
                prev[i] = secret[i];
            }
            rc = creation_pass(count, req, h, out, blinding, prev);
        }
        for (size_t i = 0; rc == SX_OK && i < count; i++)
            if (req[i].n_hops > h && sx_kdf(secret[i], &st[i].keys[h]) != 0)
                rc = SX_ERR_INTERNAL;
        if (rc == SX_OK && h > 0) {
            uint8_t *next[SX_LANES] = {0};
            const uint8_t *blinding[SX_LANES] = {0}, *prev[SX_LANES] = {0};
            for (size_t i = 0; i < count; i++) {
                next[i] = st[i].alphas[h];
                blinding[i] = st[i].keys[h - 1].blinding;
                prev[i] = st[i].alphas[h - 1];
            }
            rc = creation_pass(count, req, h, next, blinding, prev);
        }
    }
    sx_wipe(secret, sizeof secret);
    return rc;
}

/* Keystreams and the filler phi_i (header creation, step 3). */
static int derive_streams(header_state *st, size_t n_hops)
{
    for (size_t i = 0; i < n_hops; i++) {
        memset(st->streams[i], 0, sizeof st->streams[i]);
        if (sx_aes128_ctr(st->keys[i].header_key, st->keys[i].header_iv, st->streams[i],
                          st->streams[i], sizeof st->streams[i]) != 0)
            return SX_ERR_INTERNAL;
        size_t ks_len = SX_BETA_LEN - i * SX_SLOT_LEN;
        memcpy(st->fillers[i], st->streams[i] + ks_len, (i + 1) * SX_SLOT_LEN);
        for (size_t b = 0; i > 0 && b < i * SX_SLOT_LEN; b++)
            st->fillers[i][b] ^= st->fillers[i - 1][b];
    }
    return SX_OK;
}

/* Routing information, built backwards (header creation, step 4); beta of hop i lives at
 * beta[i * 82 : 410]. Leaves gamma_0 in gamma. */
static int build_routing(const header_state *st, size_t n_hops, const uint8_t *ids,
                         const uint8_t *blocks, const size_t *block_lens,
                         const uint8_t *filler, uint8_t beta[SX_BETA_LEN],
                         uint8_t gamma[SX_MAC_LEN])
{
    memset(gamma, 0, SX_MAC_LEN);
    if (n_hops < SX_NR_HOPS)
        memcpy(beta + n_hops * SX_SLOT_LEN, filler, (SX_NR_HOPS - n_hops) * SX_SLOT_LEN);
    for (size_t i = n_hops; i-- > 0;) {
        uint8_t *slot = beta + i * SX_SLOT_LEN;
        size_t used = block_lens[i];
        memset(slot, 0, SX_SLOT_LEN);
        memcpy(slot, blocks + i * SX_SLOT_LEN, used);
        if (i + 1 < n_hops) {
            slot[used] = SX_CMD_NEXT_NODE;
            memcpy(slot + used + 1, ids + SX_NODE_ID_LEN * (i + 1), SX_NODE_ID_LEN);
            memcpy(slot + used + 1 + SX_NODE_ID_LEN, gamma, SX_MAC_LEN);
        }
        size_t beta_len = SX_BETA_LEN - i * SX_SLOT_LEN;
        for (size_t b = 0; b < beta_len; b++)
            slot[b] ^= st->streams[i][b];
        /* gamma_i = MAC(mu_i, 00 00 || alpha_i || beta || phi_{i-1}): always 444 bytes. */
        uint8_t mac_input[SX_GAMMA_OFF], mac[32];
        mac_input[0] = mac_input[1] = 0;
        memcpy(mac_input + SX_ALPHA_OFF, st->alphas[i], SX_GE_LEN);
        memcpy(mac_input + SX_BETA_OFF, slot, beta_len);
        if (i > 0)
            memcpy(mac_input + SX_BETA_OFF + beta_len, st->fillers[i - 1], i * SX_SLOT_LEN);
        if (sx_hmac_sha256(st->keys[i].header_mac, sizeof st->keys[i].header_mac, mac_input,
                           sizeof mac_input, mac) != 0)
            return SX_ERR_INTERNAL;
        memcpy(gamma, mac, SX_MAC_LEN);
    }
    return SX_OK;
}

/* The header and SPRP keys of one packet whose keys and streams are derived. */
static int finish_header(const header_state *st, const sx_header_request *req, uint8_t *header,
                         uint8_t *sprp_keys)
{
    uint8_t beta[SX_BETA_LEN], gamma[SX_MAC_LEN];
    if (build_routing(st, req->n_hops, req->ids, req->blocks, req->block_lens, req->filler, beta,
                      gamma) != SX_OK)
        return SX_ERR_INTERNAL;
    header[0] = header[1] = 0;
    memcpy(header + SX_ALPHA_OFF, st->alphas[0], SX_GE_LEN);
    memcpy(header + SX_BETA_OFF, beta, SX_BETA_LEN);
    memcpy(header + SX_GAMMA_OFF, gamma, SX_MAC_LEN);
    for (size_t i = 0; i < req->n_hops; i++) {
        uint8_t *material = sprp_keys + SX_SPRP_MATERIAL_LEN * i;
        memcpy(material, st->keys[i].payload_key, SX_SPRP_KEY_LEN);
        memcpy(material + SX_SPRP_KEY_LEN, st->keys[i].header_iv, SX_SPRP_IV_LEN);
    }
    return SX_OK;
}

int sx_create_header_group(const sx_header_request *req, size_t count, uint8_t *headers,
                           uint8_t *sprp_keys, int *status)
{
    header_state st[SX_LANES];
    int rc = SX_OK;
    if (count > SX_LANES)
        return SX_ERR_BAD_ARGUMENT;
    for (size_t i = 0; i < count; i++)
        if (check_blocks(req[i].n_hops, req[i].block_lens) != SX_OK)
            rc = SX_ERR_BAD_ARGUMENT;
    if (rc == SX_OK)
        rc = derive_hop_keys(count, req, st);
    for (size_t i = 0; i < count; i++) {
        status[i] = rc;
        if (rc == SX_OK)
            status[i] = derive_streams(&st[i], req[i].n_hops);
        if (status[i] == SX_OK)
            status[i] = finish_header(&st[i], &req[i], headers + SX_HEADER_LEN * i,
                                      sprp_keys + SX_NR_HOPS * SX_SPRP_MATERIAL_LEN * i);
        rc = rc == SX_OK ? status[i] : rc;
    }
    sx_wipe(st, count * sizeof st[0]);
    return rc;
}

int sx_create_header(const uint8_t ephemeral[32], size_t n_hops, const uint8_t *ids,
                     const uint8_t *public_keys, const uint8_t *blocks,
                     const size_t *block_lens, const uint8_t *filler, uint8_t *header,
                     uint8_t *sprp_keys)
{
    sx_header_request req;
    uint8_t keys[SX_NR_HOPS * SX_SPRP_MATERIAL_LEN];
    int status;
    if (n_hops < 1 || n_hops > SX_NR_HOPS)
        return SX_ERR_BAD_ARGUMENT;
    memset(&req, 0, sizeof req);
    memcpy(req.ephemeral, ephemeral, 32);
    req.n_hops = n_hops;
    memcpy(req.block_lens, block_lens, n_hops * sizeof block_lens[0]);
    memcpy(req.ids, ids, n_hops * SX_NODE_ID_LEN);
    memcpy(req.public_keys, public_keys, n_hops * SX_GE_LEN);
    memcpy(req.blocks, blocks, n_hops * SX_SLOT_LEN);
    memcpy(req.filler, filler, (SX_NR_HOPS - n_hops) * SX_SLOT_LEN);
    int rc = sx_create_header_group(&req, 1, header, keys, &status);
    if (rc == SX_OK)
        memcpy(sprp_keys, keys, n_hops * SX_SPRP_MATERIAL_LEN);
    sx_wipe(&req, sizeof req);
    sx_wipe(keys, sizeof keys);
    return rc;
}

void sx_encrypt_payload(const uint8_t *sprp_keys, size_t n_hops, const uint8_t *payload,
                        size_t payload_len, uint8_t *out)
{
    size_t len = SX_TAG_LEN + payload_len;
    memset(out, 0, SX_TAG_LEN);
    memmove(out + SX_TAG_LEN, payload, payload_len);
    for (size_t i = n_hops; i-- > 0;) {
        const uint8_t *material = sprp_keys + SX_SPRP_MATERIAL_LEN * i;
        aez_ctx sprp;
        aez_setup(&sprp, material, SX_SPRP_KEY_LEN);
        aez_encrypt(&sprp, material + SX_SPRP_KEY_LEN, SX_SPRP_IV_LEN, NULL, NULL, 0, 0, out, len,
                    out);
        aez_wipe(&sprp);
    }
}

int sx_decrypt_surb_payload(const uint8_t *keys, size_t n_entries, uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < n_entries; i++) {
        const uint8_t *material = keys + SX_SPRP_MATERIAL_LEN * i;
        aez_ctx sprp;
        aez_setup(&sprp, material, SX_SPRP_KEY_LEN);
        /* Every hop decrypted the reply on its way: undo those with Encrypt, last hop first;
         * the last entry is the reply key itself. */
        if (i + 1 < n_entries)
            aez_encrypt(&sprp, material + SX_SPRP_KEY_LEN, SX_SPRP_IV_LEN, NULL, NULL, 0, 0, buf,
                        len, buf);
        else
            aez_decrypt(&sprp, material + SX_SPRP_KEY_LEN, SX_SPRP_IV_LEN, NULL, NULL, 0, 0, buf,
                        len, buf);
        aez_wipe(&sprp);
    }
    return ct_is_zero(buf, SX_TAG_LEN) ? SX_OK : SX_ERR_PAYLOAD_AUTH;
}
