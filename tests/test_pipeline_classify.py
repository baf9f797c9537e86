"""Crypto-worker logic without threads: the stand-in unwrap, classification (spec/server.md §1.3,
§1.4), dwell adjustment (§1.5), route and endpoint tables, and the batch frame formats."""
import numpy as np
import pytest

from katzenpost._core import unwrap_standin as su
from katzenpost.server.counters import DropReason, Event, PipelineCounters
from katzenpost.server.scheduler import clamp_max_delay, decode_due, encode_due_meta
from katzenpost.server.workers import (
    KIND_DECOY_SURB_REPLY, KIND_FORWARD, KIND_KAETZCHEN, KIND_NONE, KIND_SURB_REPLY, KIND_TO_USER,
    KIND_UNRELIABLE_TO_USER, MAX_NODE_DELAY_MS, MS, NO_DROP, EndpointSet, LocalBatch, MixKeySet, RouteTable,
    adjust_forward_delay, classify, decode_ingress, decode_schedule, encode_ingress_meta,
    encode_schedule_meta)
from pipeline_support import FWD, L, SetReplayFilter, make_packet

HOP = b"H" * 32
TO_USER = su.FLAG_RECIPIENT | su.FLAG_NODE_DELAY
UNRELIABLE = su.FLAG_RECIPIENT
SURB = su.FLAG_RECIPIENT | su.FLAG_SURB_REPLY


def unwrap(packets):
    arr = np.frombuffer(b"".join(packets), np.uint8).reshape(len(packets), L).copy()
    result = su.StandinUnwrapResult(len(packets))
    su.unwrap_batch(arr, len(packets), np.zeros((1, 32), np.uint8), result)
    return arr, result


def run_classify(packets, *, from_client=None, is_provider=False, dwell_ns=0, replayed=None, endpoints=()):
    n = len(packets)
    _, result = unwrap(packets)
    recv_at = np.full(n, 1_000 * MS, np.int64)
    return classify(result, n, from_client=np.zeros(n, bool) if from_client is None else np.array(from_client),
                    recv_at_ns=recv_at, dequeue_ns=1_000 * MS + dwell_ns, now_ns=2_000 * MS,
                    replayed=np.zeros(n, bool) if replayed is None else np.array(replayed),
                    is_provider=is_provider, routes=RouteTable({HOP: 7}), endpoints=EndpointSet(endpoints))


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

def test_forward_packet_at_a_mix_goes_to_the_scheduler_with_its_hop():
    cls = run_classify([make_packet(flags=FWD, delay_ms=50, next_hop=HOP)])
    assert cls.reason[0] == NO_DROP and cls.kind[0] == KIND_FORWARD and cls.hop[0] == 7
    assert cls.deadline_ms[0] == 2_000 + 50


def test_drop_reasons_for_unwrap_failure_duplicate_replay_and_invalid_commands():
    packets = [make_packet(status=3), make_packet(flags=FWD | su.FLAG_DUPLICATE, next_hop=HOP),
               make_packet(flags=FWD, next_hop=HOP, delay_ms=5), make_packet(flags=su.FLAG_NEXT_HOP, next_hop=HOP),
               make_packet(flags=FWD | su.FLAG_RECIPIENT, next_hop=HOP)]
    cls = run_classify(packets, replayed=[False, False, True, False, False])
    assert list(cls.reason) == [DropReason.UNWRAP_FAILED, DropReason.DUPLICATE_COMMAND, DropReason.REPLAY,
                                DropReason.INVALID_COMMANDS, DropReason.INVALID_COMMANDS]
    assert (cls.kind == KIND_NONE).all()


def test_unknown_next_hop_is_dropped_as_no_route():
    cls = run_classify([make_packet(flags=FWD, next_hop=b"X" * 32, delay_ms=5)])
    assert cls.reason[0] == DropReason.NO_ROUTE


def test_mix_passes_surb_replies_to_decoy_and_drops_other_terminal_packets():
    cls = run_classify([make_packet(flags=SURB), make_packet(flags=TO_USER), make_packet(flags=UNRELIABLE)])
    assert cls.kind[0] == KIND_DECOY_SURB_REPLY and cls.reason[0] == NO_DROP
    assert list(cls.reason[1:]) == [DropReason.TERMINAL_AT_MIX] * 2


def test_provider_classifies_terminal_packets_and_kaetzchen():
    packets = [make_packet(flags=TO_USER, recipient=b"alice"), make_packet(flags=UNRELIABLE, recipient=b"bob"),
               make_packet(flags=SURB, recipient=b"carol"), make_packet(flags=TO_USER, recipient=b"loop"),
               make_packet(flags=SURB, recipient=b"loop")]
    cls = run_classify(packets, is_provider=True, endpoints=[b"loop"])
    assert list(cls.kind[:4]) == [KIND_TO_USER, KIND_UNRELIABLE_TO_USER, KIND_SURB_REPLY, KIND_KAETZCHEN]
    assert cls.reason[4] == DropReason.KAETZCHEN_SURB_REPLY


