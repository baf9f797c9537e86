"""Crypto-worker logic without threads: the stand-in unwrap, classification (the reference crypto worker:
§1.4), dwell adjustment (§1.5), route and endpoint tables, and the batch frame formats."""
import numpy as np
import pytest

from katzenpost._core import unwrap_standin as su
from katzenpost.server.counters import DropReason, Event, PipelineCounters
from katzenpost.server.scheduler import clamp_max_delay, decode_due, encode_due_meta
from katzenpost._core import classify as core_classify
from katzenpost.reference import classify as ref_classify
from katzenpost.server import workers
from katzenpost.server.workers import (
    KIND_DECOY_SURB_REPLY, KIND_FORWARD, KIND_KAETZCHEN, KIND_NONE, KIND_SURB_REPLY, KIND_TO_USER,
    KIND_UNRELIABLE_TO_USER, MAX_NODE_DELAY_MS, MS, NO_DROP, EndpointSet, LocalBatch, MixKeySet, RouteTable,
    classify, decode_ingress, decode_schedule, encode_ingress, encode_schedule)
from pipeline_support import FWD, L, make_packet

HOP = b"H" * 32
TO_USER = su.FLAG_RECIPIENT | su.FLAG_NODE_DELAY
UNRELIABLE = su.FLAG_RECIPIENT
SURB = su.FLAG_RECIPIENT | su.FLAG_SURB_REPLY


def unwrap(packets):
    arr = np.frombuffer(b"".join(packets), np.uint8).reshape(len(packets), L).copy()
    result = su.StandinUnwrapResult(len(packets))
    su.unwrap_batch(arr, len(packets), np.zeros((1, 32), np.uint8), result)
    return arr, result


IMPLS = [pytest.param(core_classify, id="core"), pytest.param(ref_classify, id="reference")]


@pytest.fixture(params=IMPLS)
def impl(request):
    return request.param


def run_classify(packets, *, from_client=None, is_provider=False, dwell_ns=0, replayed=None, endpoints=(),
                 impl=core_classify):
    n = len(packets)
    _, result = unwrap(packets)
    recv_at = np.full(n, 1_000 * MS, np.int64)
    cls = classify(result, n, from_client=np.zeros(n, bool) if from_client is None else np.array(from_client),
                   recv_at_ns=recv_at, dequeue_ns=1_000 * MS + dwell_ns, now_ns=2_000 * MS,
                   replayed=np.zeros(n, bool) if replayed is None else np.array(replayed),
                   is_provider=is_provider, routes=RouteTable({HOP: 7}), endpoints=EndpointSet(endpoints),
                   impl=impl)
    dropped = cls.reason != NO_DROP
    assert list(np.bincount(cls.reason[dropped], minlength=32)) == list(cls.drop_counts)
    return cls


# ---------------------------------------------------------------- stand-in unwrap entry point

def test_standin_decodes_the_routing_block_into_result_arrays():
    packet = make_packet(flags=FWD, delay_ms=0x01020304, next_hop=HOP, recipient=b"bob", surb_id=b"s" * 16,
                         tag=b"t" * 32)
    _, r = unwrap([packet])
    assert r.status[0] == 0 and r.key_index[0] == 0 and r.flags[0] == FWD
    assert r.delay_ms[0] == 0x01020304
    assert r.tags[0].tobytes() == b"t" * 32 and r.next_hop[0].tobytes() == HOP
    assert r.recipient[0].tobytes() == b"bob".ljust(64, b"\0") and r.surb_id[0].tobytes() == b"s" * 16


def test_standin_forced_status_reports_no_key():
    _, r = unwrap([make_packet(status=3)])
    assert r.status[0] == 3 and r.key_index[0] == -1


def test_standin_rejects_bad_shapes():
    result = su.StandinUnwrapResult(2)
    keys = np.zeros((1, 32), np.uint8)
    with pytest.raises(ValueError, match="n=3"):
        su.unwrap_batch(np.zeros((2, L), np.uint8), 3, keys, result)
    with pytest.raises(ValueError, match="capacity"):
        su.unwrap_batch(np.zeros((4, L), np.uint8), 3, keys, result)
    with pytest.raises(ValueError, match="rows are"):
        su.unwrap_batch(np.zeros((2, 100), np.uint8), 1, keys, result)
    with pytest.raises(ValueError, match="keys"):
        su.unwrap_batch(np.zeros((2, L), np.uint8), 1, np.zeros((4, 32), np.uint8), result)
    with pytest.raises(ValueError):
        su.StandinUnwrapResult(0)
    with pytest.raises(ValueError, match="next_hop"):
        su.encode_standin_packet(bytearray(L), flags=FWD, next_hop=b"x" * 33)


