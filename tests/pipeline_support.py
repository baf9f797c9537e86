"""Helpers for the pipeline tests: stand-in packets, a recording sender, and simple doubles of
the timer wheel and replay filter used only while `_core.wheel` / `_core.replay` are absent.
"""
import asyncio
import heapq
import os

import numpy as np

from katzenpost._core import unwrap_standin
from katzenpost.sphinx import geometry

L = geometry.PACKET_LENGTH
FWD = unwrap_standin.FLAG_NEXT_HOP | unwrap_standin.FLAG_NODE_DELAY


def make_packet(flags=FWD, delay_ms=0, next_hop=b"", recipient=b"", surb_id=b"", status=0, tag=None,
                stamp=b""):
    packet = bytearray(L)
    unwrap_standin.encode_standin_packet(packet, flags=flags, delay_ms=delay_ms,
                                         tag=os.urandom(32) if tag is None else tag, next_hop=next_hop,
                                         recipient=recipient, surb_id=surb_id, status=status)
    packet[200:200 + len(stamp)] = stamp
    return bytes(packet)


class HeapWheel:
    """Same API as `_core.wheel.TimerWheel`, on heapq (test double until the real wheel lands)."""

    def __init__(self, capacity, packet_len, seed):
        self._cap, self._len_pkt = capacity, packet_len
        self._heap, self._seq = [], 0
        self._rng = np.random.default_rng(seed)
        self.dropped_full = 0
        self.dropped_late = 0

    def __len__(self):
        return len(self._heap)

    def insert_batch(self, deadline_ms, hop, packets, n):
        dropped = 0
        for i in range(n):
            self._seq += 1
            heapq.heappush(self._heap, (int(deadline_ms[i]), self._seq, int(hop[i]), bytes(packets[i])))
            if len(self._heap) > self._cap:
                victim = int(self._rng.integers(len(self._heap)))
                self._heap[victim] = self._heap[-1]
                self._heap.pop()
                heapq.heapify(self._heap)
                dropped += 1
        self.dropped_full += dropped
        return dropped

    def pop_due(self, now_ms, max_burst, slack_ms, out_packets, out_hop, out_deadline):
        count = 0
        while self._heap and count < max_burst and count < len(out_hop) and self._heap[0][0] <= now_ms:
            deadline, _, hop, packet = heapq.heappop(self._heap)
            if now_ms - deadline > slack_ms:
                self.dropped_late += 1
                continue
            out_packets[count] = np.frombuffer(packet, np.uint8)
            out_hop[count], out_deadline[count] = hop, deadline
            count += 1
        return count

    def next_deadline(self):
        return self._heap[0][0] if self._heap else -1


class SetReplayFilter:
    """Same check_and_add contract as `server.replay.ReplayFilter`, on a Python set (test double)."""

    def __init__(self):
        self._seen = set()

    def check_and_add(self, tags, mask, out):
        hits = 0
        for i in range(len(tags)):
            if mask is not None and not mask[i]:
                continue
            tag = bytes(tags[i])
            out[i] = 1 if tag in self._seen else 0
            hits += out[i]
            self._seen.add(tag)
        return hits


def wheel_factory():
    try:
        from katzenpost._core.wheel import TimerWheel
        return TimerWheel
    except ImportError:
        return HeapWheel


def replay_filter(tmp_path):
    try:
        from katzenpost.server.replay import ReplayFilter
    except ImportError:
        return SetReplayFilter()
    return ReplayFilter.create(str(tmp_path / f"replay-{os.urandom(4).hex()}"), 100_000, 1e-6)


class RecordingSender:
    """A PacketSender that keeps what it is given; can be paused like a full transport."""

    def __init__(self):
        self.packets = []
        self.paused = False
        self._resumed = asyncio.Event()

    def can_send(self):
        return not self.paused

    def send_packets(self, packets):
        assert not self.paused
        self.packets.extend(bytes(row) for row in packets)

    async def wait_writable(self):
        while self.paused:
            self._resumed.clear()
            await self._resumed.wait()

    def resume(self):
        self.paused = False
        self._resumed.set()
