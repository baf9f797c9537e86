"""pyperf benchmark of the scheduler's timer wheel: steady-state insert + expire in batches of 256
(as many packets expire as arrive) at 40 k and 1 M queued packets, against heapq doing the same work
in the same run, and the memory per queued packet.

    python3 bench/bench_wheel.py --fast
Values are the thread's CPU seconds per packet (one insert plus one expiry); 3 M packets/s is
333 ns. CPU time, because on the shared 2-core machine wall time mostly measured preemption.
"""

import heapq
import os
import sys
import time

import numpy as np
import pyperf

# Run from a source checkout without installing (pyperf workers do not inherit PYTHONPATH).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from katzenpost._core.wheel import TimerWheel  # noqa: E402
from katzenpost.sphinx.geometry import PACKET_LENGTH  # noqa: E402

BATCH = 256
SPAN_MS = 8000          # deadlines uniform in [now, now + 8 s): mean delay 4 s, as Mu = 1/4 s
OUT_ROWS = 256        # out arrays stay cache-resident, as the scheduler's burst-sized ones do
SCENARIOS = {           # name: (queued packets, packet length)
    "40k_full_packets": (40_000, PACKET_LENGTH),
    "40k_32B": (40_000, 32),
    "1M_64B": (1_000_000, 64),
}
_state = {}


class Workload:
    """Arrivals of 256 packets per step; the step is chosen so the queue stays at `queued` (Little)."""

    def __init__(self, queued, packet_len):
        self.rng = np.random.default_rng(1)
        self.step_ms = max(1, round(BATCH * SPAN_MS / (2 * queued)))
        self.packets = self.rng.integers(0, 256, (BATCH, packet_len), dtype=np.uint8)
        self.hops = np.arange(BATCH, dtype=np.int32)
        self.offsets = [self.rng.integers(0, SPAN_MS, BATCH).astype(np.int64) for _ in range(64)]
        self.now = 1_000_000


def make_wheel(queued, packet_len):
    work = Workload(queued, packet_len)
    wheel = TimerWheel(0, packet_len, 1)
    out = (np.zeros((OUT_ROWS, packet_len), np.uint8), np.zeros(OUT_ROWS, np.int32), np.zeros(OUT_ROWS, np.int64))
    for i in range(queued // BATCH):
        wheel.insert_batch(work.now + work.offsets[i % 64], work.hops, work.packets)
    return work, wheel, out


def run_wheel(loops, name):
    if name not in _state:
        _state[name] = make_wheel(*SCENARIOS[name])
    work, wheel, (out_p, out_h, out_d) = _state[name]
    start = time.thread_time()
    for i in range(loops):
        wheel.insert_batch(work.now + work.offsets[i % 64], work.hops, work.packets)
        work.now += work.step_ms
        while wheel.pop_due(work.now, OUT_ROWS, 1 << 40, out_p, out_h, out_d) == OUT_ROWS:
            pass
    return time.thread_time() - start


def make_heap(queued, packet_len):
    work = Workload(queued, packet_len)
    rows = [bytes(r) for r in work.packets]
    heap, seq = [], 0
    for i in range(queued // BATCH):
        for off, hop, row in zip(work.offsets[i % 64].tolist(), work.hops.tolist(), rows):
            heapq.heappush(heap, (work.now + off, seq, hop, row))
            seq += 1
    return work, heap, rows, [seq]


def run_heapq(loops, name):
    """Baseline: heapq of (deadline, seq, hop, packet bytes); no copies of the packet bytes."""
    key = "heap-" + name
    if key not in _state:
        _state[key] = make_heap(*SCENARIOS[name])
    work, heap, rows, seq_box = _state[key]
    hops = work.hops.tolist()
    seq = seq_box[0]
    out = []
    start = time.thread_time()
    for i in range(loops):
        now = work.now
        for off, hop, row in zip(work.offsets[i % 64].tolist(), hops, rows):
            heapq.heappush(heap, (now + off, seq, hop, row))
            seq += 1
        work.now = now = now + work.step_ms
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap))
        out.clear()
    elapsed = time.thread_time() - start
    seq_box[0] = seq
    return elapsed


def report_memory():
    fixed = TimerWheel(1, 1, 1).nbytes - 1 - 32  # wheel state (bucket heads, bitmaps): per wheel, not per packet
    for queued, packet_len in [(40_000, PACKET_LENGTH), (1_000_000, 64)]:
        wheel = TimerWheel(queued, packet_len, 1)
        per_packet = (wheel.nbytes - fixed) / queued
        print(f"memory: {queued:,} x {packet_len} B bounded arena = {wheel.nbytes / 2**20:.1f} MiB: "
              f"packet + {per_packet - packet_len:.1f} B per queued packet (target <= +32) "
              f"+ {fixed / 1024:.1f} KiB per wheel")


def main():
    runner = pyperf.Runner(values=3, processes=3)
    args = runner.parse_args()
    results = {}
    for name in SCENARIOS:
        results["wheel_" + name] = runner.bench_time_func("wheel_" + name, run_wheel, name, inner_loops=BATCH)
        results["heapq_" + name] = runner.bench_time_func("heapq_" + name, run_heapq, name, inner_loops=BATCH)
    if args.worker or any(b is None for b in results.values()):
        return
    for name in SCENARIOS:
        wheel, heap = results["wheel_" + name].mean(), results["heapq_" + name].mean()
        print(f"{name}: wheel {wheel * 1e9:.0f} ns/packet = {1 / wheel / 1e6:.2f} M packets/s "
              f"(target >= 3), heapq {heap * 1e9:.0f} ns/packet, wheel is {heap / wheel:.2f}x heapq")
    report_memory()


if __name__ == "__main__":
    main()