def test_standin_cost_is_spent_per_packet():
    import time
    engine = su.StandinUnwrapEngine(200_000)      # 0.2 ms per packet
    arr = np.frombuffer(make_packet() * 5, np.uint8).reshape(5, L).copy()
    result = engine.new_result(5)
    t0 = time.thread_time()
    engine.unwrap(arr, 5, np.zeros((1, 32), np.uint8), result)
    assert time.thread_time() - t0 >= 0.001
    with pytest.raises(ValueError):
        su.StandinUnwrapEngine(-1)


# ---------------------------------------------------------------- classification table (§1.4)

def test_forward_packet_at_a_mix_goes_to_the_scheduler_with_its_hop(impl):
    cls = run_classify([make_packet(flags=FWD, delay_ms=50, next_hop=HOP)], impl=impl)
    assert cls.reason[0] == NO_DROP and cls.kind[0] == KIND_FORWARD and cls.hop[0] == 7
    assert cls.deadline_us[0] == (2_000 + 50) * 1000


def test_drop_reasons_for_unwrap_failure_duplicate_replay_and_invalid_commands(impl):
    packets = [make_packet(status=3), make_packet(flags=FWD | su.FLAG_DUPLICATE, next_hop=HOP),
               make_packet(flags=FWD, next_hop=HOP, delay_ms=5), make_packet(flags=su.FLAG_NEXT_HOP, next_hop=HOP),
               make_packet(flags=FWD | su.FLAG_RECIPIENT, next_hop=HOP)]
    cls = run_classify(packets, replayed=[False, False, True, False, False], impl=impl)
    assert list(cls.reason) == [DropReason.UNWRAP_FAILED, DropReason.DUPLICATE_COMMAND, DropReason.REPLAY,
                                DropReason.INVALID_COMMANDS, DropReason.INVALID_COMMANDS]
    assert (cls.kind == KIND_NONE).all()
    assert cls.drop_counts[DropReason.INVALID_COMMANDS] == 2


def test_unknown_next_hop_is_dropped_as_no_route(impl):
    cls = run_classify([make_packet(flags=FWD, next_hop=b"X" * 32, delay_ms=5)], impl=impl)
    assert cls.reason[0] == DropReason.NO_ROUTE


def test_mix_passes_surb_replies_to_decoy_and_drops_other_terminal_packets(impl):
    cls = run_classify([make_packet(flags=SURB), make_packet(flags=TO_USER), make_packet(flags=UNRELIABLE)], impl=impl)
    assert cls.kind[0] == KIND_DECOY_SURB_REPLY and cls.reason[0] == NO_DROP
    assert list(cls.reason[1:]) == [DropReason.TERMINAL_AT_MIX] * 2


def test_provider_classifies_terminal_packets_and_kaetzchen(impl):
    packets = [make_packet(flags=TO_USER, recipient=b"alice"), make_packet(flags=UNRELIABLE, recipient=b"bob"),
               make_packet(flags=SURB, recipient=b"carol"), make_packet(flags=TO_USER, recipient=b"loop"),
               make_packet(flags=SURB, recipient=b"loop")]
    cls = run_classify(packets, is_provider=True, endpoints=[b"loop"], impl=impl)
    assert list(cls.kind[:4]) == [KIND_TO_USER, KIND_UNRELIABLE_TO_USER, KIND_SURB_REPLY, KIND_KAETZCHEN]
    assert cls.reason[4] == DropReason.KAETZCHEN_SURB_REPLY


def test_provider_drops_forward_from_a_mix_and_terminal_from_a_client(impl):
    packets = [make_packet(flags=FWD, next_hop=HOP, delay_ms=5), make_packet(flags=FWD, next_hop=HOP, delay_ms=5),
               make_packet(flags=TO_USER, recipient=b"alice")]
    cls = run_classify(packets, is_provider=True, from_client=[False, True, True], impl=impl)
    assert cls.reason[0] == DropReason.FORWARD_AT_PROVIDER      # MustTerminate
    assert cls.reason[1] == NO_DROP and cls.kind[1] == KIND_FORWARD
    assert cls.reason[2] == DropReason.CLIENT_BYPASS            # MustForward


