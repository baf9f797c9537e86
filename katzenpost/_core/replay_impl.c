/* Keyed Bloom filter kernel (see replay_impl.h). The batch is processed in small groups: all
 * bit indexes of a group are computed and prefetched first, then the test-and-set runs in row
 * order, so duplicates inside one batch are still detected (the later row sees the earlier one). */
#include "replay_impl.h"

#include <string.h>

#define ROTL64(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

#define SIPROUND                                                                    \
    do {                                                                            \
        v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32);               \
        v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;                                    \
        v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;                                    \
        v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32);               \
    } while (0)

static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline void store_le64(uint8_t *p, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, 8);
}

/* Core of SipHash-2-4-128; returns the two output words. */
static inline void siphash128_words(uint64_t k0, uint64_t k1, const uint8_t *in, size_t in_len,
                                    uint64_t *h1, uint64_t *h2)
{
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0;
    uint64_t v1 = 0x646f72616e646f6dULL ^ k1 ^ 0xee;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0;
    uint64_t v3 = 0x7465646279746573ULL ^ k1;
    size_t full = in_len & ~(size_t)7;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = load_le64(in + i);
        v3 ^= m;
        SIPROUND; SIPROUND;
        v0 ^= m;
    }
    uint64_t last = (uint64_t)in_len << 56;
    for (size_t i = 0; i < (in_len & 7); i++)
        last |= (uint64_t)in[full + i] << (8 * i);
    v3 ^= last;
    SIPROUND; SIPROUND;
    v0 ^= last;
    v2 ^= 0xee;
    SIPROUND; SIPROUND; SIPROUND; SIPROUND;
    *h1 = v0 ^ v1 ^ v2 ^ v3;
    v1 ^= 0xdd;
    SIPROUND; SIPROUND; SIPROUND; SIPROUND;
    *h2 = v0 ^ v1 ^ v2 ^ v3;
}

void replay_siphash24_128(const uint8_t key[16], const uint8_t *in, size_t in_len, uint8_t out[16])
{
    uint64_t h1, h2;
    siphash128_words(load_le64(key), load_le64(key + 8), in, in_len, &h1, &h2);
    store_le64(out, h1);
    store_le64(out + 8, h2);
}

/* Map a 64-bit value uniformly onto [0, m) without division (multiply-high). */
static inline uint64_t reduce_range(uint64_t x, uint64_t m)
{
    return (uint64_t)(((unsigned __int128)x * m) >> 64);
}

/* Double hashing: probe i is h1 + i*h2 (mod 2^64), reduced to [0, m). */
static inline void tag_indexes(uint64_t k0, uint64_t k1, uint64_t m_bits, uint32_t k_probes,
                               const uint8_t *tag, uint64_t *idx)
{
    uint64_t h1, h2;
    siphash128_words(k0, k1, tag, REPLAY_TAG_LEN, &h1, &h2);
    for (uint32_t j = 0; j < k_probes; j++)
        idx[j] = reduce_range(h1 + (uint64_t)j * h2, m_bits);
}

void replay_bloom_indexes(uint64_t m_bits, uint32_t k_probes, const uint8_t key[16],
                          const uint8_t *tag, uint64_t *idx_out)
{
    tag_indexes(load_le64(key), load_le64(key + 8), m_bits, k_probes, tag, idx_out);
}

/* Rows hashed and prefetched one group ahead of the test-and-set (double buffering), so the hash
 * work of the next group overlaps the cache misses of the current one. */
#ifndef REPLAY_GROUP
#define REPLAY_GROUP 4
#endif
#define GROUP REPLAY_GROUP
#define MAX_PROBES 64

size_t replay_bloom_check_and_add(uint64_t *bits, uint64_t m_bits, uint32_t k_probes,
                                  const uint8_t key[16], const uint8_t *tags, size_t n,
                                  const uint8_t *mask, uint8_t *out, uint64_t *added_out)
{
    uint64_t k0 = load_le64(key), k1 = load_le64(key + 8);
    uint64_t idx[2][GROUP][MAX_PROBES];
    size_t present_total = 0;
    uint64_t added = 0;
    int cur = 0;
    size_t first = n < GROUP ? n : GROUP;
    for (size_t g = 0; g < first; g++) {
        if (mask && !mask[g])
            continue;
        tag_indexes(k0, k1, m_bits, k_probes, tags + g * REPLAY_TAG_LEN, idx[cur][g]);
        for (uint32_t j = 0; j < k_probes; j++)
            __builtin_prefetch(&bits[idx[cur][g][j] >> 6], 1, 0);
    }
    for (size_t base = 0; base < n; base += GROUP) {
        size_t group = n - base < GROUP ? n - base : GROUP;
        size_t next_base = base + GROUP;
        size_t next_group = next_base >= n ? 0 : (n - next_base < GROUP ? n - next_base : GROUP);
        for (size_t g = 0; g < next_group; g++) {
            size_t row = next_base + g;
            if (mask && !mask[row])
                continue;
            tag_indexes(k0, k1, m_bits, k_probes, tags + row * REPLAY_TAG_LEN, idx[cur ^ 1][g]);
            for (uint32_t j = 0; j < k_probes; j++)
                __builtin_prefetch(&bits[idx[cur ^ 1][g][j] >> 6], 1, 0);
        }
        for (size_t g = 0; g < group; g++) {
            size_t row = base + g;
            if (mask && !mask[row])
                continue;
            uint64_t all_set = 1;
            for (uint32_t j = 0; j < k_probes; j++) {
                uint64_t word = idx[cur][g][j] >> 6, bit = 1ULL << (idx[cur][g][j] & 63);
                uint64_t old = bits[word];
                all_set &= (old & bit) != 0;
                if (!(old & bit))   /* write only on change: a set bit never dirties its page */
                    bits[word] = old | bit;
            }
            out[row] = (uint8_t)all_set;
            present_total += all_set;
            added += !all_set;
        }
        cur ^= 1;
    }
    if (added_out)
        *added_out = added;
    return present_total;
}

size_t replay_bloom_contains(const uint64_t *bits, uint64_t m_bits, uint32_t k_probes,
                             const uint8_t key[16], const uint8_t *tags, size_t n, uint8_t *out)
{
    uint64_t k0 = load_le64(key), k1 = load_le64(key + 8);
    uint64_t idx[GROUP][MAX_PROBES];
    size_t present_total = 0;
    for (size_t base = 0; base < n; base += GROUP) {
        size_t group = n - base < GROUP ? n - base : GROUP;
        for (size_t g = 0; g < group; g++) {
            tag_indexes(k0, k1, m_bits, k_probes, tags + (base + g) * REPLAY_TAG_LEN, idx[g]);
            for (uint32_t j = 0; j < k_probes; j++)
                __builtin_prefetch(&bits[idx[g][j] >> 6], 0, 0);
        }
        for (size_t g = 0; g < group; g++) {
            uint64_t all_set = 1;
            for (uint32_t j = 0; j < k_probes; j++)
                all_set &= (bits[idx[g][j] >> 6] >> (idx[g][j] & 63)) & 1;
            out[base + g] = (uint8_t)all_set;
            present_total += all_set;
        }
    }
    return present_total;
}
