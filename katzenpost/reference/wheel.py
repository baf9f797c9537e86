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
        self.held_rows = {}            # slot -> packet, popped by pop_due_slots, not released
        # Slots are reused last-freed first, fresh ones handed out in ascending order, as the
        # compiled free list does (fresh slots are appended at its tail when the arena grows).
        self.free = []
        self.fresh_slot = 0
        self.seq = 0
        self.dropped_full = 0
        self.dropped_late = 0

    def __len__(self):
        return len(self.live)

    @property
    def held(self) -> int:
        return len(self.held_rows)

    def _take_slot(self) -> int:
        if self.free:
            return self.free.pop()
        self.fresh_slot += 1
        return self.fresh_slot - 1

    def _pick_victim(self):
        """Slot of a uniformly random queued packet, or None for the new one; held slots are
        rejected and drawn again, and with nothing queued the new packet goes without a draw."""
        if not self.live:
            return None
        while True:
            victim = self.rng.below(self.limit + 1)
            if victim == self.limit:
                return None
            if victim not in self.held_rows:
                return victim

    def insert_batch(self, deadlines, hops, packets) -> int:
        dropped = 0
        for deadline, hop, packet in zip(deadlines, hops, packets):
            if self.limit and len(self.live) + len(self.held_rows) >= self.limit:
                dropped += 1
                self.dropped_full += 1
                slot = self._pick_victim()
                if slot is None:
                    continue
                del self.live[slot]
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

    def _take_due(self, now_ms: int, slack_ms: int):
        """(slot, packet, hop, deadline) of the next due packet not too late, or None; late ones
        on the way are dropped, counted and freed."""
        while True:
            self._skip_stale()
            if not self.heap or self.heap[0][0] > now_ms:
                return None
            deadline, _, slot = heapq.heappop(self.heap)
            _, _, hop, packet = self.live.pop(slot)
            if now_ms - deadline <= slack_ms:
                return slot, packet, hop, deadline
            self.dropped_late += 1
            self.free.append(slot)

    def pop_due(self, now_ms: int, max_burst: int, slack_ms: int) -> list:
        """[(packet, hop, deadline), ...] of at most max_burst due packets, earliest first."""
        return self._pop(now_ms, max_burst, slack_ms, hold=False)

    def pop_due_slots(self, now_ms: int, max_burst: int, slack_ms: int) -> list:
        """[(slot, hop, deadline), ...] like pop_due; the slots are held until release()."""
        return self._pop(now_ms, max_burst, slack_ms, hold=True)

    def _pop(self, now_ms: int, max_burst: int, slack_ms: int, hold: bool) -> list:
        out = []
        while len(out) < max_burst:
            due = self._take_due(now_ms, slack_ms)
            if due is None:
                break
            slot, packet, hop, deadline = due
            if hold:
                self.held_rows[slot] = packet
                out.append((slot, hop, deadline))
            else:
                self.free.append(slot)
                out.append((packet, hop, deadline))
        return out

    def release(self, slots) -> None:
        for slot in slots:
            del self.held_rows[slot]
            self.free.append(slot)

    def next_deadline(self) -> int:
        self._skip_stale()
        return self.heap[0][0] if self.heap else -1