def test_delay_above_three_epochs_is_dropped(impl):
    cls = run_classify([make_packet(flags=FWD, next_hop=HOP, delay_ms=MAX_NODE_DELAY_MS + 1)], impl=impl)
    assert cls.reason[0] == DropReason.DELAY_TOO_LONG


def test_three_epochs_follow_a_shorter_debug_epoch_period(impl):
    _, result = unwrap([make_packet(flags=FWD, next_hop=HOP, delay_ms=360_001),
                        make_packet(flags=FWD, next_hop=HOP, delay_ms=360_000)])
    routes = RouteTable({HOP: 7})
    out = workers._ClassifyBuffers(2)
    n_fwd, _ = impl.classify_batch(result, 2, np.full(2, 1_000 * MS, np.int64), np.zeros(2, np.uint8),
                                   np.zeros(2, np.uint8), 1_000 * MS, 1_000 * MS, False, routes.ids, routes.index,
                                   EndpointSet().ids, out.drop_counts, out.fwd_rows, out.fwd_deadline, out.fwd_hop,
                                   out.local_rows, out.local_kind, out.row_reason,
                                   max_node_delay_ms=3 * 120 * 1000)          # 2-minute epochs
    assert n_fwd == 1 and out.row_reason[0] == DropReason.DELAY_TOO_LONG


# ---------------------------------------------------------------- dwell adjustment (§1.5)

@pytest.mark.parametrize("node_delay_ms,dwell_us,expect_us,dropped", [
    (10, 3_000, 7_000, False),        # delay > dwell: delay - dwell
    (0, 300, 700, False),             # zero delay, dwell < 1 ms: 1 ms - dwell
    (0, 1_000, None, True),           # zero delay, dwell >= 1 ms: drop
    (2, 5_000, 1_000, False),         # dwell >= non-zero delay: 1 ms
])
def test_dwell_adjustment(impl, node_delay_ms, dwell_us, expect_us, dropped):
    cls = run_classify([make_packet(flags=FWD, next_hop=HOP, delay_ms=node_delay_ms)], dwell_ns=dwell_us * 1000,
                       impl=impl)
    assert bool(cls.reason[0] == DropReason.DWELL_EXCEEDED) is dropped
    if not dropped:
        # deadline = now (2000 ms) + adjusted delay, in microseconds
        assert cls.deadline_us[0] == 2_000_000 + expect_us
    assert ref_classify.dwell_adjusted_delay(node_delay_ms, dwell_us * 1000) == (
        None if dropped else expect_us * 1000)


def test_zero_delay_packet_that_dwelt_is_counted_as_dwell_exceeded(impl):
    cls = run_classify([make_packet(flags=FWD, next_hop=HOP, delay_ms=0)], dwell_ns=2 * MS, impl=impl)
    assert cls.reason[0] == DropReason.DWELL_EXCEEDED


def test_max_delay_clamp():
    three_p = MAX_NODE_DELAY_MS
    assert clamp_max_delay(0) == three_p and clamp_max_delay(three_p + 1) == three_p
    assert clamp_max_delay(46_000) == 46_000
    assert clamp_max_delay(0, cap_ms=360_000) == 360_000 and clamp_max_delay(400_000, cap_ms=360_000) == 360_000


# ---------------------------------------------------------------- tables and frames

def test_route_table_lookup_and_validation():
    table = RouteTable({b"A" * 32: 0, b"B" * 31 + b"\0": 3})
    assert table.lookup(b"B" * 31 + b"\0") == 3 and table.lookup(b"C" * 32) == -1
    assert [bytes(r) for r in table.ids] == [b"A" * 32, b"B" * 31 + b"\0"] and list(table.index) == [0, 3]
    assert RouteTable().ids.shape == (0, 32)
    with pytest.raises(ValueError):
        RouteTable({b"short": 1})


