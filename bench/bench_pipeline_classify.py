"""pyperf benchmark of the classification step of a crypto worker's batch: `replay_masks` plus
`classify_batch` on a batch of 64 forward packets, `_core.classify` against its pure-Python
twin. It measures that step only, not the rest of a worker batch (the zmq receive, the unwrap,
the replay filter, building and sending the scheduler message).

    .venv/bin/python bench/bench_pipeline_classify.py --fast
"""
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyperf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from katzenpost._core import classify as core  # noqa: E402
from katzenpost._core import unwrap_standin as su  # noqa: E402
from katzenpost.reference import classify as ref  # noqa: E402
from katzenpost.server.workers import EndpointSet, RouteTable, _ClassifyBuffers  # noqa: E402
from katzenpost.sphinx import geometry as g  # noqa: E402

BATCH = 64
HOPS = [bytes([i]) * 32 for i in range(8)]


def make_batch():
    packets = np.zeros((BATCH, g.PACKET_LENGTH), np.uint8)
    for i in range(BATCH):
        su.encode_standin_packet(packets[i], flags=su.FLAG_NEXT_HOP | su.FLAG_NODE_DELAY, delay_ms=50,
                                 next_hop=HOPS[i % len(HOPS)], tag=os.urandom(32))
    result = su.StandinUnwrapResult(BATCH)
    su.unwrap_batch(packets, BATCH, np.zeros((1, 32), np.uint8), result)
    return result


def classify_loop(loops, impl):
    result = make_batch()
    out = _ClassifyBuffers(BATCH)
    routes, endpoints = RouteTable({h: i for i, h in enumerate(HOPS)}), EndpointSet([b"loop"])
    recv_at = np.full(BATCH, time.monotonic_ns(), np.int64)
    from_client = np.zeros(BATCH, np.uint8)
    t0 = time.perf_counter()
    for _ in range(loops):
        now = time.monotonic_ns()
        impl.replay_masks(result, BATCH, out.masks)
        impl.classify_batch(result, BATCH, recv_at, from_client, out.seen, now, now, False, routes.ids,
                            routes.index, endpoints.ids, out.drop_counts, out.fwd_rows, out.fwd_deadline,
                            out.fwd_hop, out.local_rows, out.local_kind, out.row_reason)
    return time.perf_counter() - t0


def main():
    runner = pyperf.Runner()
    runner.metadata["description"] = (f"replay_masks + classify_batch of {BATCH} forward packets "
                                      "(the classification step only)")
    results = {}
    for name, impl in (("core", core), ("reference", ref)):
        results[name] = runner.bench_time_func(f"classify_batch{BATCH}_{name}", classify_loop, impl)
    if all(results.values()) and not runner.args.worker:
        ratio = results["reference"].median() / results["core"].median()
        print(f"classify: core {results['core'].median() * 1e6 / BATCH:.2f} us/packet, "
              f"reference/core = {ratio:.1f}x")


if __name__ == "__main__":
    main()
