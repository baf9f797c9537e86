# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The scheduler's packet queue: a hierarchical timer wheel (one tick per deadline unit, any int64
deadline; the node counts in microseconds, so dispatch order is exact to the microsecond) over a
numpy packet arena grown in chunks; O(1) insert, earliest-first pop (copying, or zero-copy slots
held until released) with a burst cap, counted drops (late beyond slack, random victim when full).
One owner thread; no I/O, no clock of its own."""

import os

import numpy as np

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from cpython.sequence cimport PySequence_GetSlice
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
        int64_t held
        int32_t free_head
        int64_t cur
        uint64_t dropped_full
        uint64_t dropped_late
    void wheel_init(wheel_state *w, int64_t limit, size_t packet_len, uint64_t seed)
    void wheel_add_free_slots(wheel_state *w, int64_t first, int64_t last)
    int64_t wheel_insert_batch(wheel_state *w, const int64_t *deadline, const int32_t *hop,
                               const uint8_t *packets, size_t packet_stride, int64_t n)
    int64_t wheel_pop_due(wheel_state *w, int64_t now, int64_t max_out, int64_t slack,
                          uint8_t *out_packets, size_t out_stride, int32_t *out_hop,
                          int64_t *out_deadline)
    int64_t wheel_pop_due_slots(wheel_state *w, int64_t now, int64_t max_out, int64_t slack,
                                int32_t *out_slot, int32_t *out_hop, int64_t *out_deadline)
    int64_t wheel_release(wheel_state *w, const int32_t *slots, int64_t n)
    int wheel_is_held(const wheel_state *w, int64_t s)
    int64_t wheel_next_deadline(wheel_state *w, int *found)

# Rows per packet chunk (a power of two; ~10 MiB of 2524-byte packets). The arena starts with one
# chunk and grows as packets arrive, up to the capacity when bounded: a large SchedulerQueueSize
# costs memory only once that many packets are queued.
GROWTH_CHUNK_SHIFT = 12
GROWTH_CHUNK = 1 << GROWTH_CHUNK_SHIFT
# Slot ids are int32 (the arena never holds more packets than this).
MAX_SLOTS = (1 << 31) - 1


cdef int64_t _slot_count(const int32_t[::1] slots, n, str what) except -1:
    """How many of `slots` a call uses: all, or the first n (checked against the array)."""
    cdef int64_t count = slots.shape[0] if n is None else int(n)
    if count < 0 or count > slots.shape[0]:
        raise ValueError(f"wheel: {what} n={count} exceeds the {slots.shape[0]} slots given")
    return count


cdef class TimerWheel:
    """Queue of fixed-size packets keyed by absolute int64 deadlines.

    The wheel has no unit of its own: deadlines, `now` and the slack are in whatever unit the
    caller uses, the same for all three (the node: monotonic microseconds; the tests and
    bench/bench_wheel.py also use milliseconds). A tick is one unit.

    capacity > 0 bounds the queue (inserting into a full queue drops one of the queued packets or
    the new one, uniformly at random, like the reference); capacity <= 0 means unlimited. Either
    way the arena grows in chunks of GROWTH_CHUNK packets as needed, never past the capacity.
    Slots popped by pop_due_slots stay in the arena (and count against the capacity) until
    release().
    """
    cdef wheel_state *w
    cdef readonly Py_ssize_t packet_len
    cdef readonly Py_ssize_t capacity
    cdef list _chunks
    cdef list _chunk_views
    cdef object _deadline, _hop, _next, _prev, _heap_slot, _heap_seq
    cdef bint _busy

    def __cinit__(self, capacity, packet_len, seed=None):
        # All set up here, not in __init__: no Python path can reach a method with no state.
        self.w = NULL
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
        self._chunk_views = []
        self._busy = False
        self.w.chunk_shift = GROWTH_CHUNK_SHIFT
        self.w.chunk_mask = GROWTH_CHUNK - 1
        self._grow_to(min(GROWTH_CHUNK, self._slot_ceiling()))

    def __dealloc__(self):
        if self.w != NULL:
            free(self.w.chunks)
            free(self.w)
            self.w = NULL

    cdef Py_ssize_t _slot_ceiling(self):
        return self.capacity if self.capacity > 0 else MAX_SLOTS

    cdef _grow_to(self, Py_ssize_t slots):
        """Grow the arena to `slots` packets (a multiple of GROWTH_CHUNK, or the ceiling). Packet
        rows come in new chunks so queued and held packets never move."""
        cdef int64_t old = self.w.slot_count
        cdef Py_ssize_t i, n_chunks
        cdef uint8_t **chunk_ptrs
        cdef uint8_t[:, ::1] rows
        if self._deadline is None or len(self._deadline) < slots:
            self._grow_slot_arrays(max(slots, min(self._slot_ceiling(), 2 * old)))
        while len(self._chunks) * GROWTH_CHUNK < slots:
            rows_needed = min(GROWTH_CHUNK, slots - len(self._chunks) * GROWTH_CHUNK)
            chunk = np.zeros((rows_needed, self.packet_len), dtype=np.uint8)
            self._chunks.append(chunk)
            self._chunk_views.append(memoryview(chunk.reshape(-1)))
        n_chunks = len(self._chunks)
        chunk_ptrs = <uint8_t **>realloc(self.w.chunks, n_chunks * sizeof(uint8_t *))
        if chunk_ptrs == NULL:
            raise MemoryError("wheel: cannot grow the chunk table")
        self.w.chunks = chunk_ptrs
        for i in range(n_chunks):
            rows = self._chunks[i]
            chunk_ptrs[i] = &rows[0, 0]
        self.w.slot_count = slots
        wheel_add_free_slots(self.w, old, slots)

    cdef _grow_slot_arrays(self, Py_ssize_t length):
        """Reallocate the per-slot arrays to `length` entries (doubling, so the copies amortise;
        the packet rows, the bulk of the memory, grow one chunk at a time instead)."""
        self._deadline = self._resized(self._deadline, np.int64, length)
        self._hop = self._resized(self._hop, np.int32, length)
        self._next = self._resized(self._next, np.int32, length)
        self._prev = self._resized(self._prev, np.int32, length)
        self._heap_slot = self._resized(self._heap_slot, np.int32, length)
        self._heap_seq = self._resized(self._heap_seq, np.uint64, length)
        self.w.deadline = <int64_t *><size_t>self._deadline.ctypes.data
        self.w.hop = <int32_t *><size_t>self._hop.ctypes.data
        self.w.next = <int32_t *><size_t>self._next.ctypes.data
        self.w.prev = <int32_t *><size_t>self._prev.ctypes.data
        self.w.heap_slot = <int32_t *><size_t>self._heap_slot.ctypes.data
        self.w.heap_seq = <uint64_t *><size_t>self._heap_seq.ctypes.data

    @staticmethod
    def _resized(old, dtype, slots):
        fresh = np.zeros(slots, dtype=dtype)
        if old is not None:
            fresh[:len(old)] = old
        return fresh

    cdef _ensure_free(self, int64_t n):
        """Make room for n more packets before entering nogil: enough free slots for all of them,
        or (bounded) for as many as fit under the capacity, the rest being random drops."""
        cdef Py_ssize_t ceiling = self._slot_ceiling()
        cdef int64_t need = self.w.count + self.w.held + n
        if self.capacity == 0 and need > MAX_SLOTS:
            raise MemoryError(f"wheel: queue would exceed {MAX_SLOTS} packets")
        need = min(need, ceiling)
        if need > self.w.slot_count:
            self._grow_to(min(ceiling, -(-need // GROWTH_CHUNK) * GROWTH_CHUNK))

    cdef _enter(self):
        if self._busy:
            raise RuntimeError("wheel: used from two threads at once (it has one owner thread)")
        self._busy = True

    def insert_batch(self, const int64_t[::1] deadline_ms not None, const int32_t[::1] hop not None,
                     const uint8_t[:, ::1] packets not None, n=None):
        """Queue rows 0..n-1 (deadline, next-hop index, packet row). Returns how many packets
        were dropped because the queue was full (counted in dropped_full)."""
        cdef int64_t count = packets.shape[0] if n is None else int(n)
        cdef int64_t dropped
        if count < 0 or count > min(packets.shape[0], deadline_ms.shape[0], hop.shape[0]):
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

    def pop_due(self, int64_t now, int64_t max_burst, int64_t slack,
                uint8_t[:, ::1] out_packets not None, int32_t[::1] out_hop not None,
                int64_t[::1] out_deadline not None):
        """Move at most max_burst packets with deadline <= now into the out arrays, earliest
        first (ties in insertion order). Packets more than slack late are dropped and counted
        in dropped_late instead. Returns the number written."""
        cdef int64_t limit = max_burst, got
        cdef uint8_t *out_ptr = NULL
        if max_burst < 0 or slack < 0:
            raise ValueError(f"wheel: max_burst and slack must be >= 0, got {max_burst}, {slack}")
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
                got = wheel_pop_due(self.w, now, limit, slack, out_ptr,
                                    <size_t>out_packets.strides[0], &out_hop[0], &out_deadline[0])
        finally:
            self._busy = False
        return got

    def pop_due_slots(self, int64_t now, int64_t max_burst, int64_t slack,
                      int32_t[::1] out_slot not None, int32_t[::1] out_hop not None,
                      int64_t[::1] out_deadline not None):
        """Zero-copy pop_due: write the arena slot numbers of at most max_burst due packets (same
        order and late drops as pop_due). Each slot's row (arena_view) stays valid and untouched
        until release(); until then it is not reused and counts against the capacity."""
        cdef int64_t limit = max_burst, got
        if max_burst < 0 or slack < 0:
            raise ValueError(f"wheel: max_burst and slack must be >= 0, got {max_burst}, {slack}")
        limit = min(limit, out_slot.shape[0], out_hop.shape[0], out_deadline.shape[0])
        if limit == 0:
            return 0
        self._enter()
        try:
            with nogil:
                got = wheel_pop_due_slots(self.w, now, limit, slack, &out_slot[0],
                                          &out_hop[0], &out_deadline[0])
        finally:
            self._busy = False
        return got

    def release(self, const int32_t[::1] slots not None, n=None):
        """Give back slots 0..n-1 of `slots` (from pop_due_slots) for reuse. A slot that is not
        held raises ValueError; the slots before it in the list are released."""
        cdef int64_t count = _slot_count(slots, n, "release")
        cdef int64_t done
        if count == 0:
            return
        self._enter()
        try:
            with nogil:
                done = wheel_release(self.w, &slots[0], count)
        finally:
            self._busy = False
        if done < count:
            raise ValueError(f"wheel: release: slot {slots[done]} at index {done} is not held "
                             f"(never popped by pop_due_slots, or already released); "
                             f"{done} slots before it were released")

    def arena_view(self, int64_t slot):
        """The packet row of a held slot, as a writable memoryview into the arena (no copy; valid
        until the slot is released, after which the row may be overwritten). Whatever reads it
        must be done by then: with zmq, send with copy=True, or wait on the MessageTracker of a
        copy=False send before release()."""
        if not wheel_is_held(self.w, slot):
            raise ValueError(f"wheel: arena_view: slot {slot} is not held")
        return self._row_view(slot)

    def arena_views(self, const int32_t[::1] slots not None, n=None):
        """[arena_view(s) for s in slots[:n]] in one call (the scheduler's per-burst hand-off)."""
        cdef int64_t count = _slot_count(slots, n, "arena_views")
        cdef int64_t i
        views = [None] * count
        for i in range(count):
            if not wheel_is_held(self.w, slots[i]):
                raise ValueError(f"wheel: arena_views: slot {slots[i]} at index {i} is not held")
            views[i] = self._row_view(slots[i])
        return views

    cdef _row_view(self, int64_t slot):
        cdef Py_ssize_t start = (slot & self.w.chunk_mask) * self.packet_len
        return PySequence_GetSlice(self._chunk_views[slot >> self.w.chunk_shift], start,
                                   start + self.packet_len)

    def next_deadline(self):
        """Earliest queued deadline (in the caller's unit), or -1 when the queue is empty."""
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
    def held(self):
        """Slots popped by pop_due_slots and not yet released."""
        return self.w.held

    @property
    def arena_slots(self):
        """Packet slots allocated so far (grows in chunks, never past a bounded capacity)."""
        return self.w.slot_count

    @property
    def nbytes(self):
        """Bytes held by the arena and per-slot arrays, plus the fixed ~34 KiB wheel state."""
        total = sum(c.nbytes for c in self._chunks)
        for arr in (self._deadline, self._hop, self._next, self._prev, self._heap_slot, self._heap_seq):
            total += arr.nbytes
        return total + sizeof(wheel_state)