def test_codes_of_the_core_match_the_server_enums():
    for impl in (core_classify, ref_classify):
        for name, code in impl.REASON_CODES.items():
            assert DropReason[name] == code
        for name, code in impl.KIND_CODES.items():
            assert getattr(workers, f"KIND_{name}") == code
        assert impl.NO_DROP_CODE == NO_DROP and impl.REASON_SLOTS >= len(DropReason)


def test_core_and_reference_agree_on_random_batches():
    rng = np.random.default_rng(7)
    hops = [bytes(rng.integers(0, 256, 32, np.uint8)) for _ in range(5)]
    endpoints = [b"loop", b"keyserver"]
    for trial in range(40):
        n = int(rng.integers(1, 65))
        packets = []
        for _ in range(n):
            flags = int(rng.choice([FWD, TO_USER, UNRELIABLE, SURB, FWD | su.FLAG_DUPLICATE, su.FLAG_NEXT_HOP,
                                    int(rng.integers(0, 32))]))
            packets.append(make_packet(
                flags=flags, delay_ms=int(rng.choice([0, 1, 2, 5, 50, MAX_NODE_DELAY_MS + 1])),
                next_hop=hops[int(rng.integers(0, 5))] if rng.random() < 0.9 else b"?" * 32,
                recipient=endpoints[int(rng.integers(0, 2))] if rng.random() < 0.3 else b"user",
                status=int(rng.choice([0, 0, 0, 3]))))
        _, result = unwrap(packets)
        args = dict(from_client=rng.random(n) < 0.3, recv_at_ns=1_000 * MS - rng.integers(0, 3 * MS, n),
                    dequeue_ns=1_000 * MS, now_ns=1_001 * MS, replayed=rng.random(n) < 0.1,
                    is_provider=bool(trial % 2), routes=RouteTable({h: i for i, h in enumerate(hops)}),
                    endpoints=EndpointSet(endpoints))
        core = classify(result, n, impl=core_classify, **args)
        ref = classify(result, n, impl=ref_classify, **args)
        for field in ("reason", "kind", "deadline_us", "hop", "drop_counts"):
            assert (getattr(core, field) == getattr(ref, field)).all(), (trial, field)
        # The bound classifier the workers use gives the same answer.
        drops = np.zeros(32, np.int64)
        bound = core_classify.BatchClassifier(result, drops, args["is_provider"])
        bound.set_routes(args["routes"].ids, args["routes"].index)
        bound.set_endpoints(args["endpoints"].ids)
        bound.seen[:n] = args["replayed"]
        n_fwd, n_local = bound.classify(n, np.ascontiguousarray(args["recv_at_ns"], np.int64),
                                        args["from_client"].astype(np.uint8), args["dequeue_ns"], args["now_ns"])
        assert (bound.row_reason[:n] == core.reason).all() and (drops == core.drop_counts).all()
        fwd = bound.fwd_rows[:n_fwd]
        assert (core.kind[fwd] == KIND_FORWARD).all() and n_fwd == int((core.kind == KIND_FORWARD).sum())
        assert (bound.fwd_deadline_us[:n_fwd] == core.deadline_us[fwd]).all()
        assert (bound.fwd_hop[:n_fwd] == core.hop[fwd]).all()
        assert (bound.local_kind[:n_local] == core.kind[bound.local_rows[:n_local]]).all()


def test_replay_masks_select_rows_by_key(impl):
    packets = [make_packet(), make_packet(status=3), make_packet(flags=FWD | su.FLAG_DUPLICATE), make_packet()]
    _, result = unwrap(packets)
    result.key_index[3] = 1
    masks = np.full((3, 4), 9, np.uint8)
    impl.replay_masks(result, 4, masks)
    assert masks.tolist() == [[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]


def test_batch_classifier_replay_masks_and_bad_input():
    packets = [make_packet(), make_packet(status=3), make_packet(flags=FWD | su.FLAG_DUPLICATE), make_packet()]
    _, result = unwrap(packets)
    result.key_index[3] = 2
    bound = core_classify.BatchClassifier(result, np.zeros(32, np.int64), False)
    bound.seen[:] = 7
    bound.replay_masks(4)
    assert bound.masks.tolist() == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]] and not bound.seen.any()
    with pytest.raises(ValueError):
        bound.replay_masks(5)
    with pytest.raises(ValueError):
        bound.classify(2, np.zeros(1, np.int64), np.zeros(2, np.uint8), 0, 0)
    with pytest.raises(ValueError):
        bound.set_routes(np.zeros((1, 31), np.uint8), np.zeros(1, np.int32))
    with pytest.raises(ValueError):
        bound.set_endpoints(np.zeros((1, 32), np.uint8))
    with pytest.raises(ValueError):
        core_classify.BatchClassifier(result, np.zeros(8, np.int64), False)
    assert bound.classify(0, np.zeros(0, np.int64), np.zeros(0, np.uint8), 0, 0) == (0, 0)


