/* Katzenpost Sphinx (2021 suite, the Katzenpost Sphinx specification) in C: unwrap, header
 * and packet creation, and the primitives they use (X25519, SHA-512/256, HMAC-SHA256,
 * HKDF-SHA256, AES-128-CTR from OpenSSL libcrypto; AEZ v5 from aez_impl.c; X25519 also from
 * libsodium or, eight lanes at a time, libcrypto_mb). Pure functions on caller buffers: no
 * Python, no I/O, no logging; safe to call without the GIL from many threads once sx_init()
 * (and, for the lane backend, sx_load_ifma()) has returned. */
#ifndef KATZENPOST_SPHINX_IMPL_H
#define KATZENPOST_SPHINX_IMPL_H

#include <stddef.h>
#include <stdint.h>

/* Geometry (mirrors katzenpost/sphinx/geometry.py; the Cython module checks they agree). */
#define SX_GE_LEN 32
#define SX_NODE_ID_LEN 32
#define SX_RECIPIENT_ID_LEN 64
#define SX_SURB_ID_LEN 16
#define SX_MAC_LEN 16
#define SX_AD_LEN 2
#define SX_NR_HOPS 5
#define SX_SLOT_LEN 82                     /* per-hop routing info */
#define SX_BETA_LEN (SX_NR_HOPS * SX_SLOT_LEN) /* 410 */
#define SX_ALPHA_OFF SX_AD_LEN              /* 2 */
#define SX_BETA_OFF (SX_ALPHA_OFF + SX_GE_LEN) /* 34 */
#define SX_GAMMA_OFF (SX_BETA_OFF + SX_BETA_LEN) /* 444 */
#define SX_HEADER_LEN (SX_GAMMA_OFF + SX_MAC_LEN) /* 460 */
#define SX_TAG_LEN 16                       /* all-zero payload tag */
#define SX_SPRP_KEY_LEN 48
#define SX_SPRP_IV_LEN 16
#define SX_SPRP_MATERIAL_LEN (SX_SPRP_KEY_LEN + SX_SPRP_IV_LEN) /* 64 */
#define SX_KDF_LEN 144
#define SX_MAX_KEYS 3
#define SX_LANES 8 /* packets per group of the batch paths (X25519 lanes) */

/* Routing command ids and lengths (including the id byte). */
#define SX_CMD_NULL 0x00
#define SX_CMD_NEXT_NODE 0x01
#define SX_CMD_RECIPIENT 0x02
#define SX_CMD_SURB_REPLY 0x03
#define SX_CMD_NODE_DELAY 0x80
#define SX_NEXT_NODE_LEN 49
#define SX_RECIPIENT_LEN 65
#define SX_SURB_REPLY_LEN 17
#define SX_NODE_DELAY_LEN 5

/* Status codes (katzenpost/sphinx/errors.py maps them to the reference's messages). */
#define SX_OK 0
#define SX_ERR_TRUNCATED 1
#define SX_ERR_UNKNOWN_VERSION 2
#define SX_ERR_MAC_MISMATCH 3
#define SX_ERR_INVALID_COMMAND 4
#define SX_ERR_DUP_NEXT_NODE 5
#define SX_ERR_DUP_SURB_REPLY 6
#define SX_ERR_TRUNCATED_PAYLOAD 7
#define SX_ERR_PAYLOAD_AUTH 8
#define SX_ERR_INTERNAL 9      /* OpenSSL failed (out of memory): never a property of the packet */
#define SX_ERR_BAD_ARGUMENT 10 /* creation called with an impossible path or command block */

/* Flags of an unwrap result (interfaces.md "Sphinx batch unwrap"). */
#define SX_FLAG_NEXT_HOP 1
#define SX_FLAG_RECIPIENT 2
#define SX_FLAG_SURB_REPLY 4
#define SX_FLAG_NODE_DELAY 8
#define SX_FLAG_DUPLICATE 16

/* X25519 backends. */
#define SX_X25519_OPENSSL 1   /* EVP_PKEY_derive */
#define SX_X25519_LIBSODIUM 2 /* crypto_scalarmult of the system libsodium, if present */
#define SX_X25519_IFMA 3      /* groups: libcrypto_mb's eight lanes; lone operations: the best
                                 scalar backend (libsodium, else OpenSSL) */

/* KDF output split (the Sphinx Packet Format Specification, key derivation); exactly the 144 OKM bytes in order. */
typedef struct {
    uint8_t header_mac[32];
    uint8_t header_key[16];
    uint8_t header_iv[16];
    uint8_t payload_key[48];
    uint8_t blinding[32];
} sx_packet_keys;

typedef struct {
    int32_t status;
    int8_t key_index;         /* which trial key authenticated the header, -1 if none */
    uint8_t flags;
    uint8_t has_tag;          /* replay tag valid (every error after the version check) */
    uint32_t delay_ms;        /* first NodeDelay */
    uint8_t tag[32];
    uint8_t next_hop[SX_NODE_ID_LEN];
    uint8_t recipient[SX_RECIPIENT_ID_LEN];
    uint8_t surb_id[SX_SURB_ID_LEN];
    uint8_t slot[SX_SLOT_LEN]; /* the decrypted routing slot (for command lists) */
} sx_unwrap_result;

/* One creation of sx_create_header_group: the inputs of sx_create_header in fixed-size
 * fields (only the first n_hops entries, and (5 - n_hops) * 82 filler bytes, are read). */
