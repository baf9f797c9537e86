# cython: boundscheck=False, wraparound=False, initializedcheck=False
"""Benchmark and test stand-in for `_core.sphinx.unwrap_batch`: same signature, configurable cost.

It reads a plaintext "routing" block written by `encode_standin_packet` instead of doing Sphinx
crypto, so it must never run in production; the node always runs the real unwrap. Its source
lives under bench/ and setup.py compiles it (as `katzenpost._core.unwrap_standin`) only in
in-place builds, for the tests and benchmarks: no wheel carries it.
"""
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint32_t
from libc.string cimport memcpy
from posix.time cimport clock_gettime, timespec, CLOCK_THREAD_CPUTIME_ID

import numpy as np

from katzenpost.sphinx import geometry

# Layout of the stand-in routing block at the start of a packet (benchmark/test format only).
cdef enum:
    C_OFF_FLAGS = 0
    C_OFF_DELAY = 1          # uint32 big-endian, milliseconds
    C_OFF_STATUS = 5         # forced status code (0 = ok)
    C_OFF_TAG = 6            # 32-byte replay tag
    C_OFF_NEXT_HOP = 38      # 32-byte node ID
    C_OFF_RECIPIENT = 70     # 64-byte recipient ID
    C_OFF_SURB_ID = 134      # 16-byte SURB ID
    C_ROUTING_BLOCK_LENGTH = 150
    TAG_LEN = 32
    HOP_LEN = 32
    RECIPIENT_LEN = 64
    SURB_ID_LEN = 16

OFF_FLAGS = C_OFF_FLAGS
OFF_DELAY = C_OFF_DELAY
OFF_STATUS = C_OFF_STATUS
OFF_TAG = C_OFF_TAG
OFF_NEXT_HOP = C_OFF_NEXT_HOP
OFF_RECIPIENT = C_OFF_RECIPIENT
OFF_SURB_ID = C_OFF_SURB_ID
ROUTING_BLOCK_LENGTH = C_ROUTING_BLOCK_LENGTH

FLAG_NEXT_HOP = 1
FLAG_RECIPIENT = 2
FLAG_SURB_REPLY = 4
FLAG_NODE_DELAY = 8
FLAG_DUPLICATE = 16


