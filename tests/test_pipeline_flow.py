"""The pipeline with its threads: delivery after the delay, deadline order, named drops, local
delivery, worker exceptions survived, load shedding within bounds, clean start/halt cycles."""
import asyncio
import gc
import os
import threading
import time

import numpy as np
import pytest

from katzenpost._core import unwrap_standin as su
from katzenpost.server.counters import Event
from katzenpost.server.pipeline import Pipeline, PipelineSettings
from katzenpost.server.workers import KIND_SURB_REPLY, KIND_TO_USER, MixKeySet
from pipeline_support import L, RecordingSender, make_packet, replay_filter, wheel_factory

HOP = b"H" * 32
OTHER = b"O" * 32
POISON = 0xEE      # status byte that makes FaultyEngine raise


class FaultyEngine(su.StandinUnwrapEngine):
    """Stand-in engine that raises on any batch holding a packet marked POISON."""

    def unwrap(self, packets, n, keys, result):
        if (packets[:n, su.OFF_STATUS] == POISON).any():
            raise RuntimeError("injected unwrap failure")
        return super().unwrap(packets, n, keys, result)


@pytest.fixture(params=[False, True], ids=["scheduler-thread", "scheduler-inline"])
def inline(request):
    return request.param


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def started(tmp_path, *, engine=None, is_provider=False, on_local=None, **settings):
    settings.setdefault("NumSphinxWorkers", 2)
    # Generous time limits: on a loaded CI machine threads can starve for tens of milliseconds,
    # and these tests check flow and accounting, not the 10 ms defaults.
    settings.setdefault("UnwrapDelay", 5_000)
    settings.setdefault("SchedulerSlack", 5_000)
    pipeline = Pipeline(PipelineSettings(**settings), engine=engine or FaultyEngine(0),
                        wheel_factory=wheel_factory(), is_provider=is_provider, on_local=on_local)
    await pipeline.start()
    sender = RecordingSender()
    pipeline.set_destinations({HOP: sender})
    pipeline.set_mix_keys(MixKeySet(np.zeros((1, 32), np.uint8), (replay_filter(tmp_path),)))
    pipeline.set_kaetzchen_endpoints([b"loop"])
    await asyncio.sleep(0.02)       # control messages reach the workers
    return pipeline, sender


async def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def accounted(pipeline):
    c = pipeline.counters
    return c.event_total(Event.SENT) + c.event_total(Event.LOCAL_DELIVERED) + c.total_dropped()


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def stamp(i):
    return i.to_bytes(8, "big")


def stamp_of(packet):
    return int.from_bytes(packet[200:208], "big")


def test_forward_packets_leave_after_their_delay(tmp_path, inline):
    async def scenario():
        pipeline, sender = await started(tmp_path, SchedulerInline=inline)
        t0 = time.monotonic_ns()
        for i in range(20):
            pipeline.submit(make_packet(delay_ms=30, next_hop=HOP, stamp=stamp(i)), time.monotonic_ns())
        await wait_for(lambda: len(sender.packets) == 20)
        elapsed_ms = (time.monotonic_ns() - t0) / 1e6
        await pipeline.halt()
        assert elapsed_ms >= 29
        assert sorted(stamp_of(p) for p in sender.packets) == list(range(20))
        assert pipeline.counters.total_dropped() == 0
    run(scenario())


def test_packets_leave_in_deadline_order(tmp_path, inline):
    async def scenario():
        pipeline, sender = await started(tmp_path, SchedulerInline=inline)
        delays = [120, 20, 80, 50, 100, 35, 65]
        now = time.monotonic_ns()
        for i, d in enumerate(delays):
            pipeline.submit(make_packet(delay_ms=d, next_hop=HOP, stamp=stamp(i)), now)
        pipeline.flush()
        await wait_for(lambda: len(sender.packets) == len(delays))
        await pipeline.halt()
        order = [stamp_of(p) for p in sender.packets]
        assert order == sorted(range(len(delays)), key=lambda i: delays[i])
    run(scenario())


