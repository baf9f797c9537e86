"""Timer wheel: same dispatch order and drop accounting as the heapq twin, boundary delays, clock
steps, burst limits, unlimited growth, memory per packet, and refusal of bad arguments."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from katzenpost._core.wheel import GROWTH_CHUNK, TimerWheel
from katzenpost.reference.wheel import ReferenceWheel, SplitMix64

PACKET_LEN = 8
MIX_KEY_LIFETIME_MS = 3 * 20 * 60 * 1000  # NumMixKeys x epoch period


def batch(deadlines, hops=None, start_tag=0):
    n = len(deadlines)
    d = np.asarray(deadlines, dtype=np.int64)
    h = np.asarray(hops if hops is not None else range(start_tag, start_tag + n), dtype=np.int32)
    p = np.zeros((n, PACKET_LEN), dtype=np.uint8)
    p[:, :8] = (np.arange(start_tag, start_tag + n, dtype=np.uint64)).view(np.uint8).reshape(n, 8)
    return d, h, p


def pop(wheel, now, burst=10**6, slack=1 << 62, rows=None):
    rows = rows if rows is not None else max(1, min(burst, len(wheel) + 1))
    out_p = np.zeros((rows, PACKET_LEN), np.uint8)
    out_h = np.zeros(rows, np.int32)
    out_d = np.zeros(rows, np.int64)
    n = wheel.pop_due(now, burst, slack, out_p, out_h, out_d)
    return [(bytes(out_p[i]), int(out_h[i]), int(out_d[i])) for i in range(n)]


def both(capacity, seed=7):
    return TimerWheel(capacity, PACKET_LEN, seed), ReferenceWheel(capacity, PACKET_LEN, seed)


# ---- differential property test against the heapq twin ---------------------------------------

delay_choices = st.one_of(
    st.integers(-50, 50),                              # behind the clock, due now, 1 ms
    st.integers(0, 300),                               # within level 0-1
    st.integers(0, 70_000),                            # seconds
    st.sampled_from([MIX_KEY_LIFETIME_MS, MIX_KEY_LIFETIME_MS + 1, 1 << 40]),
)
operation = st.one_of(
    st.tuples(st.just("insert"), st.lists(delay_choices, min_size=1, max_size=30)),
    st.tuples(st.just("pop"), st.integers(-20, 5000), st.integers(0, 20), st.integers(0, 40)),
    st.tuples(st.just("pop_slots"), st.integers(-20, 5000), st.integers(0, 20), st.integers(0, 40)),
    st.tuples(st.just("release"), st.floats(0, 1)),
    st.tuples(st.just("jump"), st.sampled_from([-1000, 60_000, MIX_KEY_LIFETIME_MS, 1 << 41])),
)


def pop_slots(wheel, now, burst, slack, rows=None):
    """pop_due_slots as [(slot, hop, deadline)] plus each held row's bytes, read in place."""
    rows = rows if rows is not None else max(1, burst)
    out_s, out_h, out_d = np.zeros(rows, np.int32), np.zeros(rows, np.int32), np.zeros(rows, np.int64)
    n = wheel.pop_due_slots(now, burst, slack, out_s, out_h, out_d)
    got = [(int(out_s[i]), int(out_h[i]), int(out_d[i])) for i in range(n)]
    return got, {slot: bytes(wheel.arena_view(slot)) for slot, _, _ in got}


def release(wheel, slots):
    wheel.release(np.asarray(slots, dtype=np.int32))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([0, 1, 3, 17, 64]), st.integers(0, 2**64 - 1), st.integers(0, 10**6),
       st.lists(operation, min_size=1, max_size=40))