class StandinUnwrapResult:
    """Result arrays with the fields and dtypes of `katzenpost.sphinx.batch.UnwrapBatch`."""

    def __init__(self, capacity):
        if capacity < 1:
            raise ValueError(f"unwrap_standin: capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.status = np.zeros(capacity, dtype=np.int32)
        self.key_index = np.zeros(capacity, dtype=np.int8)
        self.tags = np.zeros((capacity, TAG_LEN), dtype=np.uint8)
        self.flags = np.zeros(capacity, dtype=np.uint8)
        self.delay_ms = np.zeros(capacity, dtype=np.uint32)
        self.next_hop = np.zeros((capacity, HOP_LEN), dtype=np.uint8)
        self.recipient = np.zeros((capacity, RECIPIENT_LEN), dtype=np.uint8)
        self.surb_id = np.zeros((capacity, SURB_ID_LEN), dtype=np.uint8)


def encode_standin_packet(packet, *, flags, delay_ms=0, tag=b"", next_hop=b"", recipient=b"",
                          surb_id=b"", status=0):
    """Write a stand-in routing block into `packet` (a writable buffer of PACKET_LENGTH bytes)."""
    view = memoryview(packet).cast("B")
    if len(view) < ROUTING_BLOCK_LENGTH:
        raise ValueError(f"unwrap_standin: packet of {len(view)} bytes is too short")
    if not 0 <= delay_ms < 2**32:
        raise ValueError(f"unwrap_standin: delay_ms out of range: {delay_ms}")
    for name, value, limit in (("tag", tag, TAG_LEN), ("next_hop", next_hop, HOP_LEN),
                               ("recipient", recipient, RECIPIENT_LEN),
                               ("surb_id", surb_id, SURB_ID_LEN)):
        if len(value) > limit:
            raise ValueError(f"unwrap_standin: {name} longer than {limit} bytes")
    view[OFF_FLAGS] = flags
    view[OFF_DELAY:OFF_DELAY + 4] = int(delay_ms).to_bytes(4, "big")
    view[OFF_STATUS] = status
    view[OFF_TAG:OFF_TAG + TAG_LEN] = bytes(tag).ljust(TAG_LEN, b"\0")
    view[OFF_NEXT_HOP:OFF_NEXT_HOP + HOP_LEN] = bytes(next_hop).ljust(HOP_LEN, b"\0")
    view[OFF_RECIPIENT:OFF_RECIPIENT + RECIPIENT_LEN] = bytes(recipient).ljust(RECIPIENT_LEN, b"\0")
    view[OFF_SURB_ID:OFF_SURB_ID + SURB_ID_LEN] = bytes(surb_id).ljust(SURB_ID_LEN, b"\0")


cdef inline int64_t thread_cpu_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline void burn_cpu(int64_t cost_ns) noexcept nogil:
    # Spin on this thread's CPU clock so the cost is CPU work, as the real unwrap's is.
    cdef int64_t until
    if cost_ns <= 0:
        return
    until = thread_cpu_ns() + cost_ns
    while thread_cpu_ns() < until:
        pass


def unwrap_batch(uint8_t[:, ::1] packets, Py_ssize_t n, const uint8_t[:, ::1] keys, result,
                 int64_t cost_ns=0):
    """Decode rows 0..n-1 of `packets` into `result`, spending `cost_ns` of CPU per packet nogil.
    Returns how many rows have status 0 (as the real unwrap_batch does)."""
    cdef int32_t[::1] status = result.status
    cdef int8_t[::1] key_index = result.key_index
    cdef uint8_t[:, ::1] tags = result.tags
    cdef uint8_t[::1] flags = result.flags
    cdef uint32_t[::1] delay_ms = result.delay_ms
    cdef uint8_t[:, ::1] next_hop = result.next_hop
    cdef uint8_t[:, ::1] recipient = result.recipient
    cdef uint8_t[:, ::1] surb_id = result.surb_id
    cdef Py_ssize_t i, ok = 0
    cdef const uint8_t *row
    if n < 0 or n > packets.shape[0]:
        raise ValueError(f"unwrap_standin: n={n} outside 0..{packets.shape[0]}")
    if n > status.shape[0]:
        raise ValueError(f"unwrap_standin: n={n} exceeds result capacity {status.shape[0]}")
    if packets.shape[1] != geometry.PACKET_LENGTH:
        raise ValueError(f"unwrap_standin: packet rows are {packets.shape[1]} bytes, "
                         f"expected {geometry.PACKET_LENGTH}")
    if not 1 <= keys.shape[0] <= geometry.MAX_TRIAL_KEYS or keys.shape[1] != 32:
        raise ValueError(f"unwrap_standin: keys must be uint8[1..3, 32], got "
                         f"[{keys.shape[0]}, {keys.shape[1]}]")
    with nogil:
        for i in range(n):
            burn_cpu(cost_ns)
            row = &packets[i, 0]
            status[i] = row[C_OFF_STATUS]
            key_index[i] = 0 if row[C_OFF_STATUS] == 0 else -1
            flags[i] = row[C_OFF_FLAGS]
            delay_ms[i] = ((<uint32_t>row[C_OFF_DELAY] << 24) | (<uint32_t>row[C_OFF_DELAY + 1] << 16)
                           | (<uint32_t>row[C_OFF_DELAY + 2] << 8) | <uint32_t>row[C_OFF_DELAY + 3])
            memcpy(&tags[i, 0], row + C_OFF_TAG, TAG_LEN)
            memcpy(&next_hop[i, 0], row + C_OFF_NEXT_HOP, HOP_LEN)
            memcpy(&recipient[i, 0], row + C_OFF_RECIPIENT, RECIPIENT_LEN)
            memcpy(&surb_id[i, 0], row + C_OFF_SURB_ID, SURB_ID_LEN)
            ok += row[C_OFF_STATUS] == 0
    return ok


class StandinUnwrapEngine:
    """Engine for `katzenpost.server.workers` running this stand-in with `cost_ns` per packet."""

    def __init__(self, cost_ns=0):
        if cost_ns < 0:
            raise ValueError(f"unwrap_standin: cost_ns must be >= 0, got {cost_ns}")
        self.cost_ns = int(cost_ns)

    def new_result(self, capacity):
        return StandinUnwrapResult(capacity)

    def unwrap(self, packets, n, keys, result):
        return unwrap_batch(packets, n, keys, result, self.cost_ns)