def test_every_drop_is_counted_with_its_reason(tmp_path, inline):
    async def scenario():
        pipeline, sender = await started(tmp_path, SchedulerInline=inline)
        replayed_tag = os.urandom(32)
        now = time.monotonic_ns()
        packets = [make_packet(status=3),                                           # unwrap failed
                   make_packet(next_hop=HOP, delay_ms=5, tag=replayed_tag),
                   make_packet(next_hop=HOP, delay_ms=5, tag=replayed_tag),         # replay
                   make_packet(flags=su.FLAG_NEXT_HOP, next_hop=HOP),               # invalid commands
                   make_packet(next_hop=OTHER, delay_ms=5),                         # no route
                   make_packet(flags=su.FLAG_RECIPIENT, recipient=b"bob")]          # terminal at a mix
        for p in packets:
            pipeline.submit(p, now)
        pipeline.submit(make_packet(next_hop=HOP, delay_ms=5), now - 6_000 * 1_000_000)  # waited 6 s
        await wait_for(lambda: accounted(pipeline) == 7)
        drops = pipeline.counters.snapshot()["drops"]
        await pipeline.halt()
        assert len(sender.packets) == 1
        for reason in ("unwrap_failed", "replay", "invalid_commands", "no_route", "terminal_at_mix",
                       "unwrap_delay"):
            assert drops[reason] == 1, reason
    run(scenario())


def test_scheduler_drops_delays_above_the_pki_max_delay(tmp_path, inline):
    async def scenario():
        pipeline, sender = await started(tmp_path, SchedulerInline=inline)
        pipeline.set_max_delay(50)                           # MuMaxDelay from the document, in ms
        await asyncio.sleep(0.01)
        now = time.monotonic_ns()
        pipeline.submit(make_packet(next_hop=HOP, delay_ms=200, stamp=stamp(1)), now)
        pipeline.submit(make_packet(next_hop=HOP, delay_ms=10, stamp=stamp(2)), now)
        await wait_for(lambda: accounted(pipeline) == 2)
        await pipeline.halt()
        assert [stamp_of(p) for p in sender.packets] == [2]
        assert pipeline.counters.snapshot()["drops"]["delay_above_max"] == 1
    run(scenario())


def test_short_debug_epoch_period_bounds_node_delays(tmp_path, inline):
    async def scenario():
        pipeline, sender = await started(tmp_path, SchedulerInline=inline, EpochPeriod=1)   # 3P = 3 s
        now = time.monotonic_ns()
        pipeline.submit(make_packet(next_hop=HOP, delay_ms=3_001), now)
        pipeline.submit(make_packet(next_hop=HOP, delay_ms=2), now)
        await wait_for(lambda: accounted(pipeline) == 2)
        await pipeline.halt()
        assert len(sender.packets) == 1
        assert pipeline.counters.snapshot()["drops"]["delay_too_long"] == 1
    run(scenario())


def test_provider_hands_terminal_packets_to_the_local_handler(tmp_path, inline):
    async def scenario():
        batches = []
        pipeline, _ = await started(tmp_path, SchedulerInline=inline, is_provider=True, on_local=batches.append)
        now = time.monotonic_ns()
        pipeline.submit(make_packet(flags=su.FLAG_RECIPIENT | su.FLAG_NODE_DELAY, recipient=b"alice",
                                    delay_ms=7), now)
        pipeline.submit(make_packet(flags=su.FLAG_RECIPIENT | su.FLAG_SURB_REPLY, recipient=b"carol",
                                    surb_id=b"s" * 16), now)
        pipeline.submit(make_packet(flags=su.FLAG_RECIPIENT | su.FLAG_NODE_DELAY, recipient=b"eve"), now,
                        from_client=True)
        await wait_for(lambda: accounted(pipeline) == 3)
        await pipeline.halt()
        rows = {(int(b.kind[i]), bytes(b.recipient[i]).rstrip(b"\0"), int(b.delay_ms[i]))
                for b in batches for i in range(len(b))}
        assert rows == {(KIND_TO_USER, b"alice", 7), (KIND_SURB_REPLY, b"carol", 0)}
        assert pipeline.counters.snapshot()["drops"]["client_bypass"] == 1
    run(scenario())


