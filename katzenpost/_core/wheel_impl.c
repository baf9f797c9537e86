/* Hierarchical timer wheel (see wheel_impl.h). Level L buckets cover 256^L ticks each; a packet sits
 * at the level of the highest 8-bit group in which its deadline differs from the wheel clock, so
 * a bucket is cascaded one level down when the clock reaches its start. Packets inserted with a
 * deadline behind the clock go to a small min-heap, which is always earlier than every bucket,
 * so dispatch order is exactly (deadline, insertion order). */
#include "wheel_impl.h"

#include <string.h>

#define WHEEL_MARK_HEAP INT32_MIN
#define WHEEL_MARK_FREE (INT32_MIN + 1)
#define WHEEL_MARK_HELD (INT32_MIN + 2)

static inline uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

uint64_t wheel_rand_below(wheel_state *w, uint64_t bound)
{
    unsigned __int128 m = (unsigned __int128)splitmix64(&w->rng) * bound;
    uint64_t low = (uint64_t)m;
    if (low < bound) {
        uint64_t threshold = (0 - bound) % bound;
        while (low < threshold) {
            m = (unsigned __int128)splitmix64(&w->rng) * bound;
            low = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

void wheel_init(wheel_state *w, int64_t limit, size_t packet_len, uint64_t seed)
{
    memset(w, 0, sizeof(*w));
    w->limit = limit;
    w->packet_len = packet_len;
    w->free_head = -1;
    w->rng = seed;
    for (int b = 0; b < WHEEL_BUCKETS; b++)
        w->head[b] = w->tail[b] = -1;
}

void wheel_add_free_slots(wheel_state *w, int64_t first, int64_t last)
{
    /* Walk to the tail: growth happens only when fewer than a batch of slots are free. */
    int32_t tail = -1;
    for (int32_t s = w->free_head; s >= 0; s = w->next[s])
        tail = s;
    for (int64_t s = first; s < last; s++) {
        w->prev[s] = WHEEL_MARK_FREE;
        w->next[s] = -1;
        if (tail < 0)
            w->free_head = (int32_t)s;
        else
            w->next[tail] = (int32_t)s;
        tail = (int32_t)s;
    }
}

static inline uint8_t *packet_at(const wheel_state *w, int32_t s)
{
    return w->chunks[(uint32_t)s >> w->chunk_shift] + (size_t)((uint32_t)s & w->chunk_mask) * w->packet_len;
}

static inline int level_of(uint64_t diff)
{
    return (63 - __builtin_clzll(diff | (WHEEL_SLOTS - 1))) / WHEEL_LEVEL_BITS;
}

static inline void occupancy_set(wheel_state *w, int b)
{
    w->occupied[b / WHEEL_SLOTS][(b % WHEEL_SLOTS) / 64] |= 1ULL << (b % 64);
}

static inline void occupancy_clear(wheel_state *w, int b)
{
    w->occupied[b / WHEEL_SLOTS][(b % WHEEL_SLOTS) / 64] &= ~(1ULL << (b % 64));
}

/* Lowest non-empty slot of a level, or -1. */
static inline int first_slot(const wheel_state *w, int level)
{
    for (int i = 0; i < WHEEL_OCC_WORDS; i++)
        if (w->occupied[level][i])
            return i * 64 + __builtin_ctzll(w->occupied[level][i]);
    return -1;
}

/* ---- the heap of packets behind the clock, ordered by (deadline, seq) ---------------------- */

static inline int heap_less(const wheel_state *w, int64_t a, int64_t b)
{
    int64_t da = w->deadline[w->heap_slot[a]], db = w->deadline[w->heap_slot[b]];
    return da < db || (da == db && w->heap_seq[a] < w->heap_seq[b]);
}

static inline void heap_swap(wheel_state *w, int64_t a, int64_t b)
{
    int32_t sa = w->heap_slot[a], sb = w->heap_slot[b];
    uint64_t qa = w->heap_seq[a];
    w->heap_slot[a] = sb; w->heap_seq[a] = w->heap_seq[b];
    w->heap_slot[b] = sa; w->heap_seq[b] = qa;
    w->next[sb] = (int32_t)a;
    w->next[sa] = (int32_t)b;
}

static void heap_sift_up(wheel_state *w, int64_t i)
{
    while (i > 0) {
        int64_t parent = (i - 1) / 2;
        if (!heap_less(w, i, parent))
            break;
        heap_swap(w, i, parent);
        i = parent;
    }
}

static void heap_sift_down(wheel_state *w, int64_t i)
{
    for (;;) {
        int64_t left = 2 * i + 1, smallest = i;
        if (left < w->heap_len && heap_less(w, left, smallest))
            smallest = left;
        if (left + 1 < w->heap_len && heap_less(w, left + 1, smallest))
            smallest = left + 1;
        if (smallest == i)
            return;
        heap_swap(w, i, smallest);
        i = smallest;
    }
}

static void heap_push(wheel_state *w, int32_t s)
{
    int64_t i = w->heap_len++;
    w->heap_slot[i] = s;
    w->heap_seq[i] = w->seq++;
    w->prev[s] = WHEEL_MARK_HEAP;
    w->next[s] = (int32_t)i;
    heap_sift_up(w, i);
}

static void heap_remove_at(wheel_state *w, int64_t i)
{
    int64_t last = --w->heap_len;
    if (i != last) {
        heap_swap(w, i, last);
        heap_sift_down(w, i);
        heap_sift_up(w, i);
    }
}

/* ---- bucket lists ------------------------------------------------------------------------- */

static void bucket_append(wheel_state *w, int b, int32_t s)
{
    w->next[s] = -1 - b;
    if (w->head[b] < 0) {
        w->head[b] = w->tail[b] = s;
        w->prev[s] = -1 - b;
        occupancy_set(w, b);
        w->bucket_min[b] = w->deadline[s];
        w->bucket_min_stale[b] = 0;
    } else {
        w->prev[s] = w->tail[b];
        w->next[w->tail[b]] = s;
        w->tail[b] = s;
        if (w->deadline[s] < w->bucket_min[b])
            w->bucket_min[b] = w->deadline[s];
    }
}

/* Bucket of a deadline at or after the clock. Also where a queued packet still is: the clock only
 * moves to the start of a bucket being cascaded (or a level-0 tick), which keeps every other
 * packet's highest differing 8-bit group, and so its bucket, unchanged. */
static inline int bucket_of(const wheel_state *w, int64_t d)
{
    int level = level_of((uint64_t)d ^ (uint64_t)w->cur);
    return level * WHEEL_SLOTS + (int)(((uint64_t)d >> (WHEEL_LEVEL_BITS * level)) & (WHEEL_SLOTS - 1));
}

static void bucket_unlink(wheel_state *w, int32_t s)
{
    int32_t p = w->prev[s], nx = w->next[s];
    int b = bucket_of(w, w->deadline[s]);
    if (p >= 0)
        w->next[p] = nx;
    else
        w->head[b] = nx >= 0 ? nx : -1;
    if (nx >= 0)
        w->prev[nx] = p;
    else
        w->tail[b] = p >= 0 ? p : -1;
    if (w->head[b] < 0)
        occupancy_clear(w, b);
    else if (w->deadline[s] == w->bucket_min[b])
        w->bucket_min_stale[b] = 1;
}

/* Place a slot whose deadline is set: a bucket relative to the clock, or the heap if behind it. */
static void place(wheel_state *w, int32_t s)
{
    int64_t d = w->deadline[s];
    if (d < w->cur) {
        heap_push(w, s);
        return;
    }
    bucket_append(w, bucket_of(w, d), s);
}

static void remove_slot(wheel_state *w, int32_t s)
{
    if (w->prev[s] == WHEEL_MARK_HEAP)
        heap_remove_at(w, w->next[s]);
    else
        bucket_unlink(w, s);
}

/* Put slot s (not queued any more) back on the free list. */
static inline void free_slot(wheel_state *w, int32_t s)
{
    w->prev[s] = WHEEL_MARK_FREE;
    w->next[s] = w->free_head;
    w->free_head = s;
}

/* Move every packet of bucket b one level (or more) down; the clock is already at its start. */
static void cascade(wheel_state *w, int b)
{
    int32_t s = w->head[b];
    w->head[b] = w->tail[b] = -1;
    occupancy_clear(w, b);
    while (s >= 0) {
        int32_t following = w->next[s];
        place(w, s);
        s = following;
    }
}

/* Start (tick) of slot `slot` at `level`, in the same higher-level block as the clock. */
static inline int64_t slot_start(const wheel_state *w, int level, int slot)
{
    int shift = WHEEL_LEVEL_BITS * level, above = shift + WHEEL_LEVEL_BITS;
    uint64_t high = above >= 64 ? 0 : ((uint64_t)w->cur >> above) << above;
    return (int64_t)(high | ((uint64_t)slot << shift));
}

/* The earliest packet if its deadline is <= now, else -1. Advances the clock (cascading) only up
 * to now, never past it. */
static int32_t peek_due(wheel_state *w, int64_t now)
{
    for (;;) {
        if (w->heap_len > 0) {
            int32_t s = w->heap_slot[0];
            return w->deadline[s] <= now ? s : -1;
        }
        int slot = first_slot(w, 0);
        if (slot >= 0) {
            int64_t tick = slot_start(w, 0, slot);
            if (tick > now)
                return -1;
            w->cur = tick;
            return w->head[slot];
        }
        int level;
        for (level = 1; level < WHEEL_LEVELS; level++) {
            slot = first_slot(w, level);
            if (slot >= 0)
                break;
        }
        if (level == WHEEL_LEVELS)
            return -1;
        /* Slots at a level are all after the clock's own slot there, so the lowest set bit wins. */
        int64_t start = slot_start(w, level, slot);
        if (start > now)
            return -1;
        w->cur = start;
        cascade(w, level * WHEEL_SLOTS + slot);
    }
}

int64_t wheel_next_deadline(wheel_state *w, int *found)
{
    *found = 1;
    if (w->heap_len > 0)
        return w->deadline[w->heap_slot[0]];
    int slot = first_slot(w, 0);
    if (slot >= 0)
        return slot_start(w, 0, slot);
    for (int level = 1; level < WHEEL_LEVELS; level++) {
        slot = first_slot(w, level);
        if (slot < 0)
            continue;
        int b = level * WHEEL_SLOTS + slot;
        if (w->bucket_min_stale[b]) {
            int64_t best = INT64_MAX;
            for (int32_t s = w->head[b]; s >= 0; s = w->next[s])
                if (w->deadline[s] < best)
                    best = w->deadline[s];
            w->bucket_min[b] = best;
            w->bucket_min_stale[b] = 0;
        }
        return w->bucket_min[b];
    }
    *found = 0;
    return -1;
}

/* Start loading the row the next insert will overwrite while this one is copied: a freed row has
 * usually left the cache, and a store to it must first read each line in. */
static inline void prefetch_row(const wheel_state *w, int32_t s)
{
    const uint8_t *row = packet_at(w, s);
    for (size_t off = 0; off < w->packet_len; off += 64)
        __builtin_prefetch(row + off, 1, 0);
}

/* Full queue: the slot of a uniformly random queued packet, or -1 for the new packet itself
 * (uniform over count + 1 candidates). Rejection over slot numbers [0, limit) skips held slots;
 * every other slot is queued because the arena is full. */
static int32_t pick_victim(wheel_state *w)
{
    if (w->count == 0)
        return -1;
    for (;;) {
        uint64_t victim = wheel_rand_below(w, (uint64_t)w->limit + 1);
        if (victim == (uint64_t)w->limit)
            return -1;
        if (w->prev[victim] != WHEEL_MARK_HELD)
            return (int32_t)victim;
    }
}

int64_t wheel_insert_batch(wheel_state *w, const int64_t *deadline, const int32_t *hop,
                           const uint8_t *packets, size_t packet_stride, int64_t n)
{
    int64_t dropped = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t s;
        if (w->limit > 0 && w->count + w->held >= w->limit) {
            dropped++;
            w->dropped_full++;
            s = pick_victim(w);
            if (s < 0)
                continue;
            remove_slot(w, s);
        } else {
            s = w->free_head;
            w->free_head = w->next[s];
            w->count++;
            if (w->free_head >= 0)
                prefetch_row(w, w->free_head);
        }
        w->deadline[s] = deadline[i];
        w->hop[s] = hop[i];
        memcpy(packet_at(w, s), packets + (size_t)i * packet_stride, w->packet_len);
        place(w, s);
    }
    return dropped;
}

static inline int is_late(int64_t now, int64_t d, int64_t slack)
{
    return d < now && (uint64_t)now - (uint64_t)d > (uint64_t)slack;
}

/* Unqueue the next due packet that is not too late, dropping (and freeing) late ones on the way;
 * -1 when none is due. The returned slot is off every list and still counted nowhere. */
static int32_t take_due(wheel_state *w, int64_t now, int64_t slack)
{
    for (;;) {
        int32_t s = peek_due(w, now);
        if (s < 0)
            return -1;
        remove_slot(w, s);
        w->count--;
        if (!is_late(now, w->deadline[s], slack))
            return s;
        w->dropped_late++;
        free_slot(w, s);
    }
}

int64_t wheel_pop_due(wheel_state *w, int64_t now, int64_t max_out, int64_t slack,
                      uint8_t *out_packets, size_t out_stride, int32_t *out_hop, int64_t *out_deadline)
{
    int64_t out = 0;
    int32_t s;
    while (out < max_out && (s = take_due(w, now, slack)) >= 0) {
        memcpy(out_packets + (size_t)out * out_stride, packet_at(w, s), w->packet_len);
        out_hop[out] = w->hop[s];
        out_deadline[out] = w->deadline[s];
        out++;
        free_slot(w, s);
    }
    return out;
}

int64_t wheel_pop_due_slots(wheel_state *w, int64_t now, int64_t max_out, int64_t slack,
                            int32_t *out_slot, int32_t *out_hop, int64_t *out_deadline)
{
    int64_t out = 0;
    int32_t s;
    while (out < max_out && (s = take_due(w, now, slack)) >= 0) {
        w->prev[s] = WHEEL_MARK_HELD;
        w->held++;
        out_slot[out] = s;
        out_hop[out] = w->hop[s];
        out_deadline[out] = w->deadline[s];
        out++;
    }
    return out;
}

int wheel_is_held(const wheel_state *w, int64_t s)
{
    return s >= 0 && s < w->slot_count && w->prev[s] == WHEEL_MARK_HELD;
}

int64_t wheel_release(wheel_state *w, const int32_t *slots, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        if (!wheel_is_held(w, slots[i]))
            return i;
        free_slot(w, slots[i]);
        w->held--;
    }
    return n;
}
