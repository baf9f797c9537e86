"""The dispatch-delay histogram: bucket arithmetic, and that the pipeline fills it for every
forwarded packet in both scheduler placements."""
import asyncio
import time

import numpy as np
import pytest

from katzenpost._core import unwrap_standin as su
from katzenpost.server.counters import LatencyHistogram
from katzenpost.server.pipeline import Pipeline, PipelineSettings
from katzenpost.server.workers import MixKeySet
from pipeline_support import RecordingSender, make_packet, replay_filter, wheel_factory

HOP = b"H" * 32
MS = 1_000_000


def test_buckets_follow_prometheus_le_and_clip_early_packets():
    h = LatencyHistogram(bounds_ms=(1, 10))
    now_ns = 1_000 * MS
    # Lateness: -5 (clipped to 0), 0, 1 (on a bound), 1.5, 10, 11 ms.
    h.observe_deadlines(now_ns, np.array([1_005, 1_000, 999, 998.5, 990, 989]))
    h.observe_deadlines(now_ns, np.array([], dtype=np.int64))
    snap = h.snapshot()
    assert snap["bounds_ms"] == (1.0, 10.0)
    assert snap["counts"] == (3, 2, 1)
    assert snap["sum_ms"] == pytest.approx(0 + 0 + 1 + 1.5 + 10 + 11)


def test_snapshot_is_a_copy():
    h = LatencyHistogram()
    snap = h.snapshot()
    h.observe_deadlines(5 * MS, np.array([5], dtype=np.int64))
    assert sum(snap["counts"]) == 0 and sum(h.snapshot()["counts"]) == 1


@pytest.mark.parametrize("inline", [False, True], ids=["scheduler-thread", "scheduler-inline"])
def test_pipeline_counts_every_dispatched_packet(tmp_path, inline):
    async def scenario():
        settings = PipelineSettings(NumSphinxWorkers=1, UnwrapDelay=5_000, SchedulerSlack=5_000,
                                    SchedulerInline=inline)
        pipeline = Pipeline(settings, engine=su.StandinUnwrapEngine(0), wheel_factory=wheel_factory())
        await pipeline.start()
        try:
            sender = RecordingSender()
            pipeline.set_destinations({HOP: sender})
            pipeline.set_mix_keys(MixKeySet(np.zeros((1, 32), np.uint8), (replay_filter(tmp_path),)))
            await asyncio.sleep(0.02)
            for i in range(25):
                pipeline.submit(make_packet(delay_ms=5 + i % 3, next_hop=HOP), time.monotonic_ns())
            deadline = time.monotonic() + 10
            while len(sender.packets) < 25:
                assert time.monotonic() < deadline, "packets not delivered in time"
                await asyncio.sleep(0.005)
            return pipeline.counters.dispatch_delay.snapshot()
        finally:
            await pipeline.halt()

    snap = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert sum(snap["counts"]) == 25
    assert snap["sum_ms"] >= 0


def test_small_and_large_batches_count_alike():
    rng = np.random.default_rng(7)
    now_ns = 5_000_000 * MS + 123_456
    deadlines = 5_000_000 - rng.integers(-3, 1500, size=200)
    one_by_one, batched = LatencyHistogram(), LatencyHistogram()
    for i in range(0, 200, 2):                           # batches of 2: the scalar path
        one_by_one.observe_deadlines(now_ns, deadlines[i:i + 2])
    batched.observe_deadlines(now_ns, deadlines)         # one batch of 200: the numpy path
    a, b = one_by_one.snapshot(), batched.snapshot()
    assert a["counts"] == b["counts"] and sum(a["counts"]) == 200
    assert a["sum_ms"] == pytest.approx(b["sum_ms"])