def test_wheel_matches_heapq_twin(capacity, seed, start, ops):
    """Copying and zero-copy pops interleaved with inserts, releases and clock steps: same packets,
    slots, order and drops as the twin, and held rows are never overwritten before release."""
    wheel, model = both(capacity, seed)
    now, tag, held = start, 0, []
    for op in ops:
        if op[0] == "insert":
            d, h, p = batch([now + delay for delay in op[1]], start_tag=tag)
            tag += len(d)
            assert wheel.insert_batch(d, h, p) == model.insert_batch(d, h, p)
        elif op[0] == "pop":
            _, advance, burst, slack = op
            now += advance
            assert pop(wheel, now, burst, slack) == model.pop_due(now, burst, slack)
        elif op[0] == "pop_slots":
            _, advance, burst, slack = op
            now += advance
            got, rows = pop_slots(wheel, now, burst, slack)
            assert got == model.pop_due_slots(now, burst, slack)
            assert rows == {slot: model.held_rows[slot] for slot, _, _ in got}
            held += [slot for slot, _, _ in got]
        elif op[0] == "release":
            cut = int(len(held) * op[1])
            release(wheel, held[:cut])
            model.release(held[:cut])
            held = held[cut:]
        else:
            now += op[1]  # clock step (backwards too): nothing popped here
        assert {slot: bytes(wheel.arena_view(slot)) for slot in held} == model.held_rows
        assert (len(wheel), wheel.held) == (len(model), model.held)
        assert wheel.next_deadline() == model.next_deadline()
        assert (wheel.dropped_full, wheel.dropped_late) == (model.dropped_full, model.dropped_late)
    # Drain everything: same remaining packets in the same order.
    assert pop(wheel, 1 << 62) == model.pop_due(1 << 62, 10**6, 1 << 62)
    assert len(wheel) == 0 and wheel.next_deadline() == -1


def test_generator_matches_twin():
    ref = SplitMix64(12345)
    assert [ref.below(10) for _ in range(5)] == [ref2 for ref2 in _draws(12345, 10, 5)]


def _draws(seed, bound, count):
    rng = SplitMix64(seed)
    return [rng.below(bound) for _ in range(count)]


# ---- order, burst and lateness -----------------------------------------------------------------

def test_pop_is_earliest_first_with_fifo_ties():
    wheel = TimerWheel(0, PACKET_LEN, 1)
    deadlines = [50, 10, 10, 5000, 7, 10, 50]
    wheel.insert_batch(*batch(deadlines))
    got = [(h, d) for _, h, d in pop(wheel, 10_000)]
    assert got == [(4, 7), (1, 10), (2, 10), (5, 10), (0, 50), (6, 50), (3, 5000)]


def test_burst_limit_caps_each_pop_and_resumes_in_order():
    wheel = TimerWheel(0, PACKET_LEN, 1)
    wheel.insert_batch(*batch(list(range(100, 140))))
    first = pop(wheel, 1000, burst=16)
    second = pop(wheel, 1000, burst=16)
    third = pop(wheel, 1000, burst=16)
    assert [len(first), len(second), len(third)] == [16, 16, 8]
    assert [d for _, _, d in first + second + third] == list(range(100, 140))


def test_out_arrays_smaller_than_burst_bound_the_pop():
    wheel = TimerWheel(0, PACKET_LEN, 1)
    wheel.insert_batch(*batch([1, 2, 3, 4, 5]))
    assert len(pop(wheel, 10, burst=16, rows=3)) == 3
    assert len(wheel) == 2


def test_late_packets_are_dropped_and_counted_not_returned():
    wheel = TimerWheel(0, PACKET_LEN, 1)
    wheel.insert_batch(*batch([100, 105, 110, 200]))
    got = pop(wheel, 115, burst=16, slack=10)  # 100 is 15 ms late, 105 exactly 10 ms
    assert [d for _, _, d in got] == [105, 110]
    assert wheel.dropped_late == 1
    assert len(wheel) == 1


def test_late_drops_do_not_use_up_the_burst():
    wheel = TimerWheel(0, PACKET_LEN, 1)
    wheel.insert_batch(*batch([1, 2, 3, 990, 991]))
    got = pop(wheel, 1000, burst=2, slack=10)
    assert [d for _, _, d in got] == [990, 991]
    assert wheel.dropped_late == 3


def test_nothing_due_before_deadline():
    wheel = TimerWheel(4, PACKET_LEN, 1)
    wheel.insert_batch(*batch([1000]))
    assert pop(wheel, 999) == []
    assert wheel.next_deadline() == 1000
    assert len(pop(wheel, 1000)) == 1


# ---- boundary delays and clock steps -----------------------------------------------------------

@pytest.mark.parametrize("delay", [0, 1, 63, 64, 255, 256, 4095, 4096, 65535, 65536, MIX_KEY_LIFETIME_MS, MIX_KEY_LIFETIME_MS + 1,
                                   1 << 36, 1 << 62])