def test_batch_classifier_holds_every_array_it_points_into():
    """The classifier's C pointers stay valid whatever the caller does with the result object
    and the arrays it handed in: the classifier itself owns a reference to each."""
    import gc
    import weakref
    _, result = unwrap([make_packet(), make_packet(status=3)])
    drops = np.zeros(32, np.int64)
    bound = core_classify.BatchClassifier(result, drops, False)
    watched = [weakref.ref(getattr(result, name)) for name in
               ("status", "flags", "delay_ms", "next_hop", "recipient")] + [weakref.ref(drops)]
    for name in ("status", "flags", "delay_ms", "next_hop", "recipient"):
        setattr(result, name, None)  # the result object lets go of its arrays...
    del drops
    gc.collect()
    assert all(ref() is not None for ref in watched)  # ...the classifier does not
    assert bound.classify(2, np.zeros(2, np.int64), np.zeros(2, np.uint8), 0, 0) == (0, 0)
    counts = watched[-1]()  # no route table: the good packet is a no_route drop
    assert counts[int(DropReason.UNWRAP_FAILED)] == 1 and counts[int(DropReason.NO_ROUTE)] == 1


def test_core_classify_rejects_short_outputs():
    _, result = unwrap([make_packet()])
    z = np.zeros(0, np.int32)
    with pytest.raises(ValueError, match="fwd_rows"):
        core_classify.classify_batch(result, 1, np.zeros(1, np.int64), np.zeros(1, np.uint8), np.zeros(1, np.uint8),
                                     0, 0, False, np.zeros((0, 32), np.uint8), z, np.zeros((0, 64), np.uint8),
                                     np.zeros(32, np.int64), z, np.zeros(1, np.int64), np.zeros(1, np.int32),
                                     np.zeros(1, np.int32), np.zeros(1, np.uint8), np.zeros(1, np.uint8))
    with pytest.raises(ValueError):
        core_classify.replay_masks(result, 5, np.zeros((3, 1), np.uint8))


def test_endpoint_set_rejects_oversized_endpoint():
    with pytest.raises(ValueError):
        EndpointSet([b"x" * 65])


def test_mix_key_set_validates_shapes():
    with pytest.raises(ValueError):
        MixKeySet(np.zeros((4, 32), np.uint8), (None,) * 4)
    with pytest.raises(ValueError):
        MixKeySet(np.zeros((1, 32), np.uint8), ())


def test_frame_formats_round_trip_and_reject_malformed():
    packets = np.frombuffer(make_packet() * 3, np.uint8).reshape(3, L)
    message = encode_ingress(packets, [1, 2, 3], [0, 1, 0])
    recv_at, from_client, got = decode_ingress(message)
    assert list(recv_at) == [1, 2, 3] and list(from_client) == [0, 1, 0] and (got == packets).all()
    for bad in (message[:-1], message[1:], b"", bytes(8), message[:-8] + (4).to_bytes(8, "little")):
        with pytest.raises(ValueError):
            decode_ingress(bad)
    message = encode_schedule(packets, np.array([2, 0], np.int32), [5, 6], [1, 2]).tobytes()
    deadline, hop, got = decode_schedule(message)
    assert list(deadline) == [5, 6] and list(hop) == [1, 2]
    assert (got[0] == packets[2]).all() and (got[1] == packets[0]).all()
    deadline, hop, got = decode_schedule(encode_schedule(packets, None, [7, 8, 9], [0, 0, 0]).tobytes())
    assert list(deadline) == [7, 8, 9] and (got == packets).all()
    with pytest.raises(ValueError):
        decode_schedule(b"xx")
    with pytest.raises(ValueError):
        decode_schedule(message[:-9] + message[-8:])
    dispatch, hop, deadline, _ = decode_due(encode_due_meta(9, [1, 2, 3], [4, 5, 6]), packets.tobytes())
    assert dispatch == 9 and list(hop) == [1, 2, 3] and list(deadline) == [4, 5, 6]
    with pytest.raises(ValueError):
        decode_due(b"", packets.tobytes())
    batch = LocalBatch(kind=np.array([1, 2, 3], np.uint8), recv_at_ns=np.array([1, 2, 3]),
                       delay_ms=np.array([0, 5, 9], np.uint32), recipient=np.ones((3, 64), np.uint8),
                       surb_id=np.zeros((3, 16), np.uint8), packets=packets, dispatch_ns=12345)
    back = LocalBatch.from_frames(*[bytes(f) for f in batch.to_frames()])
    assert back.dispatch_ns == 12345 and list(back.delay_ms) == [0, 5, 9]
    assert (back.recipient == 1).all() and (back.packets == packets).all()
    with pytest.raises(ValueError):
        LocalBatch.from_frames(b"x", packets.tobytes())


