/* Katzenpost Sphinx in C (see sphinx_impl.h). The primitives come from OpenSSL libcrypto;
 * X25519 uses libsodium's crypto_scalarmult when the system library is present (chosen by
 * measurement: OpenSSL 3.0's EVP path costs a key object per call, see bench/bench_sphinx.py),
 * otherwise OpenSSL's EVP_PKEY_derive. Nothing here holds per-call global state. */
#define OPENSSL_SUPPRESS_DEPRECATED 1 /* SHA256_* low-level: HMAC states are copied, not re-keyed */

#include "sphinx_impl.h"
#include "aez_impl.h"

#include <dlfcn.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/sha.h>

static const uint8_t KDF_INFO[] = "katzenpost-kdf-v0-hkdf-sha256";
#define KDF_INFO_LEN (sizeof(KDF_INFO) - 1)

static EVP_MD *md_sha512_256;
static EVP_CIPHER *cipher_aes128_ctr;

typedef int (*scalarmult_fn)(unsigned char *, const unsigned char *, const unsigned char *);
static scalarmult_fn sodium_scalarmult;
static int x25519_backend = SX_X25519_OPENSSL;

/* ---------------------------------------------------------------- setup */

static void load_libsodium(void)
{
    static const char *const names[] = {"libsodium.so.23", "libsodium.so.26", "libsodium.so"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        void *lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (lib == NULL)
            continue;
        int (*sodium_init)(void) = (int (*)(void))dlsym(lib, "sodium_init");
        scalarmult_fn fn = (scalarmult_fn)dlsym(lib, "crypto_scalarmult_curve25519");
        /* sodium_init picks the fastest implementation for this CPU; < 0 means failure. */
        if (sodium_init != NULL && fn != NULL && sodium_init() >= 0) {
            sodium_scalarmult = fn;
            return; /* the library stays loaded for the life of the process */
        }
        dlclose(lib);
    }
}

int sx_init(void)
{
    if (md_sha512_256 == NULL)
        md_sha512_256 = EVP_MD_fetch(NULL, "SHA512-256", NULL);
    if (cipher_aes128_ctr == NULL)
        cipher_aes128_ctr = EVP_CIPHER_fetch(NULL, "AES-128-CTR", NULL);
    if (md_sha512_256 == NULL || cipher_aes128_ctr == NULL)
        return -1;
    if (sodium_scalarmult == NULL)
        load_libsodium();
    x25519_backend = sodium_scalarmult != NULL ? SX_X25519_LIBSODIUM : SX_X25519_OPENSSL;
    return 0;
}

int sx_x25519_backend(void) { return x25519_backend; }

int sx_set_x25519_backend(int backend)
{
    if (backend == SX_X25519_LIBSODIUM && sodium_scalarmult == NULL)
        return -1;
    if (backend != SX_X25519_LIBSODIUM && backend != SX_X25519_OPENSSL)
        return -1;
    x25519_backend = backend;
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
        /* OpenSSL refuses an all-zero result (low-order point); Go returns the zeros. */
        if (EVP_PKEY_derive(ctx, out, &out_len) <= 0 || out_len != 32)
            memset(out, 0, 32);
    }
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(peer);
    EVP_PKEY_free(priv);
    return rc;
}

int sx_x25519(uint8_t out[32], const uint8_t scalar[32], const uint8_t point[32])
{
    if (x25519_backend == SX_X25519_LIBSODIUM) {
        uint8_t tmp[32];
        /* libsodium returns -1 for a low-order point; Go's ScalarMult yields zeros. */
        if (sodium_scalarmult(tmp, scalar, point) != 0)
            memset(tmp, 0, 32);
        memcpy(out, tmp, 32);
        return 0;
    }
    uint8_t tmp[32];
    int rc = x25519_openssl(tmp, scalar, point);
    memcpy(out, tmp, 32);
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
}

static void hmac_final(const hmac_state *keyed, SHA256_CTX *inner, uint8_t out[32])
{
    SHA256_CTX outer = keyed->outer;
    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256_Final(digest, inner);
    SHA256_Update(&outer, digest, sizeof digest);
    SHA256_Final(out, &outer);
}

void sx_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t len,
                    uint8_t out[32])
{
    hmac_state st;
    hmac_key(&st, key, key_len);
    SHA256_CTX inner = st.inner;
    SHA256_Update(&inner, msg, len);
    hmac_final(&st, &inner, out);
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
    }
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

/* Parse the decrypted slot as the reference does: first the whole slot must be valid
 * commands, then the first repeated NextNodeHop / SURBReply (wire order) is an error. */