def test_worker_exception_is_logged_counted_and_survived(tmp_path, caplog, inline):
    async def scenario():
        pipeline, sender = await started(tmp_path, SchedulerInline=inline, NumSphinxWorkers=1)
        now = time.monotonic_ns()
        pipeline.submit(make_packet(status=POISON), now)
        pipeline.submit(make_packet(next_hop=HOP, delay_ms=1), now)
        pipeline.flush()
        await wait_for(lambda: pipeline.counters.event_total(Event.WORKER_EXCEPTIONS) == 1)
        pipeline.submit(make_packet(next_hop=HOP, delay_ms=1), time.monotonic_ns())
        await wait_for(lambda: len(sender.packets) == 1)
        snap = pipeline.counters.snapshot()
        alive = all(t.is_alive() for t in pipeline.threads() if t is not None)
        await pipeline.halt()
        assert alive
        assert snap["drops"]["worker_error"] == 2           # the whole poisoned batch
        assert "injected unwrap failure" in caplog.text
    run(scenario())


def test_failing_local_handler_and_sender_are_counted_and_survived(tmp_path, inline, caplog):
    async def scenario():
        calls = []

        def flaky_handler(batch):
            calls.append(len(batch))
            if len(calls) == 1:
                raise RuntimeError("provider hiccup")

        pipeline, sender = await started(tmp_path, SchedulerInline=inline, is_provider=True,
                                         on_local=flaky_handler, NumSphinxWorkers=1)
        to_user = su.FLAG_RECIPIENT | su.FLAG_NODE_DELAY
        pipeline.submit(make_packet(flags=to_user, recipient=b"alice"), time.monotonic_ns())
        await wait_for(lambda: accounted(pipeline) == 1)
        pipeline.submit(make_packet(flags=to_user, recipient=b"bob"), time.monotonic_ns())
        await wait_for(lambda: accounted(pipeline) == 2)

        def broken_send(packets):
            raise ConnectionResetError("peer went away")

        sender.send_packets = broken_send
        pipeline.submit(make_packet(next_hop=HOP, delay_ms=1), time.monotonic_ns(), from_client=True)
        await wait_for(lambda: accounted(pipeline) == 3)
        snap = pipeline.counters.snapshot()
        await pipeline.halt()
        assert snap["drops"]["worker_error"] == 1 and snap["events"]["local_delivered"] == 1
        assert snap["drops"]["destination_gone"] == 1
        assert "provider hiccup" in caplog.text and "peer went away" in caplog.text
    run(scenario())


def test_packets_in_flight_to_the_workers_are_bounded(tmp_path, inline):
    async def scenario():
        # Roomy zmq queues; the in-flight bound (8 packets for the one slow worker) must shed.
        pipeline, sender = await started(tmp_path, SchedulerInline=inline, engine=FaultyEngine(5_000_000),
                                         NumSphinxWorkers=1, SphinxBatchSize=4, SphinxQueueHWM=1000,
                                         SphinxQueuePackets=8, UnwrapDelay=60_000)
        packet = bytearray(make_packet(next_hop=HOP, delay_ms=1))
        for i in range(200):
            packet[6:14] = i.to_bytes(8, "big")
            pipeline.submit(packet, time.monotonic_ns())
            if i % 4 == 3:
                pipeline.flush()
        await wait_for(lambda: accounted(pipeline) == 200, timeout=15)
        snap = pipeline.counters.snapshot()
        await pipeline.halt()
        assert snap["drops"]["ingress_queue_full"] >= 200 - 8 - 8    # at most ~2 bounds' worth got in
        assert len(sender.packets) + sum(snap["drops"].values()) == 200
    run(scenario())


