# cython: boundscheck=False, wraparound=False, initializedcheck=False
"""Crypto-worker classification in one C pass (the reference server's crypto worker): drop reasons, packet
kinds, dwell-adjusted deadlines and next-hop indices for a batch of unwrap results.

Pure function on caller-owned arrays: no I/O, no Python objects inside the loop (which is `nogil`
C, but is called with the GIL held: it is too short to be worth a GIL hand-off). The reason and
kind codes are those of `katzenpost.server.counters.DropReason` and `katzenpost.server.workers`.
"""
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint32_t
from libc.string cimport memcmp

cdef enum:
    FLAG_NEXT_HOP = 1
    FLAG_RECIPIENT = 2
    FLAG_SURB_REPLY = 4
    FLAG_NODE_DELAY = 8
    FLAG_DUPLICATE = 16
    CMD_BITS = 15
    CMD_FORWARD = FLAG_NEXT_HOP | FLAG_NODE_DELAY
    CMD_TO_USER = FLAG_RECIPIENT | FLAG_NODE_DELAY
    CMD_UNRELIABLE = FLAG_RECIPIENT
    CMD_SURB_REPLY = FLAG_RECIPIENT | FLAG_SURB_REPLY

# Drop reasons (must equal katzenpost.server.counters.DropReason; a test checks it).
cdef enum:
    R_UNWRAP_FAILED = 2
    R_DUPLICATE_COMMAND = 3
    R_REPLAY = 4
    R_INVALID_COMMANDS = 5
    R_FORWARD_AT_PROVIDER = 6
    R_DELAY_TOO_LONG = 7
    R_DWELL_EXCEEDED = 8
    R_NO_ROUTE = 9
    R_TERMINAL_AT_MIX = 10
    R_CLIENT_BYPASS = 11
    R_KAETZCHEN_SURB_REPLY = 12
    R_COUNT = 32
    NO_DROP = 255

# Packet kinds (must equal katzenpost.server.workers.KIND_*).
cdef enum:
    K_FORWARD = 0
    K_TO_USER = 1
    K_UNRELIABLE_TO_USER = 2
    K_SURB_REPLY = 3
    K_KAETZCHEN = 4
    K_DECOY_SURB_REPLY = 5

cdef enum:
    NODE_ID_LEN = 32
    RECIPIENT_LEN = 64

REASON_CODES = {
    "UNWRAP_FAILED": R_UNWRAP_FAILED, "DUPLICATE_COMMAND": R_DUPLICATE_COMMAND, "REPLAY": R_REPLAY,
    "INVALID_COMMANDS": R_INVALID_COMMANDS, "FORWARD_AT_PROVIDER": R_FORWARD_AT_PROVIDER,
    "DELAY_TOO_LONG": R_DELAY_TOO_LONG, "DWELL_EXCEEDED": R_DWELL_EXCEEDED, "NO_ROUTE": R_NO_ROUTE,
    "TERMINAL_AT_MIX": R_TERMINAL_AT_MIX, "CLIENT_BYPASS": R_CLIENT_BYPASS,
    "KAETZCHEN_SURB_REPLY": R_KAETZCHEN_SURB_REPLY,
}
KIND_CODES = {"FORWARD": K_FORWARD, "TO_USER": K_TO_USER, "UNRELIABLE_TO_USER": K_UNRELIABLE_TO_USER,
              "SURB_REPLY": K_SURB_REPLY, "KAETZCHEN": K_KAETZCHEN, "DECOY_SURB_REPLY": K_DECOY_SURB_REPLY}
REASON_SLOTS = R_COUNT
NO_DROP_CODE = NO_DROP

cdef int64_t MS = 1000000
# Forward deadlines are monotonic microseconds (rounded up): whole milliseconds would add up to
# 1 ms to every packet's delay (the timer wheel and the I/O thread's timer work in microseconds).
cdef int64_t US = 1000
DEADLINE_UNIT_NS = US
DEFAULT_MAX_NODE_DELAY_MS = 3 * 20 * 60 * 1000      # NumMixKeys * the 20-minute epoch period


cdef Py_ssize_t find_row(const uint8_t *table, Py_ssize_t rows, Py_ssize_t width,
                         const uint8_t *key) noexcept nogil:
    """Index of `key` in `table` (rows sorted by memcmp), or -1."""
    cdef Py_ssize_t lo = 0, hi = rows, mid
    cdef int c
    while lo < hi:
        mid = (lo + hi) >> 1
        c = memcmp(table + mid * width, key, width)
        if c == 0:
            return mid
        if c < 0:
            lo = mid + 1
        else:
            hi = mid
    return -1


