"""The inline wheel's DeadlineTimer (a timerfd the event loop watches, microsecond deadlines):
never fires before its deadline, re-arms only for an earlier one, can be disarmed, spaces its
firings by min_interval_us, falls back to the loop's own timers, and closes its descriptor.
Upper bounds on lateness are generous (a shared CI machine): only "never early" is exact."""
import asyncio
import os

import pytest

from katzenpost.server import scheduler
from katzenpost.server.scheduler import DeadlineTimer, now_us

LATE_BOUND_US = 2_000_000          # a hang guard, not a performance assertion
DENSE_US = 1_000_000


def run(body, loop_kind):
    factory = None
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(asyncio.wait_for(body(), 20))


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_kind(request):
    return request.param


@pytest.fixture(params=["timerfd", "call_at"])
def timer_kind(request, monkeypatch):
    if request.param == "call_at":
        monkeypatch.setattr(scheduler, "_TIMERFD", None)
    elif scheduler._TIMERFD is None:
        pytest.skip("no timerfd on this system")
    return request.param


def make_timer(loop, fired, min_interval_us=0, **options):
    return DeadlineTimer(loop, lambda: fired.append(now_us()), min_interval_us=min_interval_us, **options)


def with_timer(loop_kind, scenario, **options):
    """Run `await scenario(timer, fired)` on a fresh loop with a timer that records its
    firings (now_us() each) in `fired`; the timer is closed whatever happens."""
    async def body():
        fired = []
        timer = make_timer(asyncio.get_running_loop(), fired, **options)
        try:
            await scenario(timer, fired)
        finally:
            timer.close()
    run(body, loop_kind)


async def wait_fired(fired, count, timeout=5.0):
    for _ in range(int(timeout / 0.001)):
        if len(fired) >= count:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"fired {len(fired)} times, expected {count}")


def fired_at(timer):
    """When the timer last fired, by its own clock reading: the spacing is counted from there.
    (The callback's now_us() comes later; a thread preempted between the two, as on a busy
    machine, once made a firing look 1.3 ms early.)"""
    first = timer._last_fired_us
    assert first > 0
    return first


def test_fires_once_never_before_its_deadline(loop_kind, timer_kind):
    async def scenario(timer, fired):
        assert timer.precise == (timer_kind == "timerfd")
        for delay_us in (300, 1_700, 0, -50):
            deadline = now_us() + delay_us
            timer.arm(deadline)
            await wait_fired(fired, 1)
            assert deadline <= fired[0] < deadline + LATE_BOUND_US
            await asyncio.sleep(0.01)
            assert len(fired) == 1 and timer.when_us is None       # once per arm
            fired.clear()
    with_timer(loop_kind, scenario)


def test_an_earlier_deadline_replaces_a_later_one_but_not_the_reverse(loop_kind, timer_kind):
    async def scenario(timer, fired):
        far = now_us() + 10_000_000
        timer.arm(far)
        near = now_us() + 2_000
        timer.arm(near)
        timer.arm(far)                           # later than the armed one: ignored
        assert timer.when_us == near
        await wait_fired(fired, 1)
        assert near <= fired[0] < far
    with_timer(loop_kind, scenario)


def test_disarm_and_close_stop_it(loop_kind, timer_kind):
    async def scenario(timer, fired):
        timer.arm(now_us() + 1_000)
        timer.disarm()
        await asyncio.sleep(0.02)
        assert fired == [] and timer.when_us is None
        timer.arm(now_us() + 1_000)              # usable again after a disarm
        await wait_fired(fired, 1)
        timer.arm(now_us() + 1_000)
        timer.close()
        await asyncio.sleep(0.02)
        assert len(fired) == 1
    with_timer(loop_kind, scenario)


def test_firings_are_spaced_by_the_minimum_interval(loop_kind, timer_kind):
    async def scenario(timer, fired):
        timer.arm(now_us())
        await wait_fired(fired, 1)
        first = fired_at(timer)
        timer.arm(now_us())                      # due at once, but 20 ms after the last firing
        await wait_fired(fired, 2)
        assert fired[1] - first >= 20_000
    with_timer(loop_kind, scenario, min_interval_us=20_000)


def test_close_releases_the_descriptor():
    if scheduler._TIMERFD is None:
        pytest.skip("no timerfd on this system")

    async def body():
        loop = asyncio.get_running_loop()
        before = set(os.listdir("/proc/self/fd"))
        timers = [make_timer(loop, []) for _ in range(20)]
        for timer in timers:
            timer.arm(now_us() + 60_000_000)
        assert len(set(os.listdir("/proc/self/fd")) - before) >= 20
        for timer in timers:
            timer.close()
        assert set(os.listdir("/proc/self/fd")) - before == set()
    run(body, "asyncio")


def test_a_dense_pass_spaces_the_next_firing_by_the_dense_interval(loop_kind, timer_kind):
    async def scenario(timer, fired):
        timer.arm(now_us())
        await wait_fired(fired, 1)
        first = fired_at(timer)
        timer.note_pass(scheduler.DENSE_PASS_PACKETS)            # many packets were due
        timer.arm(now_us())
        await wait_fired(fired, 2)
        assert fired[1] - first >= DENSE_US
        timer.note_pass(1)                                       # sparse again: no spacing
        before = now_us()
        timer.arm(before)
        await wait_fired(fired, 3)
        # A whole second of margin: only a dense spacing wrongly kept, not a busy machine's
        # stall, can push the third firing that far.
        assert before <= fired[2] < fired[1] + DENSE_US
    with_timer(loop_kind, scenario, dense_interval_us=DENSE_US)