def test_flood_above_capacity_is_shed_with_counted_drops_and_bounded_queues(tmp_path, inline):
    async def scenario():
        # One slow worker (2 ms per packet), tiny queues: the I/O thread must never block.
        pipeline, sender = await started(tmp_path, SchedulerInline=inline, engine=FaultyEngine(2_000_000),
                                         NumSphinxWorkers=1, SphinxBatchSize=8, SphinxQueueHWM=2,
                                         UnwrapDelay=60_000)
        total = 20000                                        # 50 MB if the node kept them all
        template = make_packet(next_hop=HOP, delay_ms=1)
        rss_before = rss_bytes()
        packet = bytearray(template)
        t0 = time.monotonic()
        for i in range(total):
            packet[6:14] = i.to_bytes(8, "big")             # unique replay tags
            pipeline.submit(packet, time.monotonic_ns())
            if i % 64 == 0:
                await asyncio.sleep(0)
        submit_seconds = time.monotonic() - t0
        rss_growth = rss_bytes() - rss_before
        pipeline.flush()
        await wait_for(lambda: accounted(pipeline) == total, timeout=15)
        snap = pipeline.counters.snapshot()
        await pipeline.halt()
        assert submit_seconds < 5.0                          # never blocked on the slow worker
        assert rss_growth < 16 * 2**20                       # queues bounded by their high-water marks
        assert snap["drops"]["ingress_queue_full"] > 0
        assert len(sender.packets) + sum(snap["drops"].values()) == total
        # In flight at most: sender HWM + receiver HWM per worker pipe, plus the open batch.
        assert len(sender.packets) < total // 2
    run(scenario())


def test_start_halt_cycles_leave_no_threads_or_sockets(tmp_path, inline):
    def fds():
        return len(os.listdir("/proc/self/fd"))

    async def cycle():
        pipeline, sender = await started(tmp_path, SchedulerInline=inline)
        pipeline.submit(make_packet(next_hop=HOP, delay_ms=1), time.monotonic_ns())
        await wait_for(lambda: len(sender.packets) == 1)
        pipeline.submit(make_packet(next_hop=HOP, delay_ms=60_000), time.monotonic_ns())
        await wait_for(lambda: pipeline.counters.event_total(Event.SCHEDULED) == 2)
        await pipeline.halt()
        assert pipeline.counters.snapshot()["drops"]["halt"] == 1       # held in the wheel at halt
        assert not any(t.is_alive() for t in pipeline.threads() if t is not None)

    run(cycle())                                            # warm-up: pyzmq's gc thread starts once
    gc.collect()
    threads, open_fds = {t.name for t in threading.enumerate()}, fds()
    for _ in range(5):
        run(cycle())
    gc.collect()
    assert {t.name for t in threading.enumerate()} == threads
    assert fds() <= open_fds


def test_graceful_halt_accounts_for_every_packet_in_flight(tmp_path, inline):
    async def scenario():
        batches = []
        pipeline, sender = await started(tmp_path, SchedulerInline=inline, is_provider=True,
                                         on_local=batches.append, engine=FaultyEngine(50_000),
                                         UnwrapDelay=60_000, SphinxQueuePackets=1000)
        to_user = su.FLAG_RECIPIENT | su.FLAG_NODE_DELAY
        now = time.monotonic_ns()
        for i in range(300):                                 # forward (from clients) and terminal mixed
            if i % 3:
                pipeline.submit(make_packet(next_hop=HOP, delay_ms=(i % 7) * 20), now, from_client=True)
            else:
                pipeline.submit(make_packet(flags=to_user, recipient=b"alice"), now)
        await pipeline.halt_crypto_workers()                 # connector, then workers (drained)
        delivered_before_scheduler_halt = sum(len(b) for b in batches)
        await pipeline.halt_scheduler()
        snap = pipeline.counters.snapshot()
        delivered = len(sender.packets) + sum(len(b) for b in batches)
        assert delivered + sum(snap["drops"].values()) == 300
        assert delivered_before_scheduler_halt == 100        # every terminal packet reached the provider
        assert snap["drops"]["halt"] > 0
        assert not any(t.is_alive() for t in pipeline.threads() if t is not None)
    run(scenario())


def test_a_worker_that_cannot_start_fails_start_and_leaves_nothing_running(inline):
    class BrokenEngine(su.StandinUnwrapEngine):
        def new_result(self, capacity):
            raise MemoryError("no room for results")

    async def scenario():
        pipeline = Pipeline(PipelineSettings(NumSphinxWorkers=2, SchedulerInline=inline), engine=BrokenEngine(),
                            wheel_factory=wheel_factory())
        with pytest.raises(RuntimeError, match="failed to start"):
            await pipeline.start()
        assert not any(t.is_alive() for t in pipeline.threads() if t is not None)
    run(scenario())


