# cython: boundscheck=False, wraparound=False, initializedcheck=False
"""Crypto-worker classification in one nogil pass (spec/server.md §1.3-1.5): drop reasons, packet
kinds, dwell-adjusted deadlines and next-hop indices for a batch of unwrap results.

Pure function on caller-owned arrays: no I/O, no Python objects inside the loop. The reason and
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
cdef int64_t MAX_NODE_DELAY_MS = 3 * 20 * 60 * 1000     # NumMixKeys * epoch period


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
    with nogil:
        masks[:, :n] = 0
        for i in range(n):
            j = key_index[i]
            if status[i] == 0 and (flags[i] & FLAG_DUPLICATE) == 0 and 0 <= j < masks.shape[0]:
                masks[j, i] = 1


def classify_batch(result, Py_ssize_t n, const int64_t[::1] recv_at_ns, const uint8_t[::1] from_client,
                   const uint8_t[::1] replayed, int64_t dequeue_ns, int64_t now_ns, bint is_provider,
                   const uint8_t[:, ::1] route_ids, const int32_t[::1] route_index,
                   const uint8_t[:, ::1] endpoint_ids, int64_t[::1] drop_counts,
                   int32_t[::1] fwd_rows, int64_t[::1] fwd_deadline_ms, int32_t[::1] fwd_hop,
                   int32_t[::1] local_rows, uint8_t[::1] local_kind, uint8_t[::1] row_reason):
    """Classify rows 0..n-1; returns (forward count, local count). Drops add to drop_counts[reason]
    and row_reason[i] holds each row's reason (NO_DROP_CODE if kept).

    Route rows must be sorted (bytewise) with route_index aligned; endpoint rows sorted, 64 bytes.
    """
    cdef const int32_t[::1] status = result.status
    cdef const uint8_t[::1] flags = result.flags
    cdef const uint32_t[::1] delay_ms = result.delay_ms
    cdef const uint8_t[:, ::1] next_hop = result.next_hop
    cdef const uint8_t[:, ::1] recipient = result.recipient
    cdef Py_ssize_t i, pos, n_fwd = 0, n_local = 0
    cdef Py_ssize_t n_routes = route_ids.shape[0], n_endpoints = endpoint_ids.shape[0]
    cdef int reason, kind, cmd
    cdef int64_t delay, dwell
    cdef const uint8_t *route_base = &route_ids[0, 0] if n_routes else NULL
    cdef const uint8_t *endpoint_base = &endpoint_ids[0, 0] if n_endpoints else NULL
    if n < 0 or n > status.shape[0]:
        raise ValueError(f"classify: n={n} outside 0..{status.shape[0]}")
    for arr_len, name in ((recv_at_ns.shape[0], "recv_at_ns"), (from_client.shape[0], "from_client"),
                          (replayed.shape[0], "replayed"), (fwd_rows.shape[0], "fwd_rows"),
                          (fwd_deadline_ms.shape[0], "fwd_deadline_ms"), (fwd_hop.shape[0], "fwd_hop"),
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
    with nogil:
        for i in range(n):
            reason = NO_DROP
            kind = -1
            cmd = flags[i] & CMD_BITS
            if status[i] != 0:
                reason = R_UNWRAP_FAILED
            elif flags[i] & FLAG_DUPLICATE:
                reason = R_DUPLICATE_COMMAND
            elif replayed[i]:
                reason = R_REPLAY
            elif cmd == CMD_FORWARD:
                if is_provider and not from_client[i]:
                    reason = R_FORWARD_AT_PROVIDER          # MustTerminate
                elif delay_ms[i] > MAX_NODE_DELAY_MS:
                    reason = R_DELAY_TOO_LONG
                else:
                    # Dwell adjustment, spec/server.md §1.5 (unwrap time excluded).
                    delay = <int64_t>delay_ms[i] * MS
                    dwell = dequeue_ns - recv_at_ns[i]
                    if delay > dwell:
                        delay = delay - dwell
                    elif delay_ms[i] == 0:
                        if dwell < MS:
                            delay = MS - dwell
                        else:
                            reason = R_DWELL_EXCEEDED
                    else:
                        delay = MS
                    if reason == NO_DROP:
                        pos = find_row(route_base, n_routes, NODE_ID_LEN, &next_hop[i, 0]) if n_routes else -1
                        if pos < 0:
                            reason = R_NO_ROUTE
                        else:
                            fwd_rows[n_fwd] = <int32_t>i
                            # Rounded up: a packet never leaves before its delay has passed.
                            fwd_deadline_ms[n_fwd] = (now_ns + delay + MS - 1) // MS
                            fwd_hop[n_fwd] = route_index[pos]
                            n_fwd += 1
            elif cmd == CMD_TO_USER or cmd == CMD_UNRELIABLE or cmd == CMD_SURB_REPLY:
                if is_provider:
                    if from_client[i]:
                        reason = R_CLIENT_BYPASS              # MustForward
                    elif n_endpoints and find_row(endpoint_base, n_endpoints, RECIPIENT_LEN,
                                                  &recipient[i, 0]) >= 0:
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
            row_reason[i] = <uint8_t>reason
            if reason != NO_DROP:
                drop_counts[reason] += 1
            elif kind >= 0:
                local_rows[n_local] = <int32_t>i
                local_kind[n_local] = <uint8_t>kind
                n_local += 1
    return n_fwd, n_local
