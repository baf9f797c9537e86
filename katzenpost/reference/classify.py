"""Pure-Python twin of `katzenpost._core.classify` (the reference crypto worker), row by row as
the reference reads. Used only by the differential tests and as the benchmark baseline; never by the server.
"""
FLAG_NEXT_HOP, FLAG_RECIPIENT, FLAG_SURB_REPLY, FLAG_NODE_DELAY, FLAG_DUPLICATE = 1, 2, 4, 8, 16
CMD_FORWARD = FLAG_NEXT_HOP | FLAG_NODE_DELAY
CMD_TO_USER = FLAG_RECIPIENT | FLAG_NODE_DELAY
CMD_UNRELIABLE = FLAG_RECIPIENT
CMD_SURB_REPLY = FLAG_RECIPIENT | FLAG_SURB_REPLY

REASON_CODES = {
    "UNWRAP_FAILED": 2, "DUPLICATE_COMMAND": 3, "REPLAY": 4, "INVALID_COMMANDS": 5,
    "FORWARD_AT_PROVIDER": 6, "DELAY_TOO_LONG": 7, "DWELL_EXCEEDED": 8, "NO_ROUTE": 9,
    "TERMINAL_AT_MIX": 10, "CLIENT_BYPASS": 11, "KAETZCHEN_SURB_REPLY": 12,
}
KIND_CODES = {"FORWARD": 0, "TO_USER": 1, "UNRELIABLE_TO_USER": 2, "SURB_REPLY": 3, "KAETZCHEN": 4,
              "DECOY_SURB_REPLY": 5}
REASON_SLOTS = 32
NO_DROP_CODE = 255
MS = 1_000_000
US = 1_000                  # forward deadlines are monotonic microseconds, rounded up
DEFAULT_MAX_NODE_DELAY_MS = 3 * 20 * 60 * 1000


def replay_masks(result, n, masks):
    masks[:, :n] = 0
    for i in range(n):
        j = int(result.key_index[i])
        if result.status[i] == 0 and not result.flags[i] & FLAG_DUPLICATE and 0 <= j < masks.shape[0]:
            masks[j, i] = 1


def dwell_adjusted_delay(node_delay_ms, dwell_ns):
    """Delay in ns after the dwell adjustment, or None when the packet must be dropped."""
    delay = node_delay_ms * MS
    if delay > dwell_ns:
        return delay - dwell_ns
    if node_delay_ms == 0:
        return MS - dwell_ns if dwell_ns < MS else None
    return MS


def classify_batch(result, n, recv_at_ns, from_client, replayed, dequeue_ns, now_ns, is_provider,
                   route_ids, route_index, endpoint_ids, drop_counts, fwd_rows, fwd_deadline_us, fwd_hop,
                   local_rows, local_kind, row_reason, max_node_delay_ms=DEFAULT_MAX_NODE_DELAY_MS):
    routes = {bytes(route_ids[r]): int(route_index[r]) for r in range(len(route_ids))}
    endpoints = {bytes(endpoint_ids[e]) for e in range(len(endpoint_ids))}
    n_fwd = n_local = 0
    for i in range(n):
        reason, kind = None, None
        cmd = int(result.flags[i]) & 15
        if result.status[i] != 0:
            reason = "UNWRAP_FAILED"
        elif result.flags[i] & FLAG_DUPLICATE:
            reason = "DUPLICATE_COMMAND"
        elif replayed[i]:
            reason = "REPLAY"
        elif cmd == CMD_FORWARD:
            node_delay = int(result.delay_ms[i])
            if is_provider and not from_client[i]:
                reason = "FORWARD_AT_PROVIDER"
            elif node_delay > max_node_delay_ms:
                reason = "DELAY_TOO_LONG"
            else:
                delay = dwell_adjusted_delay(node_delay, dequeue_ns - int(recv_at_ns[i]))
                hop = routes.get(bytes(result.next_hop[i]))
                if delay is None:
                    reason = "DWELL_EXCEEDED"
                elif hop is None:
                    reason = "NO_ROUTE"
                else:
                    fwd_rows[n_fwd] = i
                    fwd_deadline_us[n_fwd] = -(-(now_ns + delay) // US)
                    fwd_hop[n_fwd] = hop
                    n_fwd += 1
        elif cmd in (CMD_TO_USER, CMD_UNRELIABLE, CMD_SURB_REPLY):
            if not is_provider:
                kind, reason = ("DECOY_SURB_REPLY", None) if cmd == CMD_SURB_REPLY else (None, "TERMINAL_AT_MIX")
            elif from_client[i]:
                reason = "CLIENT_BYPASS"
            elif bytes(result.recipient[i]) in endpoints:
                kind, reason = (None, "KAETZCHEN_SURB_REPLY") if cmd == CMD_SURB_REPLY else ("KAETZCHEN", None)
            else:
                kind = {CMD_TO_USER: "TO_USER", CMD_UNRELIABLE: "UNRELIABLE_TO_USER",
                        CMD_SURB_REPLY: "SURB_REPLY"}[cmd]
        else:
            reason = "INVALID_COMMANDS"
        row_reason[i] = REASON_CODES[reason] if reason else NO_DROP_CODE
        if reason:
            drop_counts[REASON_CODES[reason]] += 1
        elif kind:
            local_rows[n_local] = i
            local_kind[n_local] = KIND_CODES[kind]
            n_local += 1
    return n_fwd, n_local
