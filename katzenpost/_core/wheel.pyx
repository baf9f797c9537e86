# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The scheduler's packet queue: a hierarchical timer wheel (1 ms ticks, any int64 deadline) over a
preallocated numpy packet arena; O(1) insert, earliest-first pop with a burst cap, counted drops
(late beyond slack, random victim when full). One owner thread; no I/O, no clock of its own."""

import os

import numpy as np

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc

cdef extern from "wheel_impl.h" nogil:
    ctypedef struct wheel_state:
        int64_t *deadline
        int32_t *hop
        int32_t *next
        int32_t *prev
        int32_t *heap_slot
        uint64_t *heap_seq
        uint8_t **chunks
        uint32_t chunk_shift
        uint32_t chunk_mask
        int64_t slot_count
        int64_t limit
        int64_t count
        int32_t free_head
        int64_t cur
        uint64_t dropped_full
        uint64_t dropped_late
    void wheel_init(wheel_state *w, int64_t limit, size_t packet_len, uint64_t seed)
    void wheel_add_free_slots(wheel_state *w, int64_t first, int64_t last)
    int64_t wheel_insert_batch(wheel_state *w, const int64_t *deadline, const int32_t *hop,
                               const uint8_t *packets, size_t packet_stride, int64_t n)
    int64_t wheel_pop_due(wheel_state *w, int64_t now, int64_t max_out, int64_t slack_ms,
                          uint8_t *out_packets, size_t out_stride, int32_t *out_hop,
                          int64_t *out_deadline)
    int64_t wheel_next_deadline(wheel_state *w, int *found)

# Rows per packet chunk when the queue is unlimited (a power of two; ~10 MiB of 2524-byte packets).
GROWTH_CHUNK_SHIFT = 12
GROWTH_CHUNK = 1 << GROWTH_CHUNK_SHIFT
# Slot ids are int32 (the arena never holds more packets than this).
MAX_SLOTS = (1 << 31) - 1


cdef class TimerWheel:
    """Queue of fixed-size packets keyed by absolute deadlines in monotonic milliseconds.

    capacity > 0 bounds the queue (arena preallocated; inserting into a full queue drops one of
    the queued packets or the new one, uniformly at random, like the reference). capacity <= 0
    means unlimited: the arena grows in chunks of GROWTH_CHUNK packets.
    """
    cdef wheel_state *w
    cdef readonly Py_ssize_t packet_len
    cdef readonly Py_ssize_t capacity
    cdef list _chunks
    cdef object _deadline, _hop, _next, _prev, _heap_slot, _heap_seq
    cdef bint _busy

    def __cinit__(self, capacity, packet_len, seed=None):
        self.w = NULL

    def __init__(self, capacity, packet_len, seed=None):
        capacity, packet_len = int(capacity), int(packet_len)
        if packet_len < 1:
            raise ValueError(f"wheel: packet_len must be >= 1, got {packet_len}")
        if capacity > MAX_SLOTS:
            raise ValueError(f"wheel: capacity must be <= {MAX_SLOTS}, got {capacity}")
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        self.w = <wheel_state *>malloc(sizeof(wheel_state))
        if self.w == NULL:
            raise MemoryError("wheel: cannot allocate the wheel state")
        wheel_init(self.w, capacity if capacity > 0 else 0, <size_t>packet_len,
                   <uint64_t>(int(seed) & 0xFFFFFFFFFFFFFFFF))
        self.packet_len = packet_len
        self.capacity = capacity if capacity > 0 else 0
        self._chunks = []
        self._busy = False
        if capacity > 0:
            # One chunk holds the whole bounded arena: slot s is row s.
            self.w.chunk_shift = 31
            self.w.chunk_mask = 0x7FFFFFFF
            self._grow_to(capacity, capacity)
        else:
            self.w.chunk_shift = GROWTH_CHUNK_SHIFT
            self.w.chunk_mask = GROWTH_CHUNK - 1
            self._grow_to(GROWTH_CHUNK, GROWTH_CHUNK)

    def __dealloc__(self):
        if self.w != NULL:
            free(self.w.chunks)
            free(self.w)
            self.w = NULL

    cdef _grow_to(self, Py_ssize_t slots, Py_ssize_t chunk_rows):
        """Grow the arena to `slots` packets: per-slot arrays are reallocated (doubling), packet
        rows come in new chunks so queued packets never move."""
        cdef int64_t old = self.w.slot_count
        cdef Py_ssize_t i, n_chunks
        cdef uint8_t **chunk_ptrs
        cdef uint8_t[:, ::1] rows
        meta_slots = slots
        self._deadline = self._resized(self._deadline, np.int64, meta_slots)
        self._hop = self._resized(self._hop, np.int32, meta_slots)
        self._next = self._resized(self._next, np.int32, meta_slots)
        self._prev = self._resized(self._prev, np.int32, meta_slots)
        self._heap_slot = self._resized(self._heap_slot, np.int32, meta_slots)
        self._heap_seq = self._resized(self._heap_seq, np.uint64, meta_slots)
        while len(self._chunks) * chunk_rows < slots:
            rows_needed = min(chunk_rows, slots - len(self._chunks) * chunk_rows)
            self._chunks.append(np.zeros((rows_needed, self.packet_len), dtype=np.uint8))
        n_chunks = len(self._chunks)
        chunk_ptrs = <uint8_t **>realloc(self.w.chunks, n_chunks * sizeof(uint8_t *))
        if chunk_ptrs == NULL:
            raise MemoryError("wheel: cannot grow the chunk table")
        self.w.chunks = chunk_ptrs
        for i in range(n_chunks):
            rows = self._chunks[i]
            chunk_ptrs[i] = &rows[0, 0]
        self.w.deadline = <int64_t *><size_t>self._deadline.ctypes.data
        self.w.hop = <int32_t *><size_t>self._hop.ctypes.data
        self.w.next = <int32_t *><size_t>self._next.ctypes.data
        self.w.prev = <int32_t *><size_t>self._prev.ctypes.data
        self.w.heap_slot = <int32_t *><size_t>self._heap_slot.ctypes.data
        self.w.heap_seq = <uint64_t *><size_t>self._heap_seq.ctypes.data
        self.w.slot_count = slots
        wheel_add_free_slots(self.w, old, slots)

    @staticmethod
    def _resized(old, dtype, slots):
        fresh = np.zeros(slots, dtype=dtype)
        if old is not None:
            fresh[:len(old)] = old
        return fresh

    cdef _ensure_free(self, int64_t n):
        """Unlimited queue: make room for n more packets before entering nogil."""
        cdef int64_t need = self.w.count + n
        if self.capacity > 0 or need <= self.w.slot_count:
            return
        if need > MAX_SLOTS:
            raise MemoryError(f"wheel: queue would exceed {MAX_SLOTS} packets")
        target = max(need, min(2 * self.w.slot_count, MAX_SLOTS))
        target = min(MAX_SLOTS, -(-target // GROWTH_CHUNK) * GROWTH_CHUNK)
        self._grow_to(target, GROWTH_CHUNK)

    cdef _enter(self):
        if self._busy:
            raise RuntimeError("wheel: used from two threads at once (it has one owner thread)")
        self._busy = True

    def insert_batch(self, const int64_t[::1] deadline_ms not None, const int32_t[::1] hop not None,
                     const uint8_t[:, ::1] packets not None, n=None):
        """Queue rows 0..n-1 (deadline ms, next-hop index, packet row). Returns how many packets
        were dropped because the queue was full (counted in dropped_full)."""
        cdef int64_t count = packets.shape[0] if n is None else int(n)
        cdef int64_t dropped
        if count < 0 or count > packets.shape[0] or count > deadline_ms.shape[0] or count > hop.shape[0]:
            raise ValueError(f"wheel: n={count} exceeds the batch (packets {packets.shape[0]}, "
                             f"deadlines {deadline_ms.shape[0]}, hops {hop.shape[0]})")
        if count == 0:
            return 0
        if packets.shape[1] != self.packet_len:
            raise ValueError(f"wheel: packets are {packets.shape[1]} bytes, this wheel holds {self.packet_len}")
        self._enter()
        try:
            self._ensure_free(count)
            with nogil:
                dropped = wheel_insert_batch(self.w, &deadline_ms[0], &hop[0], &packets[0, 0],
                                             <size_t>packets.strides[0], count)
        finally:
            self._busy = False
        return dropped

    def pop_due(self, int64_t now_ms, int64_t max_burst, int64_t slack_ms,
                uint8_t[:, ::1] out_packets not None, int32_t[::1] out_hop not None,
                int64_t[::1] out_deadline not None):
        """Move at most max_burst packets with deadline <= now_ms into the out arrays, earliest
        first (ties in insertion order). Packets more than slack_ms late are dropped and counted
        in dropped_late instead. Returns the number written."""
        cdef int64_t limit = max_burst, got
        cdef uint8_t *out_ptr = NULL
        if max_burst < 0 or slack_ms < 0:
            raise ValueError(f"wheel: max_burst and slack_ms must be >= 0, got {max_burst}, {slack_ms}")
        if out_packets.shape[0] > 0 and out_packets.shape[1] != self.packet_len:
            raise ValueError(f"wheel: out_packets rows are {out_packets.shape[1]} bytes, "
                             f"this wheel holds {self.packet_len}")
        limit = min(limit, out_packets.shape[0], out_hop.shape[0], out_deadline.shape[0])
        if limit == 0:
            return 0
        out_ptr = &out_packets[0, 0]
        self._enter()
        try:
            with nogil:
                got = wheel_pop_due(self.w, now_ms, limit, slack_ms, out_ptr,
                                    <size_t>out_packets.strides[0], &out_hop[0], &out_deadline[0])
        finally:
            self._busy = False
        return got

    def next_deadline(self):
        """Earliest queued deadline (ms), or -1 when the queue is empty."""
        cdef int found = 0
        cdef int64_t d = wheel_next_deadline(self.w, &found)
        return d if found else -1

    def __len__(self):
        return self.w.count

    @property
    def dropped_full(self):
        return self.w.dropped_full

    @property
    def dropped_late(self):
        return self.w.dropped_late

    @property
    def arena_slots(self):
        """Packet slots allocated (capacity when bounded; grows in chunks when unlimited)."""
        return self.w.slot_count

    @property
    def nbytes(self):
        """Bytes held by the arena and per-slot arrays (the queue's memory, bar a fixed ~14 KiB)."""
        total = sum(c.nbytes for c in self._chunks)
        for arr in (self._deadline, self._hop, self._next, self._prev, self._heap_slot, self._heap_seq):
            total += arr.nbytes
        return total + sizeof(wheel_state)