def test_any_delay_is_dispatched_exactly_at_its_deadline(delay):
    now = 1_700_000_000
    wheel = TimerWheel(8, PACKET_LEN, 1)
    pop(wheel, now)  # the wheel clock sits at `now`
    wheel.insert_batch(*batch([now + delay]))
    assert wheel.next_deadline() == now + delay
    if delay > 0:
        assert pop(wheel, now + delay - 1, slack=0) == []
    got = pop(wheel, now + delay, slack=0)
    assert [d for _, _, d in got] == [now + delay]
    assert wheel.dropped_late == 0


def test_extreme_deadlines_are_ordered():
    wheel = TimerWheel(0, PACKET_LEN, 1)
    top = np.iinfo(np.int64).max
    deadlines = [top - 1, -(1 << 40), 0, -1, 1 << 50]
    wheel.insert_batch(*batch(deadlines))
    got = [d for _, _, d in pop(wheel, 1 << 50, slack=top)]
    got += [d for _, _, d in pop(wheel, top, slack=top)]
    assert got == sorted(deadlines)
    assert wheel.dropped_late == 0


def test_lateness_does_not_overflow():
    wheel = TimerWheel(0, PACKET_LEN, 1)
    top = np.iinfo(np.int64).max
    wheel.insert_batch(*batch([-(1 << 62)]))
    assert pop(wheel, top, slack=top) == []  # 2^63 + 2^62 - 1 ms late: beyond any slack
    assert wheel.dropped_late == 1


def test_clock_step_forward_drops_everything_late():
    wheel = TimerWheel(0, PACKET_LEN, 1)
    wheel.insert_batch(*batch([1000 + i for i in range(50)] + [10**9]))
    assert pop(wheel, 1000 + 3600_000, burst=16, slack=10) == []
    assert wheel.dropped_late == 50 and len(wheel) == 1


def test_clock_step_backward_dispatches_nothing_early():
    wheel = TimerWheel(0, PACKET_LEN, 1)
    wheel.insert_batch(*batch([5000, 6000]))
    assert len(pop(wheel, 5000)) == 1
    wheel.insert_batch(*batch([4000, 5500]))  # 4000 is behind the wheel clock
    assert pop(wheel, 3000) == []
    assert [d for _, _, d in pop(wheel, 5600)] == [4000, 5500]


# ---- full queue and growth ---------------------------------------------------------------------

def test_full_queue_drops_uniformly_and_counts_every_drop():
    capacity, inserted = 100, 1000
    wheel = TimerWheel(capacity, PACKET_LEN, 99)
    dropped = 0
    for base in range(0, inserted, 50):
        dropped += wheel.insert_batch(*batch([10_000 + i for i in range(base, base + 50)], start_tag=base))
    assert len(wheel) == capacity
    assert dropped == wheel.dropped_full == inserted - capacity
    survivors = [int.from_bytes(p, "little") for p, _, _ in pop(wheel, 1 << 40)]
    assert len(survivors) == capacity
    # Later packets survive more often, but early ones are not all gone (random, not FIFO or LIFO).
    assert min(survivors) < 500 and max(survivors) >= 900


def test_capacity_one_keeps_exactly_one():
    wheel = TimerWheel(1, PACKET_LEN, 3)
    assert wheel.insert_batch(*batch([5, 6, 7, 8])) == 3
    assert len(wheel) == 1 and wheel.dropped_full == 3
    assert (wheel.capacity, wheel.packet_len, wheel.arena_slots) == (1, PACKET_LEN, 1)