def test_submit_rejects_wrong_length_and_counts_after_halt(tmp_path, inline):
    async def scenario():
        pipeline, _ = await started(tmp_path, SchedulerInline=inline)
        with pytest.raises(ValueError, match="2524"):
            pipeline.submit(b"x" * 100, time.monotonic_ns())
        await pipeline.halt()
        pipeline.submit(make_packet(), time.monotonic_ns())
        assert pipeline.counters.snapshot()["drops"]["halt"] == 1
    run(scenario())


def test_paused_destination_queues_then_drops_tail_and_send_slack(tmp_path, inline):
    async def scenario():
        pipeline, sender = await started(tmp_path, SchedulerInline=inline, OutgoingQueueSize=4, SendSlack=50)
        sender.paused = True
        now = time.monotonic_ns()
        for i in range(10):
            pipeline.submit(make_packet(next_hop=HOP, delay_ms=1, stamp=stamp(i)), now)
        await wait_for(lambda: pipeline.counters.event_total(Event.ENQUEUED_OUT) == 10)
        drops = pipeline.counters.snapshot()["drops"]
        assert drops["destination_queue_full"] == 6
        await asyncio.sleep(0.08)                            # queued packets now older than SendSlack
        sender.resume()
        await wait_for(lambda: pipeline.counters.snapshot()["drops"]["send_slack"] == 4)
        await pipeline.halt()
        assert sender.packets == []
    run(scenario())


def test_sender_failing_while_paused_closes_its_queue_with_counted_drops(tmp_path, inline):
    async def scenario():
        pipeline, sender = await started(tmp_path, SchedulerInline=inline, OutgoingQueueSize=8)
        sender.paused = True
        sender.fail_wait = ConnectionError("session closed")
        now = time.monotonic_ns()
        for i in range(3):
            pipeline.submit(make_packet(next_hop=HOP, delay_ms=1, stamp=stamp(i)), now)
        await wait_for(lambda: pipeline.counters.snapshot()["drops"].get("destination_gone", 0) == 3)
        pipeline.submit(make_packet(next_hop=HOP, delay_ms=1, stamp=stamp(9)), time.monotonic_ns())
        await wait_for(lambda: pipeline.counters.snapshot()["drops"].get("destination_gone", 0) == 4)
        await pipeline.halt()
        assert sender.packets == []
    run(scenario())


def test_mix_key_set_repr_never_shows_private_keys():
    import numpy as np
    from katzenpost.server.workers import MixKeySet

    keys = MixKeySet(np.full((1, 32), 0xAB, dtype=np.uint8), (object(),))
    assert repr(keys) == "MixKeySet()"


def test_settings_from_config_reads_debug_names_and_applies_defaults():
    class Debug:
        NumSphinxWorkers = 0
        SchedulerSlack = 3
        SendSlack = 10
        SchedulerMaxBurst = 32
        UnwrapDelay = 250

    s = PipelineSettings.from_config(Debug())
    assert s.NumSphinxWorkers == (os.cpu_count() or 1)
    assert s.SchedulerSlack == 10 and s.SendSlack == 50 and s.SchedulerMaxBurst == 32 and s.UnwrapDelay == 250
    assert PipelineSettings.from_config(object()) == PipelineSettings().normalized()
    # katzenpost.config.DebugConfig spells the fields in snake_case; both spellings are read.
    from types import SimpleNamespace
    s = PipelineSettings.from_config(SimpleNamespace(num_sphinx_workers=3, scheduler_queue_size=500,
                                                     unwrap_delay=20, scheduler_inline=False))
    assert (s.NumSphinxWorkers, s.SchedulerQueueSize, s.UnwrapDelay, s.SchedulerInline) == (3, 500, 20, False)
    assert PipelineSettings().normalized().EpochPeriod == 1200
    # SchedulerQueueSize <= 0 is unlimited (0 to the wheel), as in Go; it is never replaced by a bound.
    assert PipelineSettings().normalized().SchedulerQueueSize == 0
    assert PipelineSettings(SchedulerQueueSize=-5).normalized().SchedulerQueueSize == 0
    with pytest.raises(ValueError, match="SphinxBatchSize"):
        PipelineSettings(SphinxBatchSize=0).normalized()
    with pytest.raises(ValueError, match="integer"):
        PipelineSettings(UnwrapDelay="10").normalized()


