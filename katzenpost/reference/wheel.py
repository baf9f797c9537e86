"""Pure-Python twin of katzenpost._core.wheel on heapq: the same dispatch order (deadline, then
insertion order), burst cap, late drops and random full-queue victims (same generator, same slot
numbering). For differential tests and the benchmark baseline only; never used by the node."""

import heapq

MASK64 = (1 << 64) - 1


class SplitMix64:
    """The wheel's generator: splitmix64 with Lemire's unbiased reduction to [0, bound)."""

    def __init__(self, seed: int):
        self.state = seed & MASK64

    def next64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, bound: int) -> int:
        m = self.next64() * bound
        if (m & MASK64) < bound:
            threshold = (-bound) % bound
            while (m & MASK64) < threshold:
                m = self.next64() * bound
        return m >> 64


class ReferenceWheel:
    """Same API as TimerWheel, with Python lists instead of numpy out arrays."""

    def __init__(self, capacity: int, packet_len: int, seed: int):
        self.limit = capacity if capacity > 0 else 0
        self.packet_len = packet_len
        self.rng = SplitMix64(seed)
        self.heap = []                 # (deadline, seq, slot); stale entries skipped lazily
        self.live = {}                 # slot -> (seq, deadline, hop, packet)
        # Slots are handed out lowest first and reused last-freed first, as the compiled free list does.
        self.free = list(range(self.limit - 1, -1, -1))
        self.next_unbounded_slot = 0
        self.seq = 0
        self.dropped_full = 0
        self.dropped_late = 0

    def __len__(self):
        return len(self.live)

    def _take_slot(self) -> int:
        if self.limit:
            return self.free.pop()
        self.next_unbounded_slot += 1
        return self.next_unbounded_slot - 1

    def insert_batch(self, deadlines, hops, packets) -> int:
        dropped = 0
        for deadline, hop, packet in zip(deadlines, hops, packets):
            if self.limit and len(self.live) >= self.limit:
                victim = self.rng.below(self.limit + 1)
                dropped += 1
                self.dropped_full += 1
                if victim == self.limit:
                    continue
                del self.live[victim]
                slot = victim
            else:
                slot = self._take_slot()
            self.live[slot] = (self.seq, int(deadline), int(hop), bytes(packet))
            heapq.heappush(self.heap, (int(deadline), self.seq, slot))
            self.seq += 1
        return dropped

    def _skip_stale(self):
        while self.heap:
            deadline, seq, slot = self.heap[0]
            entry = self.live.get(slot)
            if entry is not None and entry[0] == seq:
                return
            heapq.heappop(self.heap)

    def pop_due(self, now_ms: int, max_burst: int, slack_ms: int) -> list:
        """[(packet, hop, deadline), ...] of at most max_burst due packets, earliest first."""
        out = []
        while len(out) < max_burst:
            self._skip_stale()
            if not self.heap or self.heap[0][0] > now_ms:
                break
            deadline, _, slot = heapq.heappop(self.heap)
            _, _, hop, packet = self.live.pop(slot)
            if self.limit:
                self.free.append(slot)
            if now_ms - deadline > slack_ms:
                self.dropped_late += 1
            else:
                out.append((packet, hop, deadline))
        return out

    def next_deadline(self) -> int:
        self._skip_stale()
        return self.heap[0][0] if self.heap else -1
