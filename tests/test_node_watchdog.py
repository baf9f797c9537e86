"""A crypto worker thread that dies (an error outside a batch) is replaced by
`Pipeline.restart_dead_workers`, the node watchdog's tool: same counters, routes re-sent, and
packets flow again once the keys are pushed."""
import asyncio
import time

import numpy as np

from katzenpost._core import unwrap_standin as su
from katzenpost.server.counters import Event
from katzenpost.server.pipeline import Pipeline, PipelineSettings
from katzenpost.server.workers import MixKeySet
from pipeline_support import RecordingSender, make_packet, replay_filter, wheel_factory

HOP = b"H" * 32


async def until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_a_dead_crypto_worker_is_restarted_and_packets_flow_again(tmp_path):
    async def scenario():
        pipeline = Pipeline(PipelineSettings(NumSphinxWorkers=1, UnwrapDelay=5_000, SchedulerSlack=5_000),
                            engine=su.StandinUnwrapEngine(0), wheel_factory=wheel_factory())
        await pipeline.start()
        try:
            sender = RecordingSender()
            pipeline.set_destinations({HOP: sender})
            keys = MixKeySet(np.zeros((1, 32), np.uint8), (replay_filter(tmp_path),))
            pipeline.set_mix_keys(keys)
            [worker] = pipeline.threads()[1:]
            counters = worker.counters
            assert await pipeline.restart_dead_workers() == 0          # nothing to do
            worker.post("routes", object())                            # a broken control message
            await until(lambda: not worker.is_alive())
            assert await pipeline.restart_dead_workers() == 1
            [fresh] = pipeline.threads()[1:]
            assert fresh is not worker and fresh.is_alive() and fresh.counters is counters
            pipeline.set_mix_keys(keys)                                # what the node re-pushes
            for _ in range(5):
                pipeline.submit(make_packet(next_hop=HOP, delay_ms=1), time.monotonic_ns())
            await until(lambda: len(sender.packets) == 5)
            assert pipeline.counters.event_total(Event.WORKER_EXCEPTIONS) >= 1
        finally:
            await pipeline.halt()
        assert not any(t is not None and t.is_alive() for t in pipeline.threads())
    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_control_channel_can_follow_its_closed_predecessor_at_once():
    """zmq frees a closed socket's inproc name only later, in its own thread: a restarted
    worker's channel, made right after the dead one's was closed, must still bind."""
    import zmq

    from katzenpost.server.control import ControlChannel
    ctx = zmq.Context()
    try:
        addresses = set()
        for _ in range(20):
            channel = ControlChannel(ctx, "inproc://watchdog-test-ctl-0")
            peer = ctx.socket(zmq.PAIR)
            peer.setsockopt(zmq.LINGER, 0)
            peer.connect(channel.address)
            channel.post("ping")
            assert peer.poll(5000) and peer.recv() == b"c"
            peer.close(linger=0)
            channel.close()
            addresses.add(channel.address)
        assert len(addresses) == 20
    finally:
        ctx.term()
