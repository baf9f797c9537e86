"""pyperf benchmark of the scheduler's timer wheel: steady-state insert + expire in batches of 256
(as many packets expire as arrive) at 40 k and 1 M queued packets, against heapq doing the same work
in the same run, and the memory per queued packet. Expiry is measured both copying (pop_due) and
zero-copy (pop_due_slots + release; "+view" also takes the rows' arena_views, as a zmq sender
would). "floor" is the bare memory cost every design pays: scattering the same 256 packet rows into
an arena of the same size (numpy, no queue at all); with 40 k full packets (100 MiB) the machine's
memory bandwidth, not the wheel, sets the rate.

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
SCENARIOS = {           # name: (queued packets, packet length[, ticks per ms])
    "40k_full_packets": (40_000, PACKET_LENGTH),
    # The node's unit: deadlines in microseconds (two or three cascades a packet instead of one).
    "40k_full_packets_us": (40_000, PACKET_LENGTH, 1000),
    "40k_32B": (40_000, 32),
    "1M_64B": (1_000_000, 64),
}
POP_MODES = ("copy", "slots", "slots+view")
_state = {}


class Workload:
    """Arrivals of 256 packets per step; the step is chosen so the queue stays at `queued` (Little)."""

    def __init__(self, queued, packet_len, ticks_per_ms=1):
        self.rng = np.random.default_rng(1)
        self.step_ms = max(1, round(BATCH * SPAN_MS / (2 * queued))) * ticks_per_ms   # in ticks
        self.packets = self.rng.integers(0, 256, (BATCH, packet_len), dtype=np.uint8)
        self.hops = np.arange(BATCH, dtype=np.int32)
        self.offsets = [self.rng.integers(0, SPAN_MS * ticks_per_ms, BATCH).astype(np.int64)
                        for _ in range(64)]
        self.now = 1_000_000


def make_wheel(queued, packet_len, ticks_per_ms=1):
    work = Workload(queued, packet_len, ticks_per_ms)
    wheel = TimerWheel(0, packet_len, 1)
    out = (np.zeros((OUT_ROWS, packet_len), np.uint8), np.zeros(OUT_ROWS, np.int32),
           np.zeros(OUT_ROWS, np.int64), np.zeros(OUT_ROWS, np.int32))
    for i in range(queued // BATCH):
        wheel.insert_batch(work.now + work.offsets[i % 64], work.hops, work.packets)
    return work, wheel, out


def expire_copy(wheel, now, out):
    out_p, out_h, out_d, _ = out
    while wheel.pop_due(now, OUT_ROWS, 1 << 40, out_p, out_h, out_d) == OUT_ROWS:
        pass


def expire_slots(wheel, now, out, view=False):
    _, out_h, out_d, out_s = out
    while True:
        got = wheel.pop_due_slots(now, OUT_ROWS, 1 << 40, out_s, out_h, out_d)
        if view:
            wheel.arena_views(out_s, got)
        wheel.release(out_s, got)
        if got < OUT_ROWS:
            return


def run_wheel(loops, name, mode):
    if name not in _state:
        _state[name] = make_wheel(*SCENARIOS[name])
    work, wheel, out = _state[name]
    start = time.thread_time()
    for i in range(loops):
        wheel.insert_batch(work.now + work.offsets[i % 64], work.hops, work.packets)
        work.now += work.step_ms
        if mode == "copy":
            expire_copy(wheel, work.now, out)
        else:
            expire_slots(wheel, work.now, out, mode == "slots+view")
    return time.thread_time() - start


def make_floor(queued, packet_len, ticks_per_ms=1):
    work = Workload(queued, packet_len)
    arena = np.ones((queued, packet_len), np.uint8)
    rows = [work.rng.integers(0, queued, BATCH) for _ in range(64)]
    return work, arena, rows


def run_floor(loops, name):
    key = "floor-" + name
    if key not in _state:
        _state[key] = make_floor(*SCENARIOS[name])
    work, arena, rows = _state[key]
    start = time.thread_time()
    for i in range(loops):
        arena[rows[i % 64]] = work.packets
    return time.thread_time() - start


def make_heap(queued, packet_len, ticks_per_ms=1):
    work = Workload(queued, packet_len, ticks_per_ms)
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
        work = Workload(queued, packet_len)
        for i in range(queued // BATCH + 1):
            wheel.insert_batch(work.now + work.offsets[i % 64], work.hops, work.packets)
        per_packet = (wheel.nbytes - fixed) / queued
        print(f"memory: {len(wheel):,} x {packet_len} B queued (capacity {queued:,}) = "
              f"{wheel.nbytes / 2**20:.1f} MiB: packet + {per_packet - packet_len:.1f} B per queued packet "
              f"(target <= +32) + {fixed / 1024:.1f} KiB per wheel")
    huge = TimerWheel(1 << 24, PACKET_LENGTH, 1)
    print(f"memory: empty wheel with capacity 2^24 x {PACKET_LENGTH} B = {huge.nbytes / 2**20:.1f} MiB "
          f"(arena grows in chunks of {huge.arena_slots} packets)")


def main():
    runner = pyperf.Runner(values=3, processes=3)
    args = runner.parse_args()
    results = {}
    for name in SCENARIOS:
        for mode in POP_MODES:
            results[f"wheel_{name}_{mode}"] = runner.bench_time_func(
                f"wheel_{name}_{mode}", run_wheel, name, mode, inner_loops=BATCH)
        results["heapq_" + name] = runner.bench_time_func("heapq_" + name, run_heapq, name, inner_loops=BATCH)
        results["floor_" + name] = runner.bench_time_func("floor_" + name, run_floor, name, inner_loops=BATCH)
    if args.worker or any(b is None for b in results.values()):
        return
    for name in SCENARIOS:
        heap, floor = results["heapq_" + name].mean(), results["floor_" + name].mean()
        for mode in POP_MODES:
            wheel = results[f"wheel_{name}_{mode}"].mean()
            print(f"{name} [{mode}]: wheel {wheel * 1e9:.0f} ns/packet = {1 / wheel / 1e6:.2f} M packets/s "
                  f"(target >= 3), heapq {heap * 1e9:.0f} ns/packet, wheel is {heap / wheel:.2f}x heapq, "
                  f"{wheel / floor:.2f}x the row-scatter floor ({floor * 1e9:.0f} ns)")
    report_memory()


if __name__ == "__main__":
    main()
