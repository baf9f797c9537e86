/* Katzenpost Sphinx in C (see sphinx_impl.h). The primitives come from OpenSSL libcrypto;
 * X25519 uses libsodium's crypto_scalarmult when the system library is present (chosen by
 * measurement: OpenSSL 3.0's EVP path costs a key object per call, see bench/bench_sphinx.py),
 * otherwise OpenSSL's EVP_PKEY_derive. Nothing here holds per-call global state. */
#define OPENSSL_SUPPRESS_DEPRECATED 1 /* SHA256_* low-level: HMAC states are copied, not re-keyed */

#include "sphinx_impl.h"
#include "aez_impl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/sha.h>

static const uint8_t KDF_INFO[] = "katzenpost-kdf-v0-hkdf-sha256";
#define KDF_INFO_LEN (sizeof(KDF_INFO) - 1)

static EVP_MD *md_sha512_256;
static EVP_CIPHER *cipher_aes128_ctr;

typedef int (*scalarmult_fn)(unsigned char *, const unsigned char *, const unsigned char *);
static scalarmult_fn sodium_scalarmult;
static int x25519_backend = SX_X25519_OPENSSL; /* read with relaxed atomics from any thread */
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_status = -1;

/* ---------------------------------------------------------------- setup */

/* Secrets (keys, shared secrets, HMAC states, keystreams) are wiped with OPENSSL_cleanse,
 * which the compiler cannot drop as a dead store the way it may drop a final memset. */
void sx_wipe(void *buf, size_t len) { OPENSSL_cleanse(buf, len); }

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
    md_sha512_256 = EVP_MD_fetch(NULL, "SHA512-256", NULL);
    cipher_aes128_ctr = EVP_CIPHER_fetch(NULL, "AES-128-CTR", NULL);
    if (md_sha512_256 == NULL || cipher_aes128_ctr == NULL)
        return;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && sodium_scalarmult == NULL; i++) {
        void *handle = NULL; /* kept open for the life of the process */
        sodium_scalarmult = open_libsodium(names[i], &handle);
    }
    __atomic_store_n(&x25519_backend,
                     sodium_scalarmult != NULL ? SX_X25519_LIBSODIUM : SX_X25519_OPENSSL,
                     __ATOMIC_RELAXED);
    init_status = 0;
}

int sx_init(void)
{
    pthread_once(&init_once, init_once_body);
    return init_status;
}

int sx_x25519_backend(void) { return __atomic_load_n(&x25519_backend, __ATOMIC_RELAXED); }

int sx_x25519_available(int backend)
{
    return backend == SX_X25519_OPENSSL ||
           (backend == SX_X25519_LIBSODIUM && sodium_scalarmult != NULL);
}

int sx_set_x25519_backend(int backend)
{
    if (!sx_x25519_available(backend))
        return -1;
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
    if (sx_x25519_backend() == SX_X25519_LIBSODIUM) {
        uint8_t tmp[32];
        /* libsodium returns -1 for a low-order point; Go's ScalarMult yields zeros. */
        if (sodium_scalarmult(tmp, scalar, point) != 0)
            memset(tmp, 0, 32);
        memcpy(out, tmp, 32);
        sx_wipe(tmp, sizeof tmp);
        return 0;
    }
    uint8_t tmp[32];
    int rc = x25519_openssl(tmp, scalar, point);
    memcpy(out, tmp, 32);
    sx_wipe(tmp, sizeof tmp);
    return rc;
}

/* ---------------------------------------------------------------- hashes */

int sx_sha512_256(const uint8_t *msg, size_t len, uint8_t out[32])
{
    unsigned int out_len = 0;
    return EVP_Digest(msg, len, out, &out_len, md_sha512_256, NULL) > 0 ? 0 : -1;
}

typedef struct {
    SHA256_CTX inner;
    SHA256_CTX outer;
} hmac_state;

static void hmac_key(hmac_state *st, const uint8_t *key, size_t key_len)
{
    uint8_t block[SHA256_CBLOCK], hashed[SHA256_DIGEST_LENGTH];
    memset(block, 0, sizeof block);
    if (key_len > SHA256_CBLOCK) {
        SHA256(key, key_len, hashed);
        key = hashed;
        key_len = sizeof hashed;
    }
    memcpy(block, key, key_len);
    for (size_t i = 0; i < SHA256_CBLOCK; i++)
        block[i] ^= 0x36;
    SHA256_Init(&st->inner);
    SHA256_Update(&st->inner, block, SHA256_CBLOCK);
    for (size_t i = 0; i < SHA256_CBLOCK; i++)
        block[i] ^= 0x36 ^ 0x5c;
    SHA256_Init(&st->outer);
    SHA256_Update(&st->outer, block, SHA256_CBLOCK);
    sx_wipe(block, sizeof block);
    sx_wipe(hashed, sizeof hashed);
}

