/* Hierarchical timer wheel (1-unit ticks, 8 levels x 256 slots: every int64 deadline) for the
 * scheduler, over slot arrays owned by the caller (numpy). No allocation, no I/O; one thread at
 * a time (the Cython wrapper enforces it). */
#ifndef KATZENPOST_WHEEL_IMPL_H
#define KATZENPOST_WHEEL_IMPL_H

#include <stddef.h>
#include <stdint.h>

/* 8 bits per level; 8 levels cover all 64 bits of a deadline. The node's unit is the microsecond:
 * level 0 spans 256 us, level 1 65.5 ms, level 2 16.8 s, level 3 71.6 min, so the usual mix
 * delays (mean 4 s, MuMaxDelay 46 s) are cascaded two or three times, O(1) each. */
#define WHEEL_LEVEL_BITS 8
#define WHEEL_LEVELS 8
#define WHEEL_SLOTS 256
#define WHEEL_OCC_WORDS (WHEEL_SLOTS / 64)
#define WHEEL_BUCKETS (WHEEL_LEVELS * WHEEL_SLOTS)

typedef struct wheel_state {
    /* Per-slot arrays (length slot_count), owned by the caller and re-pointed after growth. */
    int64_t *deadline;
    int32_t *hop;
    int32_t *next;       /* list successor, -1-bucket at the tail, heap position, or free link */
    int32_t *prev;       /* list predecessor, -1-bucket at the head, or a WHEEL_MARK_* value */
    int32_t *heap_slot;  /* min-heap of packets whose deadline fell behind the wheel clock */
    uint64_t *heap_seq;  /* insertion order, breaks deadline ties first-in first-out */
    uint8_t **chunks;    /* packet storage: slot s is row (s & chunk_mask) of chunk (s >> chunk_shift) */
    uint32_t chunk_shift;
    uint32_t chunk_mask;
    size_t packet_len;
    int64_t slot_count;  /* slots allocated */
    int64_t limit;       /* most packets queued; <= 0 means unlimited */
    int64_t count;       /* packets queued */
    int64_t held;        /* popped by wheel_pop_due_slots, not yet released: slots not reusable */
    int32_t free_head;
    int64_t heap_len;
    int64_t cur;         /* wheel clock (ticks): every bucketed packet has deadline >= cur */
    uint64_t seq;
    uint64_t rng;
    uint64_t dropped_full;
    uint64_t dropped_late;
    uint64_t occupied[WHEEL_LEVELS][WHEEL_OCC_WORDS];   /* non-empty buckets, one bit each */
    int32_t head[WHEEL_BUCKETS];
    int32_t tail[WHEEL_BUCKETS];
    int64_t bucket_min[WHEEL_BUCKETS];   /* earliest deadline per bucket, levels >= 1 */
    uint8_t bucket_min_stale[WHEEL_BUCKETS];
} wheel_state;

void wheel_init(wheel_state *w, int64_t limit, size_t packet_len, uint64_t seed);
/* Append slots [first, last) to the tail of the free list, lowest first (after the arrays grew):
 * freed slots are reused last-freed first, fresh ones in ascending order. */
void wheel_add_free_slots(wheel_state *w, int64_t first, int64_t last);
/* Insert n packets; returns how many queued packets (possibly new ones) were dropped because the
 * queue was full (count + held >= limit). Callers must first grow the arena so that
 * min(n, limit - count - held) slots are free (all n when unlimited). A full-queue victim is
 * uniform over the queued packets and the new one; held slots are never chosen. */
int64_t wheel_insert_batch(wheel_state *w, const int64_t *deadline, const int32_t *hop,
                           const uint8_t *packets, size_t packet_stride, int64_t n);
/* Pop up to max_out due packets (deadline <= now), earliest first, ties in insertion order;
 * packets later than slack are dropped and counted, not returned. */
int64_t wheel_pop_due(wheel_state *w, int64_t now, int64_t max_out, int64_t slack,
                      uint8_t *out_packets, size_t out_stride, int32_t *out_hop, int64_t *out_deadline);
/* As wheel_pop_due, but writes slot numbers instead of copying packets: each returned slot is
 * held (its arena row stays valid and is not reused, nor chosen as a full-queue victim) until
 * wheel_release. */
int64_t wheel_pop_due_slots(wheel_state *w, int64_t now, int64_t max_out, int64_t slack,
                            int32_t *out_slot, int32_t *out_hop, int64_t *out_deadline);
/* Free n held slots, in order. Stops at the first slot that is out of range or not held and
 * returns its index (the slots before it are released); returns n when all were released. */
int64_t wheel_release(wheel_state *w, const int32_t *slots, int64_t n);
/* 1 if slot s is held (popped by wheel_pop_due_slots, not yet released). */
int wheel_is_held(const wheel_state *w, int64_t s);
/* Earliest queued deadline, or -1 with *found = 0 when empty. Does not change the wheel. */
int64_t wheel_next_deadline(wheel_state *w, int *found);
/* Uniform integer in [0, bound) from the wheel's generator (splitmix64 + Lemire reduction). */
uint64_t wheel_rand_below(wheel_state *w, uint64_t bound);

#endif
