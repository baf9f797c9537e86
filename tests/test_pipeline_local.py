"""Locally created packets: Pipeline.dispatch_now (decoy, no local delay) and Pipeline.schedule
(SURB-ACKs, Kaetzchen replies: timer wheel, never dwell-adjusted, maxDelay), inline and threaded."""
import asyncio
import time

import numpy as np
import pytest

from katzenpost._core import unwrap_standin as su
from katzenpost.server.counters import Event
from katzenpost.server.pipeline import Pipeline, PipelineSettings
from _pki_fixtures import wait_until
from pipeline_support import L, RecordingSender, wheel_factory

HOP = b"H" * 32
OTHER = b"O" * 32
UNKNOWN = b"U" * 32


@pytest.fixture(params=[False, True], ids=["scheduler-thread", "scheduler-inline"])
def inline(request):
    return request.param


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def started(inline, **settings):
    settings.setdefault("NumSphinxWorkers", 1)
    settings.setdefault("SchedulerSlack", 5_000)
    pipeline = Pipeline(PipelineSettings(SchedulerInline=inline, **settings), engine=su.StandinUnwrapEngine(0),
                        wheel_factory=wheel_factory())
    await pipeline.start()
    senders = {HOP: RecordingSender(), OTHER: RecordingSender()}
    pipeline.set_destinations(senders)
    return pipeline, senders


def packets(n, first=0):
    rows = np.zeros((n, L), np.uint8)
    rows[:, :8] = np.arange(first, first + n, dtype=">u8").view(np.uint8).reshape(n, 8)
    return rows


def stamps(sent):
    return [int.from_bytes(p[:8], "big") for p in sent]


def drops(pipeline):
    return pipeline.counters.snapshot()["drops"]


def test_dispatch_now_sends_at_once_and_counts_unknown_hops(inline):
    async def scenario():
        pipeline, senders = await started(inline)
        try:
            pipeline.dispatch_now(HOP, packets(3))
            assert stamps(senders[HOP].packets) == [0, 1, 2]          # synchronously, no wheel
            pipeline.dispatch_now(UNKNOWN, packets(2))
            assert drops(pipeline)["destination_gone"] == 2
            senders[OTHER].paused = True
            pipeline.dispatch_now(OTHER, packets(1, first=7))
            senders[OTHER].resume()
            await wait_until(lambda: senders[OTHER].packets)
            assert stamps(senders[OTHER].packets) == [7]
            with pytest.raises(ValueError):
                pipeline.dispatch_now(HOP, np.zeros((1, L - 1), np.uint8))
        finally:
            await pipeline.halt()
        pipeline.dispatch_now(HOP, packets(1))
        assert drops(pipeline)["halt"] == 1
    run(scenario())


def test_schedule_holds_packets_for_their_delay_per_hop(inline):
    async def scenario():
        pipeline, senders = await started(inline)
        try:
            t0 = time.monotonic()
            ids = np.frombuffer(HOP + OTHER + HOP + OTHER, np.uint8).reshape(4, 32)
            pipeline.schedule(packets(4), np.array([80, 40, 40, 80], np.uint32), ids)
            await asyncio.sleep(0.01)
            assert not senders[HOP].packets and not senders[OTHER].packets
            await wait_until(lambda: len(senders[HOP].packets) + len(senders[OTHER].packets) == 4)
            assert time.monotonic() - t0 >= 0.079
            assert stamps(senders[HOP].packets) == [2, 0]          # deadline order
            assert stamps(senders[OTHER].packets) == [1, 3]
            assert pipeline.counters.event_total(Event.SCHEDULED) == 4
            assert pipeline.counters.total_dropped() == 0
        finally:
            await pipeline.halt()
    run(scenario())


def test_schedule_with_one_id_a_list_and_unknown_hops(inline):
    async def scenario():
        pipeline, senders = await started(inline)
        try:
            pipeline.schedule(packets(2), 5, HOP)
            pipeline.schedule(packets(3, first=10), [5, 5, 5], [OTHER, UNKNOWN, UNKNOWN])
            await wait_until(lambda: len(senders[HOP].packets) + len(senders[OTHER].packets) == 3)
            assert stamps(senders[HOP].packets) == [0, 1]
            assert stamps(senders[OTHER].packets) == [10]
            assert drops(pipeline)["no_route"] == 2
            with pytest.raises(ValueError):
                pipeline.schedule(packets(2), 5, [HOP, HOP, HOP])
            with pytest.raises(ValueError):
                pipeline.schedule(packets(1), -1, HOP)
        finally:
            await pipeline.halt()
    run(scenario())


def test_schedule_applies_max_delay(inline):
    async def scenario():
        pipeline, senders = await started(inline, EpochPeriod=60)
        try:
            pipeline.schedule(packets(1), 3 * 60 * 1000 + 1, HOP)        # above 3P: never queued
            assert drops(pipeline)["delay_above_max"] == 1
            pipeline.set_max_delay(50)
            await asyncio.sleep(0.02)                                    # reaches the thread
            pipeline.schedule(packets(2), [60, 30], HOP)
            await wait_until(lambda: len(senders[HOP].packets) == 1)
            await wait_until(lambda: drops(pipeline)["delay_above_max"] == 2)
            assert stamps(senders[HOP].packets) == [1]
        finally:
            await pipeline.halt()
    run(scenario())


def test_schedule_after_halt_and_wheel_contents_at_halt(inline):
    async def scenario():
        pipeline, senders = await started(inline)
        pipeline.schedule(packets(2), 60_000, HOP)
        await wait_until(lambda: pipeline.counters.event_total(Event.SCHEDULED) == 2)
        await pipeline.halt()
        assert drops(pipeline)["halt"] == 2
        pipeline.schedule(packets(1), 5, HOP)
        assert drops(pipeline)["halt"] == 3
        assert not senders[HOP].packets
    run(scenario())