def recording_wheel_factory(made):
    """A wheel factory that records the capacity the pipeline asked for."""
    wheel_type = wheel_factory()

    def factory(capacity, packet_len, seed):
        made.append(wheel_type(capacity, packet_len, seed))
        return made[-1]
    return factory


def test_scheduler_queue_size_zero_means_an_unlimited_wheel(tmp_path, inline):
    # Go: SchedulerQueueSize 0 is "no bound"; the wheel's arena grows in 4,096-packet chunks.
    async def scenario():
        made = []
        pipeline = Pipeline(PipelineSettings(NumSphinxWorkers=1, SchedulerInline=inline, SchedulerQueueSize=0,
                                             UnwrapDelay=60_000, SphinxQueuePackets=10_000, SphinxQueueHWM=1_000,
                                             SchedulerInputHWM=1_000),
                            engine=FaultyEngine(0), wheel_factory=recording_wheel_factory(made))
        await pipeline.start()
        pipeline.set_destinations({HOP: RecordingSender()})
        pipeline.set_mix_keys(MixKeySet(np.zeros((1, 32), np.uint8), (replay_filter(tmp_path),)))
        await asyncio.sleep(0.02)
        total = 4096 + 300                                  # more than the first arena chunk
        packet = bytearray(make_packet(next_hop=HOP, delay_ms=600_000))
        for i in range(total):
            packet[6:14] = i.to_bytes(8, "big")
            pipeline.submit(packet, time.monotonic_ns())
            if i % 256 == 255:
                await asyncio.sleep(0.001)
        await wait_for(lambda: pipeline.counters.event_total(Event.SCHEDULED) == total, timeout=15)
        wheel = made[0]
        capacity, slots = wheel.capacity, wheel.arena_slots
        await pipeline.halt()
        drops = pipeline.counters.snapshot()["drops"]
        assert capacity == 0 and slots > 4096
        assert drops["scheduler_full"] == 0 and drops["halt"] == total
    run(scenario())


def test_scheduler_queue_size_bounds_the_wheel_with_counted_random_drops(tmp_path, inline):
    async def scenario():
        made = []
        pipeline = Pipeline(PipelineSettings(NumSphinxWorkers=1, SchedulerInline=inline, SchedulerQueueSize=10,
                                             UnwrapDelay=60_000),
                            engine=FaultyEngine(0), wheel_factory=recording_wheel_factory(made))
        await pipeline.start()
        pipeline.set_destinations({HOP: RecordingSender()})
        pipeline.set_mix_keys(MixKeySet(np.zeros((1, 32), np.uint8), (replay_filter(tmp_path),)))
        await asyncio.sleep(0.02)
        for i in range(30):
            pipeline.submit(make_packet(next_hop=HOP, delay_ms=600_000), time.monotonic_ns())
        await wait_for(lambda: accounted(pipeline) + len(made[0]) == 30)
        await pipeline.halt()
        drops = pipeline.counters.snapshot()["drops"]
        assert made[0].capacity == 10
        assert drops["scheduler_full"] == 20 and drops["halt"] == 10
    run(scenario())


def test_packets_due_beyond_the_slack_are_counted_late():
    from katzenpost.server.counters import PipelineCounters
    from katzenpost.server.scheduler import WheelStage, now_us
    from katzenpost.server.workers import encode_schedule

    counters = PipelineCounters()
    stage = WheelStage(wheel=wheel_factory()(0, L, 1), counters=counters.stage("s"),
                       max_burst=16, slack_ms=10, out_capacity=8)
    packets = np.zeros((3, L), np.uint8)
    now = now_us()
    deadlines = np.array([now - 500_000, now - 2_000, now + 60_000_000], np.int64)  # late, due, not yet

    class Frame:
        buffer = memoryview(encode_schedule(packets, None, deadlines, np.zeros(3, np.int32)))

    stage.insert_message(Frame())
    total, more_due = stage.pop_due()
    assert (total, more_due) == (1, False) and stage.out_deadline[0] == now - 2_000
    assert counters.snapshot()["drops"]["scheduler_late"] == 1
    stage.count_halted()
    assert counters.snapshot()["drops"]["halt"] == 1


