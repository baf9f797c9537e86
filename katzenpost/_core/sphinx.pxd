# C-level interface of the Sphinx core (sphinx_impl.h), for this module and any Cython caller.
from libc.stdint cimport uint8_t, int8_t, int32_t, uint32_t

cdef extern from "sphinx_impl.h" nogil:
    enum:
        SX_GE_LEN
        SX_NODE_ID_LEN
        SX_RECIPIENT_ID_LEN
        SX_SURB_ID_LEN
        SX_MAC_LEN
        SX_AD_LEN
        SX_ALPHA_OFF
        SX_BETA_OFF
        SX_GAMMA_OFF
        SX_SPRP_KEY_LEN
        SX_SPRP_IV_LEN
        SX_NEXT_NODE_LEN
        SX_RECIPIENT_LEN
        SX_SURB_REPLY_LEN
        SX_NODE_DELAY_LEN
        SX_CMD_NULL
        SX_CMD_NEXT_NODE
        SX_CMD_RECIPIENT
        SX_CMD_SURB_REPLY
        SX_CMD_NODE_DELAY
        SX_ERR_TRUNCATED
        SX_ERR_UNKNOWN_VERSION
        SX_ERR_MAC_MISMATCH
        SX_ERR_INVALID_COMMAND
        SX_ERR_DUP_NEXT_NODE
        SX_ERR_DUP_SURB_REPLY
        SX_ERR_TRUNCATED_PAYLOAD
        SX_FLAG_NEXT_HOP
        SX_FLAG_RECIPIENT
        SX_FLAG_SURB_REPLY
        SX_FLAG_NODE_DELAY
        SX_FLAG_DUPLICATE
        SX_HEADER_LEN
        SX_SLOT_LEN
        SX_BETA_LEN
        SX_NR_HOPS
        SX_SPRP_MATERIAL_LEN
        SX_TAG_LEN
        SX_KDF_LEN
        SX_MAX_KEYS
        SX_OK
        SX_ERR_INTERNAL
        SX_ERR_BAD_ARGUMENT
        SX_ERR_PAYLOAD_AUTH
        SX_X25519_OPENSSL
        SX_X25519_LIBSODIUM
        SX_X25519_IFMA
        SX_LANES

    ctypedef struct sx_packet_keys:
        uint8_t header_mac[32]
        uint8_t header_key[16]
        uint8_t header_iv[16]
        uint8_t payload_key[48]
        uint8_t blinding[32]

    ctypedef struct sx_unwrap_result:
        int32_t status
        int8_t key_index
        uint8_t flags
        uint8_t has_tag
        uint32_t delay_ms
        uint8_t tag[32]
        uint8_t next_hop[32]
        uint8_t recipient[64]
        uint8_t surb_id[16]
        uint8_t slot[82]

    ctypedef struct sx_header_request:
        uint8_t ephemeral[32]
        size_t n_hops
        size_t block_lens[5]
        uint8_t ids[160]
        uint8_t public_keys[160]
        uint8_t blocks[410]
        uint8_t filler[410]

    int sx_init()
    int sx_load_ifma(const char *library, const char *const *runtime, size_t n_runtime)
    int sx_x25519_backend()
    int sx_x25519_available(int backend)
    int sx_set_x25519_backend(int backend)
    int sx_probe_libsodium(const char *name)
    void sx_wipe(void *buf, size_t length)
    int sx_x25519(uint8_t *out, const uint8_t *scalar, const uint8_t *point)
    int sx_x25519_lanes(uint8_t *const *out, const uint8_t *const *scalar,
                        const uint8_t *const *point)
    int sx_sha512_256(const uint8_t *msg, size_t length, uint8_t *out)
    int sx_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t length,
                       uint8_t *out)
    int sx_hkdf_expand(const uint8_t *prk, size_t prk_len, const uint8_t *info, size_t info_len,
                       uint8_t *out, size_t out_len)
    int sx_kdf(const uint8_t *shared_secret, sx_packet_keys *keys)
    int sx_aes128_ctr(const uint8_t *key, const uint8_t *iv, const uint8_t *inp, uint8_t *out,
                      size_t length)
    int sx_unwrap(const uint8_t *keys, size_t n_keys, uint8_t *pkt, size_t length,
                  sx_unwrap_result *res)
    int sx_unwrap_group(const uint8_t *keys, size_t n_keys, uint8_t *const *pkts, size_t count,
                        size_t length, sx_unwrap_result *res)
    int sx_create_header_group(const sx_header_request *req, size_t count, uint8_t *headers,
                               uint8_t *sprp_keys, int *status)
    int sx_create_header(const uint8_t *ephemeral, size_t n_hops, const uint8_t *ids,
                         const uint8_t *public_keys, const uint8_t *blocks,
                         const size_t *block_lens, const uint8_t *filler, uint8_t *header,
                         uint8_t *sprp_keys)
    void sx_encrypt_payload(const uint8_t *sprp_keys, size_t n_hops, const uint8_t *payload,
                            size_t payload_len, uint8_t *out)
    int sx_decrypt_surb_payload(const uint8_t *keys, size_t n_entries, uint8_t *buf, size_t length)

cdef extern from "aez_impl.h" nogil:
    # The AES-round backend of the AEZ copy linked into this extension (tests and benchmarks).
    enum:
        AEZ_BACKEND_PORTABLE
        AEZ_BACKEND_AESNI
    int aez_set_backend(int backend)
    int aez_backend_c "aez_backend"()

cdef extern from "x25519_mb_impl.h" nogil:
    # Why the lane backend's library was refused (XMB_OK: loaded and self-tested).
    enum:
        XMB_OK
        XMB_NO_CPU_FEATURE
        XMB_NOT_FOUND
        XMB_NO_SYMBOL
        XMB_SELF_TEST
    int xmb_cpu_has_ifma()
    int xmb_probe(const char *library, const char *const *runtime, size_t n_runtime)