typedef struct {
    uint8_t ephemeral[32];
    size_t n_hops;
    size_t block_lens[SX_NR_HOPS];
    uint8_t ids[SX_NR_HOPS * SX_NODE_ID_LEN];
    uint8_t public_keys[SX_NR_HOPS * SX_GE_LEN];
    uint8_t blocks[SX_NR_HOPS * SX_SLOT_LEN];
    uint8_t filler[SX_BETA_LEN];
} sx_header_request;

/* One-time setup (fetch the OpenSSL algorithms, load libsodium if present and pick the
 * X25519 backend); runs once per process whoever calls it (pthread_once). 0 ok, -1 fail. */
int sx_init(void);
/* Loads libcrypto_mb for the lane backend (see xmb_load in x25519_mb_impl.h for the
 * arguments and the XMB_* result); does not select it. Call once, at import. */
int sx_load_ifma(const char *library, const char *const *runtime, size_t n_runtime);
int sx_x25519_backend(void);
int sx_x25519_available(int backend);   /* 1 if the backend can be used */
int sx_set_x25519_backend(int backend); /* tests and benchmarks: 0 ok, -1 if unavailable */
/* 1 if the shared library `name` loads, has sodium_init and crypto_scalarmult_curve25519
 * and initialises; the library is closed again (tests of the loader). */
int sx_probe_libsodium(const char *name);

/* Zeroes a buffer of secrets in a way the compiler may not elide. */
void sx_wipe(void *buf, size_t len);

/* Primitives. Each returns 0, or -1 if OpenSSL failed (allocation). */
int sx_x25519(uint8_t out[32], const uint8_t scalar[32], const uint8_t point[32]);
/* out[i] = X25519(scalar[i], point[i]) for the lanes with a non-NULL out[i] (scalar[i] and
 * point[i] must then be set; out[i] may alias point[i]): one eight-lane pass under the lane
 * backend when two or more lanes run, else one scalar X25519 per lane. */
int sx_x25519_lanes(uint8_t *const out[SX_LANES], const uint8_t *const scalar[SX_LANES],
                    const uint8_t *const point[SX_LANES]);
int sx_sha512_256(const uint8_t *msg, size_t len, uint8_t out[32]);
int sx_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t len,
                   uint8_t out[32]);
int sx_hkdf_expand(const uint8_t *prk, size_t prk_len, const uint8_t *info, size_t info_len,
                   uint8_t *out, size_t out_len); /* out_len <= 255 * 32 */
int sx_kdf(const uint8_t *shared_secret /* 32 bytes */, sx_packet_keys *keys);
int sx_aes128_ctr(const uint8_t key[16], const uint8_t iv[16], const uint8_t *in,
                  uint8_t *out, size_t len);

/* Unwrap pkt (len bytes) in place with the first of n_keys 32-byte private keys whose header
 * MAC matches. Returns res->status. Forward: pkt becomes the packet for the next hop.
 * Terminal: pkt[460:] holds the decrypted payload (tag checked unless SURB reply). */
int sx_unwrap(const uint8_t *keys, size_t n_keys, uint8_t *pkt, size_t len,
              sx_unwrap_result *res);

/* sx_unwrap of count <= SX_LANES packets of len bytes each, res[i] for pkts[i], with the
 * same results packet by packet; the X25519s run in lanes: first every packet's secret
 * under key 0, then under key 1 for those whose MAC failed, ..., then the blindings of the
 * forward packets. Returns 0, or -1 if count > SX_LANES. */
int sx_unwrap_group(const uint8_t *keys, size_t n_keys, uint8_t *const pkts[], size_t count,
                    size_t len, sx_unwrap_result *res);

/* Header creation (the Sphinx Packet Format Specification). blocks: n_hops * 82 bytes of serialized user commands,
 * zero-padded, block_lens their lengths; ids and public_keys n_hops * 32 bytes; filler
 * (5 - n_hops) * 82 bytes. Writes the 460-byte header and n_hops * 64 bytes of per-hop SPRP
 * key material (key 48 || iv 16), hop order. */
int sx_create_header(const uint8_t ephemeral[32], size_t n_hops, const uint8_t *ids,
                     const uint8_t *public_keys, const uint8_t *blocks,
                     const size_t *block_lens, const uint8_t *filler, uint8_t *header,
                     uint8_t *sprp_keys);

/* sx_create_header for count <= SX_LANES requests, their X25519 steps in lanes. Writes
 * count * 460 header bytes and count * 5 * 64 bytes of SPRP key material (n_hops entries
 * used per request); status[i] is each request's code. Returns SX_OK or the first error. */
int sx_create_header_group(const sx_header_request *req, size_t count, uint8_t *headers,
                           uint8_t *sprp_keys, int *status);

/* AEZ layering of the payload: out[0:16] = 0, out[16:] = payload, then encrypt with the
 * per-hop keys, last hop first. out holds 16 + payload_len bytes. */
void sx_encrypt_payload(const uint8_t *sprp_keys, size_t n_hops, const uint8_t *payload,
                        size_t payload_len, uint8_t *out);

/* SURB payload decryption (the Sphinx Packet Format Specification) in place over buf (len >= 16); keys n_entries * 64.
 * Returns SX_OK or SX_ERR_PAYLOAD_AUTH; the plaintext is buf[16:]. */
int sx_decrypt_surb_payload(const uint8_t *keys, size_t n_entries, uint8_t *buf, size_t len);

#endif /* KATZENPOST_SPHINX_IMPL_H */