static void hmac_final(const hmac_state *keyed, SHA256_CTX *inner, uint8_t out[32])
{
    SHA256_CTX outer = keyed->outer;
    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256_Final(digest, inner);
    SHA256_Update(&outer, digest, sizeof digest);
    SHA256_Final(out, &outer);
    sx_wipe(&outer, sizeof outer);
    sx_wipe(digest, sizeof digest);
}

void sx_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t len,
                    uint8_t out[32])
{
    hmac_state st;
    hmac_key(&st, key, key_len);
    SHA256_CTX inner = st.inner;
    SHA256_Update(&inner, msg, len);
    hmac_final(&st, &inner, out);
    sx_wipe(&st, sizeof st);
    sx_wipe(&inner, sizeof inner);
}

void sx_hkdf_expand(const uint8_t *prk, size_t prk_len, const uint8_t *info, size_t info_len,
                    uint8_t *out, size_t out_len)
{
    hmac_state st;
    uint8_t t[32];
    size_t t_len = 0;
    hmac_key(&st, prk, prk_len);
    for (uint8_t counter = 1; out_len > 0; counter++) {
        SHA256_CTX inner = st.inner;
        SHA256_Update(&inner, t, t_len);
        SHA256_Update(&inner, info, info_len);
        SHA256_Update(&inner, &counter, 1);
        hmac_final(&st, &inner, t);
        t_len = sizeof t;
        size_t take = out_len < t_len ? out_len : t_len;
        memcpy(out, t, take);
        out += take;
        out_len -= take;
        sx_wipe(&inner, sizeof inner);
    }
    sx_wipe(&st, sizeof st);
    sx_wipe(t, sizeof t);
}

void sx_kdf(const uint8_t shared_secret[32], sx_packet_keys *keys)
{
    sx_hkdf_expand(shared_secret, 32, KDF_INFO, KDF_INFO_LEN, (uint8_t *)keys, SX_KDF_LEN);
}

/* ---------------------------------------------------------------- AES-128-CTR */

int sx_aes128_ctr(const uint8_t key[16], const uint8_t iv[16], const uint8_t *in, uint8_t *out,
                  size_t len)
{
    int rc = -1, out_len = 0;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx != NULL && EVP_EncryptInit_ex2(ctx, cipher_aes128_ctr, key, iv, NULL) > 0 &&
        EVP_EncryptUpdate(ctx, out, &out_len, in, (int)len) > 0 && (size_t)out_len == len)
        rc = 0;
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

/* ---------------------------------------------------------------- unwrap */

static int ct_is_zero(const uint8_t *a, size_t len)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < len; i++)
        acc |= a[i];
    return acc == 0;
}

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

static int authenticate(const uint8_t *keys, size_t n_keys, const uint8_t *pkt,
                        sx_packet_keys *pk, sx_unwrap_result *res)
{
    const uint8_t *alpha = pkt + SX_ALPHA_OFF;
    for (size_t k = 0; k < n_keys; k++) {
        uint8_t secret[32], mac[32];
        if (sx_x25519(secret, keys + 32 * k, alpha) != 0)
            return SX_ERR_INTERNAL;
        sx_kdf(secret, pk);
        sx_wipe(secret, sizeof secret);
        sx_hmac_sha256(pk->header_mac, sizeof pk->header_mac, pkt, SX_GAMMA_OFF, mac);
        if (ct_equal(mac, pkt + SX_GAMMA_OFF, SX_MAC_LEN)) {
            res->key_index = (int8_t)k;
            return SX_OK;
        }
    }
    return SX_ERR_MAC_MISMATCH;
}

static int unwrap_authenticated(uint8_t *pkt, size_t len, const sx_packet_keys *pk,
                                sx_unwrap_result *res)
{
    uint8_t beta[SX_BETA_LEN + SX_SLOT_LEN];
    const uint8_t *next_mac = NULL;
    memcpy(beta, pkt + SX_BETA_OFF, SX_BETA_LEN);
    memset(beta + SX_BETA_LEN, 0, SX_SLOT_LEN);
    if (sx_aes128_ctr(pk->header_key, pk->header_iv, beta, beta, sizeof beta) != 0)
        return SX_ERR_INTERNAL;
    memcpy(res->slot, beta, SX_SLOT_LEN);
    int status = parse_slot(beta, res, &next_mac);
    if (status != SX_OK)
        return status;

    size_t payload_len = len - SX_HEADER_LEN;
    uint8_t *payload = pkt + SX_HEADER_LEN;
    if (payload_len > 0) {
        aez_ctx sprp;
        aez_setup(&sprp, pk->payload_key, SX_SPRP_KEY_LEN);
        aez_decrypt(&sprp, pk->header_iv, SX_SPRP_IV_LEN, NULL, NULL, 0, 0, payload, payload_len,
                    payload);
        aez_wipe(&sprp);
    }
    if (res->flags & SX_FLAG_NEXT_HOP) {
        uint8_t next_alpha[32];
        if (sx_x25519(next_alpha, pk->blinding, pkt + SX_ALPHA_OFF) != 0)
            return SX_ERR_INTERNAL;
        memcpy(pkt + SX_ALPHA_OFF, next_alpha, SX_GE_LEN);
        memcpy(pkt + SX_BETA_OFF, beta + SX_SLOT_LEN, SX_BETA_LEN);
        memcpy(pkt + SX_GAMMA_OFF, next_mac, SX_MAC_LEN);
        return SX_OK;
    }
    if (payload_len < SX_TAG_LEN)
        return SX_ERR_TRUNCATED_PAYLOAD;
    if (!(res->flags & SX_FLAG_SURB_REPLY) && !ct_is_zero(payload, SX_TAG_LEN))
        return SX_ERR_PAYLOAD_AUTH;
    return SX_OK;
}

