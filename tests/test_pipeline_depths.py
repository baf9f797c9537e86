"""The pipeline's queue depths (STATUS `queues`, the metrics' queue gauges) include the two queues
where packets wait longest: in flight to the crypto workers (what SphinxQueuePackets bounds) and
in the timer wheel, with the scheduler inline or on its own thread."""
import asyncio
import time

import pytest

from katzenpost._core import unwrap_standin as su
from test_pipeline_flow import HOP, make_packet, run, started, wait_for


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