def test_provider_drops_forward_from_a_mix_and_terminal_from_a_client():
    packets = [make_packet(flags=FWD, next_hop=HOP, delay_ms=5), make_packet(flags=FWD, next_hop=HOP, delay_ms=5),
               make_packet(flags=TO_USER, recipient=b"alice")]
    cls = run_classify(packets, is_provider=True, from_client=[False, True, True])
    assert cls.reason[0] == DropReason.FORWARD_AT_PROVIDER      # MustTerminate
    assert cls.reason[1] == NO_DROP and cls.kind[1] == KIND_FORWARD
    assert cls.reason[2] == DropReason.CLIENT_BYPASS            # MustForward


def test_delay_above_three_epochs_is_dropped():
    cls = run_classify([make_packet(flags=FWD, next_hop=HOP, delay_ms=MAX_NODE_DELAY_MS + 1)])
    assert cls.reason[0] == DropReason.DELAY_TOO_LONG


# ---------------------------------------------------------------- dwell adjustment (§1.5)

@pytest.mark.parametrize("node_delay_ms,dwell_us,expect_us,dropped", [
    (10, 3_000, 7_000, False),        # delay > dwell: delay - dwell
    (0, 300, 700, False),             # zero delay, dwell < 1 ms: 1 ms - dwell
    (0, 1_000, None, True),           # zero delay, dwell >= 1 ms: drop
    (2, 5_000, 1_000, False),         # dwell >= non-zero delay: 1 ms
])
def test_dwell_adjustment(node_delay_ms, dwell_us, expect_us, dropped):
    delay, drop = adjust_forward_delay(np.array([node_delay_ms], np.uint32), np.array([dwell_us * 1000]))
    assert bool(drop[0]) is dropped
    if not dropped:
        assert delay[0] == expect_us * 1000


def test_zero_delay_packet_that_dwelt_is_counted_as_dwell_exceeded():
    cls = run_classify([make_packet(flags=FWD, next_hop=HOP, delay_ms=0)], dwell_ns=2 * MS)
    assert cls.reason[0] == DropReason.DWELL_EXCEEDED


def test_max_delay_clamp():
    three_p = MAX_NODE_DELAY_MS
    assert clamp_max_delay(0) == three_p and clamp_max_delay(three_p + 1) == three_p
    assert clamp_max_delay(46_000) == 46_000


# ---------------------------------------------------------------- tables and frames

def test_route_table_lookup_and_validation():
    table = RouteTable({b"A" * 32: 0, b"B" * 31 + b"\0": 3})
    rows = np.frombuffer(b"B" * 31 + b"\0" + b"C" * 32 + b"A" * 32, np.uint8).reshape(3, 32)
    assert list(table.lookup(rows)) == [3, -1, 0]
    assert list(RouteTable().lookup(rows)) == [-1, -1, -1]
    with pytest.raises(ValueError):
        RouteTable({b"short": 1})


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
    meta = encode_ingress_meta([1, 2, 3], [0, 1, 0])
    recv_at, from_client, got = decode_ingress(meta, packets.tobytes())
    assert list(recv_at) == [1, 2, 3] and list(from_client) == [0, 1, 0] and (got == packets).all()
    with pytest.raises(ValueError):
        decode_ingress(meta, packets.tobytes()[:-1])
    deadline, hop, _ = decode_schedule(encode_schedule_meta([5, 6, 7], [1, 2, 3]), packets.tobytes())
    assert list(deadline) == [5, 6, 7] and list(hop) == [1, 2, 3]
    with pytest.raises(ValueError):
        decode_schedule(b"xx", packets.tobytes())
    dispatch, hop, deadline, _ = decode_due(encode_due_meta(9, [1, 2, 3], [4, 5, 6]), packets.tobytes())
    assert dispatch == 9 and list(hop) == [1, 2, 3] and list(deadline) == [4, 5, 6]
    with pytest.raises(ValueError):
        decode_due(b"", packets.tobytes())
    batch = LocalBatch(kind=np.array([1, 2, 3], np.uint8), recv_at_ns=np.array([1, 2, 3]),
                       delay_ms=np.array([0, 5, 9], np.uint32), recipient=np.ones((3, 64), np.uint8),
                       surb_id=np.zeros((3, 16), np.uint8), packets=packets)
    back = LocalBatch.from_frames(*[bytes(f) for f in batch.to_frames()])
    assert list(back.delay_ms) == [0, 5, 9] and (back.recipient == 1).all() and (back.packets == packets).all()
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


def test_set_replay_double_matches_contract():
    f = SetReplayFilter()
    tags = np.zeros((3, 32), np.uint8)
    tags[1, 0] = 1
    out = np.zeros(3, np.uint8)
    f.check_and_add(tags, np.array([1, 1, 1], np.uint8), out)
    assert list(out) == [0, 0, 1]
