"""Batch unwrap for the crypto workers: many packets in one contiguous buffer, one nogil call.

Holds the per-packet result arrays (docs/interfaces.md "Sphinx batch unwrap"); it does not
classify packets or check replays (the server does).
"""
import numpy as np

from katzenpost._core import sphinx as _core
from katzenpost.sphinx import errors, geometry

FLAG_NEXT_HOP = 1
FLAG_RECIPIENT = 2
FLAG_SURB_REPLY = 4
FLAG_NODE_DELAY = 8
FLAG_DUPLICATE = 16  # a command type occurred more than once in the slot


class UnwrapBatch:
    """Per-packet results for up to `capacity` packets (numpy arrays, reused across calls)."""

    def __init__(self, capacity):
        if capacity < 1:
            raise ValueError(f"sphinx: UnwrapBatch capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.status = np.zeros(capacity, dtype=np.int32)
        self.key_index = np.full(capacity, -1, dtype=np.int8)
        self.tags = np.zeros((capacity, geometry.HASH_LENGTH), dtype=np.uint8)
        self.flags = np.zeros(capacity, dtype=np.uint8)
        self.delay_ms = np.zeros(capacity, dtype=np.uint32)
        self.next_hop = np.zeros((capacity, geometry.NODE_ID_LENGTH), dtype=np.uint8)
        self.recipient = np.zeros((capacity, geometry.RECIPIENT_ID_LENGTH), dtype=np.uint8)
        self.surb_id = np.zeros((capacity, geometry.SURB_ID_LENGTH), dtype=np.uint8)

    def message(self, i):
        """The reference's error message for packet i ('' if it unwrapped)."""
        code = int(self.status[i])
        return "" if code == errors.OK else errors.MESSAGES.get(code, f"sphinx: error {code}")


def keys_array(private_keys):
    """uint8[M, 32] from 1..3 raw X25519 private keys (tried in this order)."""
    key_len = geometry.GROUP_ELEMENT_LENGTH
    keys = np.frombuffer(b"".join(bytes(k) for k in private_keys), dtype=np.uint8)
    if not 1 <= len(private_keys) <= geometry.MAX_TRIAL_KEYS or keys.size != key_len * len(private_keys):
        raise ValueError(f"sphinx: need 1..{geometry.MAX_TRIAL_KEYS} private keys of {key_len} bytes")
    return keys.reshape(len(private_keys), key_len)


def unwrap_batch(packets, n, keys, result):
    """Unwrap rows 0..n-1 of `packets` (uint8[N, L], in place) with `keys` (uint8[M, 32]).

    Fills `result` (an UnwrapBatch) and returns the number of packets that unwrapped. Runs
    eight packets at a time; under the "ifma" X25519 backend their scalar multiplications
    share AVX-512 IFMA lanes (docs/sphinx-backends.md), with results identical to unwrapping
    each packet alone.
    """
    return _core.unwrap_batch(packets, n, keys, result)