def replay_masks(result, Py_ssize_t n, uint8_t[:, ::1] masks):
    """masks[j, i] = 1 where packet i unwrapped with key j and has no duplicate command."""
    cdef const int32_t[::1] status = result.status
    cdef const uint8_t[::1] flags = result.flags
    cdef const int8_t[::1] key_index = result.key_index
    cdef Py_ssize_t i
    cdef int j
    if n < 0 or n > status.shape[0] or n > masks.shape[1]:
        raise ValueError(f"classify: n={n} exceeds the result or mask capacity")
    # GIL held on purpose: this is ~1 us of work, and under contention giving the
    # GIL up and taking it back costs far more than the loop itself.
    masks[:, :n] = 0
    for i in range(n):
        j = key_index[i]
        if status[i] == 0 and (flags[i] & FLAG_DUPLICATE) == 0 and 0 <= j < masks.shape[0]:
            masks[j, i] = 1


cdef struct RowsIn:
    const int32_t *status
    const uint8_t *flags
    const uint32_t *delay_ms
    const uint8_t *next_hop          # rows of NODE_ID_LEN
    const uint8_t *recipient         # rows of RECIPIENT_LEN
    const int64_t *recv_at_ns
    const uint8_t *from_client
    const uint8_t *replayed
    int64_t dequeue_ns
    int64_t now_ns
    bint is_provider
    int64_t max_node_delay_ms
    const uint8_t *route_ids
    const int32_t *route_index
    Py_ssize_t n_routes
    const uint8_t *endpoint_ids
    Py_ssize_t n_endpoints


cdef struct RowsOut:
    int64_t *drop_counts
    int32_t *fwd_rows
    int64_t *fwd_deadline_us
    int32_t *fwd_hop
    int32_t *local_rows
    uint8_t *local_kind
    uint8_t *row_reason
    Py_ssize_t n_fwd
    Py_ssize_t n_local


cdef void classify_rows(const RowsIn *a, RowsOut *o, Py_ssize_t n) noexcept nogil:
    """The reference crypto worker's classification, with its drops and dwell adjustment."""
    cdef Py_ssize_t i, pos
    cdef int reason, kind, cmd
    cdef int64_t delay, dwell
    o.n_fwd = 0
    o.n_local = 0
    for i in range(n):
        reason = NO_DROP
        kind = -1
        cmd = a.flags[i] & CMD_BITS
        if a.status[i] != 0:
            reason = R_UNWRAP_FAILED
        elif a.flags[i] & FLAG_DUPLICATE:
            reason = R_DUPLICATE_COMMAND
        elif a.replayed[i]:
            reason = R_REPLAY
        elif cmd == CMD_FORWARD:
            if a.is_provider and not a.from_client[i]:
                reason = R_FORWARD_AT_PROVIDER              # MustTerminate
            elif a.delay_ms[i] > a.max_node_delay_ms:
                reason = R_DELAY_TOO_LONG
            else:
                # Dwell adjustment as the reference scheduler does it (unwrap time excluded).
                delay = <int64_t>a.delay_ms[i] * MS
                dwell = a.dequeue_ns - a.recv_at_ns[i]
                if delay > dwell:
                    delay = delay - dwell
                elif a.delay_ms[i] == 0:
                    if dwell < MS:
                        delay = MS - dwell
                    else:
                        reason = R_DWELL_EXCEEDED
                else:
                    delay = MS
                if reason == NO_DROP:
                    pos = -1
                    if a.n_routes:
                        pos = find_row(a.route_ids, a.n_routes, NODE_ID_LEN, a.next_hop + i * NODE_ID_LEN)
                    if pos < 0:
                        reason = R_NO_ROUTE
                    else:
                        o.fwd_rows[o.n_fwd] = <int32_t>i
                        # Rounded up: a packet never leaves before its delay has passed.
                        o.fwd_deadline_us[o.n_fwd] = (a.now_ns + delay + US - 1) // US
                        o.fwd_hop[o.n_fwd] = a.route_index[pos]
                        o.n_fwd += 1
        elif cmd == CMD_TO_USER or cmd == CMD_UNRELIABLE or cmd == CMD_SURB_REPLY:
            if a.is_provider:
                if a.from_client[i]:
                    reason = R_CLIENT_BYPASS                  # MustForward
                elif a.n_endpoints and find_row(a.endpoint_ids, a.n_endpoints, RECIPIENT_LEN,
                                                a.recipient + i * RECIPIENT_LEN) >= 0:
                    if cmd == CMD_SURB_REPLY:
                        reason = R_KAETZCHEN_SURB_REPLY
                    else:
                        kind = K_KAETZCHEN
                elif cmd == CMD_TO_USER:
                    kind = K_TO_USER
                elif cmd == CMD_UNRELIABLE:
                    kind = K_UNRELIABLE_TO_USER
                else:
                    kind = K_SURB_REPLY
            elif cmd == CMD_SURB_REPLY:
                kind = K_DECOY_SURB_REPLY
            else:
                reason = R_TERMINAL_AT_MIX
        else:
            reason = R_INVALID_COMMANDS
        o.row_reason[i] = <uint8_t>reason
        if reason != NO_DROP:
            o.drop_counts[reason] += 1
        elif kind >= 0:
            o.local_rows[o.n_local] = <int32_t>i
            o.local_kind[o.n_local] = <uint8_t>kind
            o.n_local += 1