def test_caller_flushes_mode_sends_the_batch_at_end_of_read(tmp_path, inline):
    async def scenario():
        pipeline, sender = await started(tmp_path, SchedulerInline=inline)
        for i in range(3):
            pipeline.submit(make_packet(next_hop=HOP, delay_ms=1, stamp=stamp(i)), time.monotonic_ns(),
                            caller_flushes=True)
        await asyncio.sleep(0.02)                           # no loop-pass flush was armed
        held = pipeline.queue_depths()["ingress_open_batch"]
        pipeline.end_of_read()
        await wait_for(lambda: len(sender.packets) == 3)
        await pipeline.halt()
        assert held == 3 and pipeline.counters.snapshot()["events"]["batches_to_workers"] == 1
    run(scenario())


def test_caller_flushes_mode_still_sends_full_batches_and_honours_a_window(tmp_path, inline):
    async def scenario():
        pipeline, sender = await started(tmp_path, SchedulerInline=inline, SphinxBatchSize=4,
                                         SphinxBatchWindowUs=2_000)
        for i in range(6):                                  # one full batch of 4, then 2 open
            pipeline.submit(make_packet(next_hop=HOP, delay_ms=1, stamp=stamp(i)), time.monotonic_ns(),
                            caller_flushes=True)
        pipeline.end_of_read()                              # with a window, the window sends
        assert pipeline.queue_depths()["ingress_open_batch"] == 2
        await wait_for(lambda: len(sender.packets) == 6)
        await pipeline.halt()
        assert pipeline.counters.snapshot()["events"]["batches_to_workers"] == 2
    run(scenario())


@pytest.mark.parametrize("kind", ["forward", "local"])
def test_full_worker_output_queues_drop_with_their_reason(tmp_path, kind):
    # The I/O thread is kept busy (blocked) while the workers produce: the tiny zmq queues
    # towards it fill up, and the workers shed what does not fit, counted, without blocking.
    async def scenario():
        local = []
        pipeline, sender = await started(tmp_path, SchedulerInline=True, is_provider=(kind == "local"),
                                         on_local=local.append, NumSphinxWorkers=1, SphinxQueueHWM=1,
                                         SchedulerInputHWM=1, LocalHWM=1)
        to_user = su.FLAG_RECIPIENT | su.FLAG_NODE_DELAY
        for i in range(12):
            if kind == "forward":
                pipeline.submit(make_packet(next_hop=HOP, delay_ms=1), time.monotonic_ns())
            else:
                pipeline.submit(make_packet(flags=to_user, recipient=b"alice"), time.monotonic_ns())
            pipeline.flush()
            time.sleep(0.01)                 # blocks the loop; the worker runs (GIL released)
        time.sleep(0.1)
        await wait_for(lambda: accounted(pipeline) == 12)
        drops = pipeline.counters.snapshot()["drops"]
        await pipeline.halt()
        reason = "scheduler_queue_full" if kind == "forward" else "local_queue_full"
        assert drops[reason] >= 1
        delivered = len(sender.packets) + sum(len(b) for b in local)
        assert delivered + sum(drops.values()) == 12
    run(scenario())


def test_removed_destination_drops_its_scheduled_packets_and_new_ones(tmp_path, inline):
    async def scenario():
        pipeline, sender = await started(tmp_path, SchedulerInline=inline)
        pipeline.submit(make_packet(next_hop=HOP, delay_ms=150), time.monotonic_ns())
        await wait_for(lambda: pipeline.counters.event_total(Event.SCHEDULED) == 1)
        pipeline.set_destinations({})                        # the next hop left the PKI document
        await asyncio.sleep(0.02)                           # the new route table reaches the worker
        pipeline.submit(make_packet(next_hop=HOP, delay_ms=1), time.monotonic_ns())
        await wait_for(lambda: accounted(pipeline) == 2)
        drops = pipeline.counters.snapshot()["drops"]
        await pipeline.halt()
        assert sender.packets == []
        assert drops["destination_gone"] == 1 and drops["no_route"] == 1
    run(scenario())
