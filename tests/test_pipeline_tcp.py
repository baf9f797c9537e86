"""The pipeline over real 127.0.0.1 TCP with the benchmark's length-prefixed framing, and with the
real Sphinx batch unwrap on genuine packets."""
import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np

from katzenpost.server.pipeline import Pipeline, PipelineSettings
from katzenpost.server.workers import MixKeySet
from pipeline_support import L, make_packet, replay_filter, wheel_factory

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from pipeline_framing import FRAME, PREFIX, FramedIngressProtocol, FramedSender  # noqa: E402

HOP = b"H" * 32


async def read_frames(reader, count, timeout=10):
    data = await asyncio.wait_for(reader.readexactly(count * FRAME), timeout)
    frames = [data[i:i + FRAME] for i in range(0, len(data), FRAME)]
    assert all(f[:4] == PREFIX for f in frames)
    return [f[4:] for f in frames]


async def node_with_sink(tmp_path, engine, keys):
    sink_conns = asyncio.Queue()
    sink = await asyncio.start_server(lambda r, w: sink_conns.put_nowait((r, w)), "127.0.0.1", 0)
    # Generous time limits: a loaded CI machine may starve threads; these tests check the flow.
    settings = PipelineSettings(NumSphinxWorkers=2, UnwrapDelay=5_000, SchedulerSlack=5_000,
                                SphinxQueuePackets=1_000)
    pipeline = Pipeline(settings, engine=engine, wheel_factory=wheel_factory())
    await pipeline.start()
    loop = asyncio.get_running_loop()
    _, sender = await loop.create_connection(FramedSender, "127.0.0.1", sink.sockets[0].getsockname()[1])
    sink_reader, sink_writer = await sink_conns.get()
    pipeline.set_destinations({HOP: sender})
    pipeline.set_mix_keys(MixKeySet(keys, tuple(replay_filter(tmp_path) for _ in range(len(keys)))))
    protocols = []

    def make_protocol():
        protocols.append(FramedIngressProtocol.for_pipeline(pipeline))
        return protocols[-1]

    server = await loop.create_server(make_protocol, "127.0.0.1", 0)
    await asyncio.sleep(0.02)

    async def close():
        server.close()
        await server.wait_closed()
        await pipeline.halt()
        sender.transport.close()
        sink_writer.close()
        sink.close()
        await sink.wait_closed()

    return pipeline, server.sockets[0].getsockname()[1], sink_reader, protocols, close


def test_framed_tcp_packets_cross_the_pipeline(tmp_path):
    from katzenpost._core.unwrap_standin import StandinUnwrapEngine

    async def scenario():
        pipeline, port, sink_reader, _, close = await node_with_sink(tmp_path, StandinUnwrapEngine(0),
                                                                     np.zeros((1, 32), np.uint8))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        packets = [make_packet(next_hop=HOP, delay_ms=2, stamp=i.to_bytes(8, "big")) for i in range(200)]
        writer.write(b"".join(PREFIX + p for p in packets))
        await writer.drain()
        got = await read_frames(sink_reader, 200)
        writer.close()
        await close()
        assert sorted(got) == sorted(packets)
        assert pipeline.counters.total_dropped() == 0
    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_wrong_frame_length_closes_the_connection_without_harm(tmp_path):
    from katzenpost._core.unwrap_standin import StandinUnwrapEngine

    async def scenario():
        pipeline, port, sink_reader, protocols, close = await node_with_sink(
            tmp_path, StandinUnwrapEngine(0), np.zeros((1, 32), np.uint8))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        good = make_packet(next_hop=HOP, delay_ms=1)
        writer.write(PREFIX + good + (100).to_bytes(4, "big") + bytes(L))
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""          # closed by the node
        got = await read_frames(sink_reader, 1)
        await close()
        assert got == [good] and protocols[0].bad_frames == 1
    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_real_sphinx_unwrap_forwards_genuine_packets(tmp_path):
    from katzenpost.reference import sphinx as ref
    from katzenpost.server.workers import SphinxUnwrapEngine
    from katzenpost.sphinx import batch
    from katzenpost.sphinx import commands as cmds
    from katzenpost.sphinx.types import PathHop

    node_key = os.urandom(32)
    route = [PathHop(b"N" * 32, ref.public_key(node_key), [cmds.NodeDelay(3)]),
             PathHop(HOP, ref.public_key(os.urandom(32)), [cmds.NodeDelay(0)])]
    packets = []
    for _ in range(8):
        header, _ = ref.create_header(route)
        packets.append(header + os.urandom(L - len(header)))
    expected = []
    for p in packets:
        arr = np.frombuffer(p, np.uint8).reshape(1, L).copy()
        result = batch.UnwrapBatch(1)
        batch.unwrap_batch(arr, 1, batch.keys_array([node_key]), result)
        assert result.status[0] == 0
        expected.append(arr.tobytes())

    async def scenario():
        pipeline, port, sink_reader, _, close = await node_with_sink(
            tmp_path, SphinxUnwrapEngine(), batch.keys_array([os.urandom(32), node_key]))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(PREFIX + p for p in packets + packets[:2]))     # two replays
        await writer.drain()
        got = await read_frames(sink_reader, 8)
        t0 = time.monotonic()
        while pipeline.counters.total_dropped() < 2 and time.monotonic() - t0 < 5:
            await asyncio.sleep(0.01)
        writer.close()
        await close()
        assert sorted(got) == sorted(expected)
        snap = pipeline.counters.snapshot()
        assert snap["drops"]["replay"] == 2 and snap["events"]["unwrapped"] == 10
        assert snap["events"]["sent"] == 8
    asyncio.run(asyncio.wait_for(scenario(), 30))