static int parse_slot(const uint8_t *slot, sx_unwrap_result *res, const uint8_t **next_mac)
{
    int duplicate_error = SX_OK;
    size_t off = 0;
    while (off < SX_SLOT_LEN) {
        const uint8_t *cmd = slot + off;
        size_t remaining = SX_SLOT_LEN - off, need;
        uint8_t flag;
        switch (cmd[0]) {
        case SX_CMD_NULL:
            return ct_is_zero(cmd + 1, remaining - 1) ? duplicate_error : SX_ERR_INVALID_COMMAND;
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
            if (duplicate_error == SX_OK && flag == SX_FLAG_NEXT_HOP)
                duplicate_error = SX_ERR_DUP_NEXT_NODE;
            if (duplicate_error == SX_OK && flag == SX_FLAG_SURB_REPLY)
                duplicate_error = SX_ERR_DUP_SURB_REPLY;
        } else {
            res->flags |= flag;
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
        off += need;
    }
    return duplicate_error;
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
        memset(secret, 0, sizeof secret);
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
    memset(&pk, 0, sizeof pk);
    return res->status = status;
}

/* ---------------------------------------------------------------- creation */

static const uint8_t BASE_POINT[32] = {9};

int sx_create_header(const uint8_t ephemeral[32], size_t n_hops, const uint8_t *ids,
                     const uint8_t *public_keys, const uint8_t *blocks,
                     const size_t *block_lens, const uint8_t *filler, uint8_t *header,
                     uint8_t *sprp_keys)
{
    sx_packet_keys keys[SX_NR_HOPS];
    uint8_t alphas[SX_NR_HOPS][32];
    uint8_t streams[SX_NR_HOPS][SX_BETA_LEN + SX_SLOT_LEN];
    uint8_t fillers[SX_NR_HOPS][SX_BETA_LEN]; /* phi_i: (i + 1) * 82 bytes */
    uint8_t beta[SX_BETA_LEN], gamma[SX_MAC_LEN] = {0};
    int rc = SX_ERR_INTERNAL;

    if (n_hops < 1 || n_hops > SX_NR_HOPS)
        return SX_ERR_BAD_ARGUMENT;
    for (size_t i = 0; i < n_hops; i++) {
        size_t limit = i + 1 < n_hops ? SX_SLOT_LEN - SX_NEXT_NODE_LEN : SX_SLOT_LEN;
        if (block_lens[i] > limit)
            return SX_ERR_BAD_ARGUMENT;
    }

    /* Per-hop secrets, keys and (cumulatively blinded) group elements. */
    if (sx_x25519(alphas[0], ephemeral, BASE_POINT) != 0)
        goto out;
    for (size_t i = 0; i < n_hops; i++) {
        uint8_t secret[32];
        if (sx_x25519(secret, ephemeral, public_keys + 32 * i) != 0)
            goto out;
        for (size_t j = 0; j < i; j++)
            if (sx_x25519(secret, keys[j].blinding, secret) != 0)
                goto out;
        sx_kdf(secret, &keys[i]);
        memset(secret, 0, sizeof secret);
        if (i > 0 && sx_x25519(alphas[i], keys[i - 1].blinding, alphas[i - 1]) != 0)
            goto out;
    }

    /* Keystreams and the filler phi_i (spec 5.1 step 3). */
    for (size_t i = 0; i < n_hops; i++) {
        memset(streams[i], 0, sizeof streams[i]);
        if (sx_aes128_ctr(keys[i].header_key, keys[i].header_iv, streams[i], streams[i],
                          sizeof streams[i]) != 0)
            goto out;
        size_t ks_len = SX_BETA_LEN - i * SX_SLOT_LEN;
        memcpy(fillers[i], streams[i] + ks_len, (i + 1) * SX_SLOT_LEN);
        for (size_t b = 0; i > 0 && b < i * SX_SLOT_LEN; b++)
            fillers[i][b] ^= fillers[i - 1][b];
    }

    /* Routing information, built backwards; beta of hop i lives at beta[i * 82 : 410]. */
    if (n_hops < SX_NR_HOPS)
        memcpy(beta + n_hops * SX_SLOT_LEN, filler, (SX_NR_HOPS - n_hops) * SX_SLOT_LEN);
    for (size_t i = n_hops; i-- > 0;) {
        uint8_t *slot = beta + i * SX_SLOT_LEN;
        size_t used = block_lens[i];
        memset(slot, 0, SX_SLOT_LEN);
        memcpy(slot, blocks + i * SX_SLOT_LEN, used);
        if (i + 1 < n_hops) {
            slot[used] = SX_CMD_NEXT_NODE;
            memcpy(slot + used + 1, ids + 32 * (i + 1), SX_NODE_ID_LEN);
            memcpy(slot + used + 1 + SX_NODE_ID_LEN, gamma, SX_MAC_LEN);
        }
        size_t beta_len = SX_BETA_LEN - i * SX_SLOT_LEN;
        for (size_t b = 0; b < beta_len; b++)
            slot[b] ^= streams[i][b];
        /* gamma_i = MAC(mu_i, 00 00 || alpha_i || beta || phi_{i-1}): always 444 bytes. */
        uint8_t mac_input[SX_GAMMA_OFF], mac[32];
        mac_input[0] = mac_input[1] = 0;
        memcpy(mac_input + SX_ALPHA_OFF, alphas[i], SX_GE_LEN);
        memcpy(mac_input + SX_BETA_OFF, slot, beta_len);
        if (i > 0)
            memcpy(mac_input + SX_BETA_OFF + beta_len, fillers[i - 1], i * SX_SLOT_LEN);
        sx_hmac_sha256(keys[i].header_mac, 32, mac_input, sizeof mac_input, mac);
        memcpy(gamma, mac, SX_MAC_LEN);
    }

    header[0] = header[1] = 0;
    memcpy(header + SX_ALPHA_OFF, alphas[0], SX_GE_LEN);
    memcpy(header + SX_BETA_OFF, beta, SX_BETA_LEN);
    memcpy(header + SX_GAMMA_OFF, gamma, SX_MAC_LEN);
    for (size_t i = 0; i < n_hops; i++) {
        memcpy(sprp_keys + SX_SPRP_MATERIAL_LEN * i, keys[i].payload_key, SX_SPRP_KEY_LEN);
        memcpy(sprp_keys + SX_SPRP_MATERIAL_LEN * i + SX_SPRP_KEY_LEN, keys[i].header_iv,
               SX_SPRP_IV_LEN);
    }
    rc = SX_OK;
out:
    memset(keys, 0, sizeof keys);
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
    }
    return ct_is_zero(buf, SX_TAG_LEN) ? SX_OK : SX_ERR_PAYLOAD_AUTH;
}
