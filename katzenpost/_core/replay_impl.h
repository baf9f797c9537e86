/* Keyed Bloom filter kernel for the replay filter: SipHash-2-4-128 index hashing and a batched
 * test-and-set over a caller-owned uint64 bit array. No allocation, no I/O, no global state;
 * callers serialise writers (the Cython wrapper holds one lock per batch). */
#ifndef KATZENPOST_REPLAY_IMPL_H
#define KATZENPOST_REPLAY_IMPL_H

#include <stddef.h>
#include <stdint.h>

#define REPLAY_TAG_LEN 32

/* SipHash-2-4 with 128-bit output over any input; key is 16 bytes; out receives 16 bytes
 * (the reference byte order: two little-endian 64-bit words). */
void replay_siphash24_128(const uint8_t key[16], const uint8_t *in, size_t in_len, uint8_t out[16]);

/* Test-and-set n tags (rows of 32 bytes). Rows with mask[i] == 0 are skipped (mask may be NULL).
 * out[i] = 1 if every probed bit was already set (a replay, or a false positive), else 0.
 * Returns the number of rows reported present; *added_out receives the number newly added. */
size_t replay_bloom_check_and_add(uint64_t *bits, uint64_t m_bits, uint32_t k_probes,
                                  const uint8_t key[16], const uint8_t *tags, size_t n,
                                  const uint8_t *mask, uint8_t *out, uint64_t *added_out);

/* Membership only (no bits set): used for false-positive measurement and tests. */
size_t replay_bloom_contains(const uint64_t *bits, uint64_t m_bits, uint32_t k_probes,
                             const uint8_t key[16], const uint8_t *tags, size_t n, uint8_t *out);

/* The k bit indexes of one tag (for differential tests against the Python twin). */
void replay_bloom_indexes(uint64_t m_bits, uint32_t k_probes, const uint8_t key[16],
                          const uint8_t *tag, uint64_t *idx_out);

#endif
