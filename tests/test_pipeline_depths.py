"""The pipeline's queue depths (STATUS `queues`, the metrics' queue gauges) include the two queues
where packets wait longest: in flight to the crypto workers (what SphinxQueuePackets bounds) and
in the timer wheel, with the scheduler inline or on its own thread; packets that die with a
crypto worker leave that count."""
import asyncio
import time

import pytest

import numpy as np

from katzenpost._core import unwrap_standin as su
from katzenpost.server.workers import MixKeySet
from pipeline_support import replay_filter
from test_pipeline_flow import HOP, accounted, make_packet, run, started, wait_for


@pytest.mark.parametrize("inline", [True, False], ids=["scheduler-inline", "scheduler-thread"])
def test_in_flight_and_wheel_depths_are_reported(tmp_path, inline):
    async def scenario():
        # 20 ms of unwrap a packet on one worker: 30 packets stay in flight for a while
        pipeline, sender = await started(tmp_path, engine=su.StandinUnwrapEngine(20_000_000),
                                         NumSphinxWorkers=1, SphinxBatchSize=1,
                                         SphinxQueuePackets=1000, SchedulerInline=inline)
        try:
            assert pipeline.queue_depths()["crypto_in_flight"] == 0
            assert pipeline.queue_depths()["scheduler"] == 0
            now = time.monotonic_ns()
            for _ in range(30):
                pipeline.submit(make_packet(next_hop=HOP, delay_ms=60_000), now)
            pipeline.flush()
            assert pipeline.queue_depths()["crypto_in_flight"] >= 29   # at most one dequeued yet
            await wait_for(lambda: pipeline.queue_depths()["crypto_in_flight"] == 0)
            await wait_for(lambda: pipeline.queue_depths()["scheduler"] == 30)
            assert sender.packets == []
        finally:
            await pipeline.halt()
    run(scenario())


def test_packets_lost_with_a_dead_worker_do_not_stay_in_flight(tmp_path):
    """A worker that dies with packets in its queue: they are counted lost, and the in-flight
    bound does not keep them, so the restarted worker gets the full SphinxQueuePackets again."""
    async def scenario():
        # 5 ms a packet, one packet a batch: the worker drains 64 batches (0.3 s) before it
        # reads the control message that kills it, so the last 36 of 100 die in its queue
        pipeline, sender = await started(tmp_path, engine=su.StandinUnwrapEngine(5_000_000),
                                         NumSphinxWorkers=1, SphinxBatchSize=1, SphinxQueuePackets=100,
                                         SphinxQueueHWM=1000)
        try:
            [worker] = pipeline.threads()[1:]
            submit(pipeline, 1)
            worker.post("routes", object())                    # a broken control message
            submit(pipeline, 99)
            await wait_for(lambda: not worker.is_alive())
            assert pipeline.queue_depths()["crypto_in_flight"] > 0
            assert await pipeline.restart_dead_workers() == 1
            assert pipeline.queue_depths()["crypto_in_flight"] == 0
            # (on a starved machine the worker may die before the 99 are sent: the rest are
            # refused at once, as ingress_queue_full)
            refused = pipeline.counters.snapshot()["drops"]["ingress_queue_full"]
            lost = pipeline.counters.snapshot()["drops"]["worker_error"]
            assert lost > 0
            keys_dir = tmp_path / "keys"
            keys_dir.mkdir()
            pipeline.set_mix_keys(MixKeySet(np.zeros((1, 32), np.uint8), (replay_filter(keys_dir),)))
            await wait_for(lambda: accounted(pipeline) == 100)
            submit(pipeline, 80)                                # the whole bound is free again
            await wait_for(lambda: accounted(pipeline) == 180, timeout=10)
            drops = {k: v for k, v in pipeline.counters.snapshot()["drops"].items() if v}
            assert drops == {"worker_error": lost, "ingress_queue_full": refused} if refused else \
                drops == {"worker_error": lost}
            assert len(sender.packets) == 180 - lost - refused
        finally:
            await pipeline.halt()
    run(scenario())


def submit(pipeline, count):
    now = time.monotonic_ns()
    for _ in range(count):
        pipeline.submit(make_packet(next_hop=HOP, delay_ms=1), now)
        pipeline.flush()