cdef int point_rows_in(RowsIn *a, const int32_t[::1] status, const uint8_t[::1] flags,
                       const uint32_t[::1] delay_ms, const uint8_t[:, ::1] next_hop,
                       const uint8_t[:, ::1] recipient, Py_ssize_t n) except -1:
    """Point `a` at the result arrays after checking their shapes hold n rows. The pointers are
    only as good as the caller's hold on these memoryviews (which keep the arrays alive)."""
    if n < 0 or n > status.shape[0] or n > flags.shape[0] or n > delay_ms.shape[0] \
            or n > next_hop.shape[0] or n > recipient.shape[0]:
        raise ValueError(f"classify: n={n} outside the result capacity {status.shape[0]}")
    if next_hop.shape[1] != NODE_ID_LEN or recipient.shape[1] != RECIPIENT_LEN:
        raise ValueError("classify: result next_hop must be [N, 32] and recipient [N, 64]")
    a.status = &status[0]
    a.flags = &flags[0]
    a.delay_ms = &delay_ms[0]
    a.next_hop = &next_hop[0, 0]
    a.recipient = &recipient[0, 0]
    return 0


cdef int fill_rows_in(RowsIn *a, result, Py_ssize_t n) except -1:
    """point_rows_in for one call: the caller's `result` holds the arrays while it runs."""
    return point_rows_in(a, result.status, result.flags, result.delay_ms, result.next_hop,
                         result.recipient, n)


def classify_batch(result, Py_ssize_t n, const int64_t[::1] recv_at_ns, const uint8_t[::1] from_client,
                   const uint8_t[::1] replayed, int64_t dequeue_ns, int64_t now_ns, bint is_provider,
                   const uint8_t[:, ::1] route_ids, const int32_t[::1] route_index,
                   const uint8_t[:, ::1] endpoint_ids, int64_t[::1] drop_counts,
                   int32_t[::1] fwd_rows, int64_t[::1] fwd_deadline_us, int32_t[::1] fwd_hop,
                   int32_t[::1] local_rows, uint8_t[::1] local_kind, uint8_t[::1] row_reason,
                   int64_t max_node_delay_ms=DEFAULT_MAX_NODE_DELAY_MS):
    """Classify rows 0..n-1; returns (forward count, local count). Drops add to drop_counts[reason]
    and row_reason[i] holds each row's reason (NO_DROP_CODE if kept). NodeDelay above
    max_node_delay_ms (NumMixKeys x epoch period) is dropped.

    Route rows must be sorted (bytewise) with route_index aligned; endpoint rows sorted, 64 bytes.
    """
    cdef RowsIn a
    cdef RowsOut o
    cdef Py_ssize_t n_routes = route_ids.shape[0], n_endpoints = endpoint_ids.shape[0]
    if n == 0:
        return 0, 0
    fill_rows_in(&a, result, n)
    for arr_len, name in ((recv_at_ns.shape[0], "recv_at_ns"), (from_client.shape[0], "from_client"),
                          (replayed.shape[0], "replayed"), (fwd_rows.shape[0], "fwd_rows"),
                          (fwd_deadline_us.shape[0], "fwd_deadline_us"), (fwd_hop.shape[0], "fwd_hop"),
                          (local_rows.shape[0], "local_rows"), (local_kind.shape[0], "local_kind"),
                          (row_reason.shape[0], "row_reason")):
        if arr_len < n:
            raise ValueError(f"classify: {name} holds {arr_len} rows, need {n}")
    if drop_counts.shape[0] < R_COUNT:
        raise ValueError(f"classify: drop_counts needs {R_COUNT} slots")
    if n_routes and (route_ids.shape[1] != NODE_ID_LEN or route_index.shape[0] != n_routes):
        raise ValueError("classify: route table must be uint8[R, 32] with int32[R] indices")
    if n_endpoints and endpoint_ids.shape[1] != RECIPIENT_LEN:
        raise ValueError("classify: endpoint table must be uint8[E, 64]")
    a.recv_at_ns = &recv_at_ns[0]
    a.from_client = &from_client[0]
    a.replayed = &replayed[0]
    a.dequeue_ns = dequeue_ns
    a.now_ns = now_ns
    a.is_provider = is_provider
    a.max_node_delay_ms = max_node_delay_ms
    a.route_ids = &route_ids[0, 0] if n_routes else NULL
    a.route_index = &route_index[0] if n_routes else NULL
    a.n_routes = n_routes
    a.endpoint_ids = &endpoint_ids[0, 0] if n_endpoints else NULL
    a.n_endpoints = n_endpoints
    o.drop_counts = &drop_counts[0]
    o.fwd_rows = &fwd_rows[0]
    o.fwd_deadline_us = &fwd_deadline_us[0]
    o.fwd_hop = &fwd_hop[0]
    o.local_rows = &local_rows[0]
    o.local_kind = &local_kind[0]
    o.row_reason = &row_reason[0]
    # GIL held on purpose: this is ~1 us of work, and under contention giving the
    # GIL up and taking it back costs far more than the loop itself.
    classify_rows(&a, &o, n)
    return o.n_fwd, o.n_local