int sx_unwrap(const uint8_t *keys, size_t n_keys, uint8_t *pkt, size_t len,
              sx_unwrap_result *res)
{
    sx_packet_keys pk;
    memset(res, 0, sizeof *res);
    res->key_index = -1;
    if (len < SX_HEADER_LEN)
        return res->status = SX_ERR_TRUNCATED;
    if (pkt[0] != 0 || pkt[1] != 0)
        return res->status = SX_ERR_UNKNOWN_VERSION;
    if (sx_sha512_256(pkt + SX_ALPHA_OFF, SX_GE_LEN, res->tag) != 0)
        return res->status = SX_ERR_INTERNAL;
    res->has_tag = 1;
    int status = authenticate(keys, n_keys, pkt, &pk, res);
    if (status == SX_OK)
        status = unwrap_authenticated(pkt, len, &pk, res);
    sx_wipe(&pk, sizeof pk);
    return res->status = status;
}

/* ---------------------------------------------------------------- creation */

static const uint8_t BASE_POINT[32] = {9};

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

/* Per-hop secrets, keys and (cumulatively blinded) group elements (spec 5.1 step 2). */
static int derive_hop_keys(header_state *st, const uint8_t ephemeral[32], size_t n_hops,
                           const uint8_t *public_keys)
{
    uint8_t secret[32];
    int rc = SX_ERR_INTERNAL;
    if (sx_x25519(st->alphas[0], ephemeral, BASE_POINT) != 0)
        goto out;
    for (size_t i = 0; i < n_hops; i++) {
        if (sx_x25519(secret, ephemeral, public_keys + SX_GE_LEN * i) != 0)
            goto out;
        for (size_t j = 0; j < i; j++)
            if (sx_x25519(secret, st->keys[j].blinding, secret) != 0)
                goto out;
        sx_kdf(secret, &st->keys[i]);
        if (i > 0 && sx_x25519(st->alphas[i], st->keys[i - 1].blinding, st->alphas[i - 1]) != 0)
            goto out;
    }
    rc = SX_OK;
out:
    sx_wipe(secret, sizeof secret);
    return rc;
}

/* Keystreams and the filler phi_i (spec 5.1 step 3). */
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

/* Routing information, built backwards (spec 5.1 step 4); beta of hop i lives at
 * beta[i * 82 : 410]. Leaves gamma_0 in gamma. */
static void build_routing(const header_state *st, size_t n_hops, const uint8_t *ids,
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
        sx_hmac_sha256(st->keys[i].header_mac, sizeof st->keys[i].header_mac, mac_input,
                       sizeof mac_input, mac);
        memcpy(gamma, mac, SX_MAC_LEN);
    }
}

int sx_create_header(const uint8_t ephemeral[32], size_t n_hops, const uint8_t *ids,
                     const uint8_t *public_keys, const uint8_t *blocks,
                     const size_t *block_lens, const uint8_t *filler, uint8_t *header,
                     uint8_t *sprp_keys)
{
    header_state st;
    uint8_t beta[SX_BETA_LEN], gamma[SX_MAC_LEN];
    int rc = check_blocks(n_hops, block_lens);
    if (rc != SX_OK)
        return rc;
    rc = derive_hop_keys(&st, ephemeral, n_hops, public_keys);
    if (rc == SX_OK)
        rc = derive_streams(&st, n_hops);
    if (rc == SX_OK) {
        build_routing(&st, n_hops, ids, blocks, block_lens, filler, beta, gamma);
        header[0] = header[1] = 0;
        memcpy(header + SX_ALPHA_OFF, st.alphas[0], SX_GE_LEN);
        memcpy(header + SX_BETA_OFF, beta, SX_BETA_LEN);
        memcpy(header + SX_GAMMA_OFF, gamma, SX_MAC_LEN);
        for (size_t i = 0; i < n_hops; i++) {
            uint8_t *material = sprp_keys + SX_SPRP_MATERIAL_LEN * i;
            memcpy(material, st.keys[i].payload_key, SX_SPRP_KEY_LEN);
            memcpy(material + SX_SPRP_KEY_LEN, st.keys[i].header_iv, SX_SPRP_IV_LEN);
        }
    }
    sx_wipe(&st, sizeof st);
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