def test_counters_snapshot_sums_stages():
    counters = PipelineCounters()
    counters.stage("a").drop(DropReason.REPLAY, 2)
    counters.stage("b").drop(DropReason.REPLAY, 3)
    counters.stage("b").count(Event.SENT, 4)
    snap = counters.snapshot()
    assert snap["drops"]["replay"] == 5 and snap["events"]["sent"] == 4
    assert snap["stages"]["a"]["drops"] == {"replay": 2}
    assert counters.total_dropped() == 5 and counters.event_total(Event.SENT) == 4


def test_an_ingress_frame_rewritten_in_place_is_a_scheduler_message():
    # Workers forward an all-forward batch in the frame it came in: the tail holds both layouts.
    packets = np.arange(3 * L, dtype=np.uint64).astype(np.uint8).reshape(3, L)
    message = bytearray(encode_ingress(packets, [5, 6, 7], [1, 0, 1]))
    recv_at, from_client, rows, hop_space = workers._ingress_views(message)
    assert list(recv_at) == [5, 6, 7] and list(from_client) == [1, 0, 1] and len(hop_space) == 3
    recv_at[:] = [100, 200, 300]
    hop_space[:] = [7, 8, 9]
    deadline, hop, got = decode_schedule(message)
    assert list(deadline) == [100, 200, 300] and list(hop) == [7, 8, 9]
    assert np.array_equal(got, packets)
    assert bytes(message) == encode_schedule(packets, None, [100, 200, 300], [7, 8, 9]).tobytes()


@pytest.mark.parametrize("k", [1, 3, 5])  # k * L is not a multiple of 8: there is padding
def test_schedule_message_padding_is_zero_whatever_the_memory_held(k):
    pad = slice(k * L, workers._tail_offset(k))
    assert pad.stop > pad.start
    packets = np.full((k, L), 0xAB, np.uint8)
    size = workers._tail_offset(k) + 12 * k + 8
    for _ in range(200):  # freed memory full of 0xFF is what a fresh np.empty most often gets
        junk = np.full(size, 0xFF, np.uint8)
        del junk
        out = encode_schedule(packets, None, list(range(k)), list(range(k)))
        assert not out[pad].any()


@pytest.mark.parametrize("k", [1, 3])
def test_a_reused_ingress_buffer_never_carries_old_bytes_in_its_padding(k):
    buf = bytearray(b"\xff") * workers.ingress_message_size(8)  # a longer batch was here
    size = workers.write_ingress_tail(buf, k, [1] * k, [0] * k)
    message = bytes(buf[:size])
    assert message[k * L:workers._tail_offset(k)] == bytes(workers._tail_offset(k) - k * L)
    assert message[workers._tail_offset(k) + 9 * k:size - 8] == bytes(3 * k)  # the spare bytes


def test_standin_returns_the_number_unwrapped_like_the_real_unwrap():
    packets = [make_packet(), make_packet(status=3), make_packet(), make_packet(status=1)]
    arr = np.frombuffer(b"".join(packets), np.uint8).reshape(4, L).copy()
    result = su.StandinUnwrapResult(4)
    assert su.unwrap_batch(arr, 4, np.zeros((1, 32), np.uint8), result) == 2
    assert su.StandinUnwrapEngine(0).unwrap(arr, 3, np.zeros((1, 32), np.uint8), result) == 2