cdef class BatchClassifier:
    """A crypto worker's classifier bound once to its unwrap result and output arrays, so each
    batch costs two buffer look-ups instead of twenty (the per-batch cost is what holds the GIL).

    Outputs are numpy attributes: fwd_rows, fwd_deadline_us, fwd_hop, local_rows, local_kind,
    row_reason, masks, seen. Drops are added into the caller's `drop_counts` (int64[>=32]).
    """
    cdef RowsIn a
    cdef RowsOut o
    cdef readonly Py_ssize_t capacity
    cdef readonly object result, drop_counts, fwd_rows, fwd_deadline_us, fwd_hop, local_rows
    cdef readonly object local_kind, row_reason, masks, seen
    cdef object _routes, _route_index, _endpoints
    cdef const int8_t[::1] key_index
    cdef uint8_t[:, ::1] mask_view
    cdef uint8_t[::1] seen_view
    # The owners of every array `a` and `o` point into: each memoryview holds its buffer (and so
    # the array) for the classifier's lifetime, whatever happens to `result`'s attributes.
    cdef const int32_t[::1] status_view
    cdef const uint8_t[::1] flags_view
    cdef const uint32_t[::1] delay_view
    cdef const uint8_t[:, ::1] next_hop_view, recipient_view
    cdef int64_t[::1] drops_view, fwd_deadline_view
    cdef int32_t[::1] fwd_rows_view, fwd_hop_view, local_rows_view
    cdef uint8_t[::1] local_kind_view, row_reason_view

    def __init__(self, result, int64_t[::1] drop_counts, bint is_provider,
                 int64_t max_node_delay_ms=DEFAULT_MAX_NODE_DELAY_MS):
        import numpy as np
        cdef Py_ssize_t cap = len(result.status)
        if drop_counts.shape[0] < R_COUNT:
            raise ValueError(f"classify: drop_counts needs {R_COUNT} slots")
        self.status_view, self.flags_view = result.status, result.flags
        self.delay_view = result.delay_ms
        self.next_hop_view, self.recipient_view = result.next_hop, result.recipient
        point_rows_in(&self.a, self.status_view, self.flags_view, self.delay_view,
                      self.next_hop_view, self.recipient_view, cap)
        self.capacity = cap
        self.result = result
        self.key_index = result.key_index
        if self.key_index.shape[0] < cap:
            raise ValueError("classify: result key_index shorter than status")
        self.drop_counts = drop_counts.base if drop_counts.base is not None else drop_counts
        self.fwd_rows = np.zeros(cap, np.int32)
        self.fwd_deadline_us = np.zeros(cap, np.int64)
        self.fwd_hop = np.zeros(cap, np.int32)
        self.local_rows = np.zeros(cap, np.int32)
        self.local_kind = np.zeros(cap, np.uint8)
        self.row_reason = np.zeros(cap, np.uint8)
        self.masks = np.zeros((3, cap), np.uint8)
        self.seen = np.zeros(cap, np.uint8)
        self.mask_view = self.masks
        self.seen_view = self.seen
        self.drops_view = drop_counts
        self.fwd_rows_view, self.fwd_deadline_view = self.fwd_rows, self.fwd_deadline_us
        self.fwd_hop_view, self.local_rows_view = self.fwd_hop, self.local_rows
        self.local_kind_view, self.row_reason_view = self.local_kind, self.row_reason
        self.o.drop_counts = &self.drops_view[0]
        self.o.fwd_rows = &self.fwd_rows_view[0]
        self.o.fwd_deadline_us = &self.fwd_deadline_view[0]
        self.o.fwd_hop = &self.fwd_hop_view[0]
        self.o.local_rows = &self.local_rows_view[0]
        self.o.local_kind = &self.local_kind_view[0]
        self.o.row_reason = &self.row_reason_view[0]
        self.a.replayed = &self.seen_view[0]
        self.a.is_provider = is_provider
        self.a.max_node_delay_ms = max_node_delay_ms
        self.set_routes(np.zeros((0, NODE_ID_LEN), np.uint8), np.zeros(0, np.int32))
        self.set_endpoints(np.zeros((0, RECIPIENT_LEN), np.uint8))

    def set_routes(self, const uint8_t[:, ::1] route_ids, const int32_t[::1] route_index):
        """Sorted uint8[R, 32] node IDs with their int32 hop indices (kept referenced here)."""
        cdef Py_ssize_t r = route_ids.shape[0]
        if r and (route_ids.shape[1] != NODE_ID_LEN or route_index.shape[0] != r):
            raise ValueError("classify: route table must be uint8[R, 32] with int32[R] indices")
        self._routes, self._route_index = route_ids, route_index
        self.a.route_ids = &route_ids[0, 0] if r else NULL
        self.a.route_index = &route_index[0] if r else NULL
        self.a.n_routes = r

    def set_endpoints(self, const uint8_t[:, ::1] endpoint_ids):
        """Sorted uint8[E, 64] Kaetzchen endpoint recipient IDs (kept referenced here)."""
        cdef Py_ssize_t e = endpoint_ids.shape[0]
        if e and endpoint_ids.shape[1] != RECIPIENT_LEN:
            raise ValueError("classify: endpoint table must be uint8[E, 64]")
        self._endpoints = endpoint_ids
        self.a.endpoint_ids = &endpoint_ids[0, 0] if e else NULL
        self.a.n_endpoints = e

    def replay_masks(self, Py_ssize_t n):
        """masks[j, :n] selects rows that unwrapped with key j (no duplicate); clears seen[:n]."""
        cdef Py_ssize_t i
        cdef int j
        if n < 0 or n > self.capacity:
            raise ValueError(f"classify: n={n} outside 0..{self.capacity}")
        # GIL held on purpose: this is ~1 us of work, and under contention giving the
        # GIL up and taking it back costs far more than the loop itself.
        self.mask_view[:, :n] = 0
        self.seen_view[:n] = 0
        for i in range(n):
            j = self.key_index[i]
            if self.a.status[i] == 0 and (self.a.flags[i] & FLAG_DUPLICATE) == 0 and 0 <= j < 3:
                self.mask_view[j, i] = 1

    def classify(self, Py_ssize_t n, const int64_t[::1] recv_at_ns, const uint8_t[::1] from_client,
                 int64_t dequeue_ns, int64_t now_ns):
        """Classify rows 0..n-1 of the bound result, replays taken from `seen`; (n_fwd, n_local)."""
        if n < 0 or n > self.capacity or recv_at_ns.shape[0] < n or from_client.shape[0] < n:
            raise ValueError(f"classify: n={n} exceeds the capacity or the input arrays")
        if n == 0:
            return 0, 0
        self.a.recv_at_ns = &recv_at_ns[0]
        self.a.from_client = &from_client[0]
        self.a.dequeue_ns = dequeue_ns
        self.a.now_ns = now_ns
        # GIL held on purpose: this is ~1 us of work, and under contention giving the
        # GIL up and taking it back costs far more than the loop itself.
        classify_rows(&self.a, &self.o, n)
        # The inputs belong to this call only: no pointer into them outlives it.
        self.a.recv_at_ns = NULL
        self.a.from_client = NULL
        return self.o.n_fwd, self.o.n_local