def test_unlimited_queue_grows_in_chunks_and_keeps_order():
    wheel = TimerWheel(0, PACKET_LEN, 1)
    rng = np.random.default_rng(3)
    total = 3 * GROWTH_CHUNK + 17
    deadlines = rng.integers(0, 100_000, total)
    for base in range(0, total, 1000):
        wheel.insert_batch(*batch(deadlines[base:base + 1000], start_tag=base))
    assert len(wheel) == total and wheel.dropped_full == 0
    assert wheel.arena_slots == -(-total // GROWTH_CHUNK) * GROWTH_CHUNK  # rows: one chunk at a time
    got = pop(wheel, 1 << 40)
    assert [d for _, _, d in got] == sorted(deadlines.tolist())
    order = np.argsort(deadlines, kind="stable")
    assert [int.from_bytes(p, "little") for p, _, _ in got] == order.tolist()


def test_memory_per_queued_packet_is_at_most_packet_plus_32_bytes():
    packet_len, capacity = 2524, 20_000
    wheel = TimerWheel(capacity, packet_len, 1)
    rows = np.zeros((1000, packet_len), np.uint8)
    for base in range(0, capacity + 1000, 1000):
        wheel.insert_batch(np.arange(base, base + 1000, dtype=np.int64), np.zeros(1000, np.int32), rows)
    assert len(wheel) == wheel.arena_slots == capacity
    assert wheel.nbytes <= capacity * (packet_len + 32) + 64 * 1024  # + the fixed bucket tables


def two_packet_wheel():
    """A wheel holding b"ABCDEFGH" (hop 77, due 3) and b"12345678" (hop 88, due 1)."""
    wheel = TimerWheel(4, PACKET_LEN, 1)
    d, h, p = batch([3, 1], hops=[77, 88])
    p[0] = np.frombuffer(b"ABCDEFGH", np.uint8)
    p[1] = np.frombuffer(b"12345678", np.uint8)
    wheel.insert_batch(d, h, p)
    return wheel


def test_packet_bytes_and_hops_round_trip():
    assert pop(two_packet_wheel(), 5) == [(b"12345678", 88, 1), (b"ABCDEFGH", 77, 3)]


# ---- bad arguments -----------------------------------------------------------------------------

def test_bad_arguments_are_refused():
    wheel = TimerWheel(4, PACKET_LEN, 1)
    d, h, p = batch([1, 2])
    with pytest.raises(ValueError, match="packets are 4 bytes"):
        wheel.insert_batch(d, h, np.zeros((2, 4), np.uint8))
    with pytest.raises(ValueError, match="exceeds the batch"):
        wheel.insert_batch(d, h, p, 3)
    with pytest.raises(ValueError, match="exceeds the batch"):
        wheel.insert_batch(d[:1], h, p)
    with pytest.raises(ValueError):
        wheel.insert_batch(d.astype(np.int32), h, p)
    with pytest.raises(ValueError, match=">= 0"):
        wheel.pop_due(0, -1, 0, np.zeros((1, PACKET_LEN), np.uint8), np.zeros(1, np.int32), np.zeros(1, np.int64))
    with pytest.raises(ValueError, match=">= 0"):
        wheel.pop_due(0, 1, -1, np.zeros((1, PACKET_LEN), np.uint8), np.zeros(1, np.int32), np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="out_packets rows"):
        wheel.pop_due(0, 1, 0, np.zeros((1, 3), np.uint8), np.zeros(1, np.int32), np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="packet_len"):
        TimerWheel(4, 0, 1)
    bare = TimerWheel.__new__(TimerWheel, 4, PACKET_LEN)  # no path reaches a half-built wheel
    assert (len(bare), bare.next_deadline(), bare.arena_slots) == (0, -1, 4)
    assert wheel.insert_batch(d, h, p, 0) == 0
    assert len(wheel) == 0
    assert pop(wheel, 10, burst=0) == []


@pytest.mark.parametrize("capacity", [0, 257])
def test_long_random_run_matches_twin(capacity):
    """Thousands of packets across all levels, random evictions from the middle of buckets."""
    rng = np.random.default_rng(capacity + 1)
    wheel, model = both(capacity, seed=capacity)
    now, tag = 5_000_000, 0
    for _ in range(300):
        n = int(rng.integers(1, 40))
        spread = int(rng.choice([2, 100, 5000, 300_000, MIX_KEY_LIFETIME_MS]))
        deadlines = now + rng.integers(-20, spread, n)
        d, h, p = batch(deadlines, start_tag=tag)
        tag += n
        assert wheel.insert_batch(d, h, p) == model.insert_batch(d, h, p)
        now += int(rng.integers(0, 2000))
        burst, slack = int(rng.integers(1, 64)), int(rng.integers(0, 100))
        assert pop(wheel, now, burst, slack) == model.pop_due(now, burst, slack)
        assert wheel.next_deadline() == model.next_deadline()
    assert (wheel.dropped_full, wheel.dropped_late, len(wheel)) == (model.dropped_full, model.dropped_late, len(model))
    assert pop(wheel, 1 << 62) == model.pop_due(1 << 62, 10**6, 1 << 62)


def test_two_threads_at_once_are_refused_not_corrupting():
    """The wheel has one owner thread; a second concurrent caller gets RuntimeError, never a crash."""
    import threading

    wheel = TimerWheel(0, PACKET_LEN, 1)
    counts = {"inserted": 0, "popped": 0, "refused": 0}
    lock = threading.Lock()

    def hammer(seed):
        rng = np.random.default_rng(seed)
        for i in range(300):
            try:
                if i % 2:
                    n = wheel.insert_batch(*batch(rng.integers(0, 1000, 64)))
                    assert n == 0
                    with lock:
                        counts["inserted"] += 64
                else:
                    got = len(pop(wheel, int(rng.integers(0, 1000)), burst=64, rows=64))
                    with lock:
                        counts["popped"] += got
            except RuntimeError as exc:
                assert "two threads" in str(exc)
                with lock:
                    counts["refused"] += 1

    threads = [threading.Thread(target=hammer, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert counts["inserted"] == counts["popped"] + len(wheel) + wheel.dropped_late


# ---- zero-copy pops ----------------------------------------------------------------------------

def test_pop_due_slots_rows_are_the_packets_and_writable_in_place():
    wheel = two_packet_wheel()
    got, rows = pop_slots(wheel, 5, 16, 100)
    assert [(hop, dl) for _, hop, dl in got] == [(88, 1), (77, 3)]
    assert [rows[slot] for slot, _, _ in got] == [b"12345678", b"ABCDEFGH"]
    assert (len(wheel), wheel.held) == (0, 2)
    view = wheel.arena_view(got[0][0])
    assert view.readonly is False and len(view) == PACKET_LEN
    view[0] = ord("X")  # the caller may rewrite a held row in place (e.g. a header) before sending
    assert bytes(wheel.arena_view(got[0][0])) == b"X2345678"
    release(wheel, [slot for slot, _, _ in got])
    assert wheel.held == 0


def test_held_slots_are_not_reused_nor_dropped_and_count_against_capacity():
    capacity = 8
    wheel, model = both(capacity, seed=5)
    for w in (wheel, model):
        w.insert_batch(*batch(list(range(1, capacity + 1))))
    got, rows = pop_slots(wheel, 3, 16, 100)
    assert [s for s, _, _ in got] == [s for s, _, _ in model.pop_due_slots(3, 16, 100)]
    # Flood the full queue: only queued packets (or the new ones) are victims, never held rows.
    for base in range(0, 400, 40):
        d, h, p = batch([10_000 + i for i in range(40)], start_tag=1000 + base)
        p[:] = 0xEE
        assert wheel.insert_batch(d, h, p) == model.insert_batch(d, h, p)
    assert {s: bytes(wheel.arena_view(s)) for s, _, _ in got} == rows
    assert len(wheel) + wheel.held == capacity and wheel.held == 3
    assert wheel.dropped_full == model.dropped_full == 400  # the queue stayed full throughout
    assert wheel.arena_slots == capacity


def test_full_queue_with_every_slot_held_drops_the_new_packets():
    wheel, model = both(4, seed=9)
    for w in (wheel, model):
        w.insert_batch(*batch([1, 2, 3, 4]))
    assert [s for s, _, _ in pop_slots(wheel, 10, 16, 100)[0]] == [s for s, _, _ in model.pop_due_slots(10, 16, 100)]
    assert wheel.insert_batch(*batch([20, 21])) == model.insert_batch(*batch([20, 21])) == 2
    assert (len(wheel), wheel.held, wheel.dropped_full) == (0, 4, 2)
    release(wheel, [0, 1])
    assert wheel.insert_batch(*batch([30])) == 0 and len(wheel) == 1


def test_late_packets_are_dropped_by_pop_due_slots_too():
    wheel = TimerWheel(0, PACKET_LEN, 1)
    wheel.insert_batch(*batch([100, 105, 110, 200]))
    got, _ = pop_slots(wheel, 115, 16, 10)
    assert [d for _, _, d in got] == [105, 110]
    assert (wheel.dropped_late, wheel.held, len(wheel)) == (1, 2, 1)
    assert pop_slots(wheel, 1000, 1, 10**6, rows=1)[0][0][2] == 200  # burst 1


def test_bad_releases_and_views_are_refused_without_corruption():
    wheel = TimerWheel(0, PACKET_LEN, 1)
    wheel.insert_batch(*batch([1, 2, 3]))
    got, _ = pop_slots(wheel, 2, 16, 100)
    a, b = got[0][0], got[1][0]
    queued = next(s for s in range(3) if s not in (a, b))
    for bad in (queued, -1, wheel.arena_slots, 1 << 30):
        with pytest.raises(ValueError, match=f"slot {bad} at index 0 is not held"):
            release(wheel, [bad])
        with pytest.raises(ValueError, match=f"slot {bad} is not held"):
            wheel.arena_view(bad)
    with pytest.raises(ValueError, match=f"slot {a} at index 1 is not held.*1 slots before"):
        release(wheel, [a, a])  # a double release inside one call: the first one counts
    assert wheel.held == 1
    for bad_n in (2, -1):
        with pytest.raises(ValueError, match=f"release n={bad_n} exceeds the 1 slots"):
            wheel.release(np.asarray([b], np.int32), bad_n)
    with pytest.raises(ValueError, match=">= 0"):
        wheel.pop_due_slots(0, -1, 0, np.zeros(1, np.int32), np.zeros(1, np.int32), np.zeros(1, np.int64))
    with pytest.raises(ValueError):
        wheel.release(np.asarray([b], np.int64))
    wheel.release(np.asarray([b], np.int32), 0)
    assert wheel.held == 1 and len(wheel) == 1
    release(wheel, [b])
    assert [d for _, _, d in pop(wheel, 10)] == [3]
    assert (len(wheel), wheel.held) == (0, 0)


# ---- arena growth --------------------------------------------------------------------------------

@pytest.mark.parametrize("capacity", [1 << 24, (1 << 31) - 1])
def test_huge_capacity_is_cheap_to_construct(capacity):
    wheel = TimerWheel(capacity, 2524, 1)
    assert wheel.capacity == capacity and wheel.arena_slots == GROWTH_CHUNK
    assert wheel.nbytes <= GROWTH_CHUNK * (2524 + 32) + 64 * 1024


def test_bounded_arena_grows_in_chunks_up_to_capacity_and_matches_twin():
    capacity = 2 * GROWTH_CHUNK + 100
    wheel, model = both(capacity, seed=11)
    rng = np.random.default_rng(4)
    sizes = []
    for base in range(0, 3 * GROWTH_CHUNK, 1000):
        d, h, p = batch(rng.integers(0, 10**6, 1000), start_tag=base)
        assert wheel.insert_batch(d, h, p) == model.insert_batch(d, h, p)
        sizes.append(wheel.arena_slots)
        assert wheel.arena_slots <= capacity and wheel.arena_slots >= min(len(wheel), capacity)
    assert sizes[0] == GROWTH_CHUNK and sizes[-1] == capacity
    assert len(wheel) == capacity and wheel.dropped_full == model.dropped_full > 0
    assert wheel.nbytes <= capacity * (wheel.packet_len + 32) + 64 * 1024
    got, rows = pop_slots(wheel, 10**6, capacity, 10**7)
    assert got == model.pop_due_slots(10**6, capacity, 10**7)
    assert rows == model.held_rows


def test_held_rows_survive_arena_growth_and_arena_views_match():
    wheel = TimerWheel(0, PACKET_LEN, 1)
    wheel.insert_batch(*batch([1, 2, 3], start_tag=500))
    got, rows = pop_slots(wheel, 5, 16, 100)
    slots = np.asarray([s for s, _, _ in got], np.int32)
    views = wheel.arena_views(slots)
    for base in range(0, 3 * GROWTH_CHUNK, 1000):  # two arena growths while the rows are held
        wheel.insert_batch(*batch([10**6] * 1000, start_tag=base))
    assert wheel.arena_slots == 4 * GROWTH_CHUNK  # 3 held + 3 * GROWTH_CHUNK queued
    assert [bytes(v) for v in views] == [rows[s] for s in slots.tolist()]
    assert [bytes(v) for v in wheel.arena_views(slots, 2)] == [rows[s] for s in slots[:2].tolist()]
    assert wheel.arena_views(slots, 0) == []
    with pytest.raises(ValueError, match="exceeds the 3 slots"):
        wheel.arena_views(slots, 4)
    wheel.release(slots, 1)
    with pytest.raises(ValueError, match=f"slot {slots[0]} at index 0 is not held"):
        wheel.arena_views(slots)
