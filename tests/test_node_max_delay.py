"""The scheduler's maxDelay check (MuMaxDelay from the document): a delay equal to it is kept,
a longer one dropped as delay_above_max, whatever the sub-microsecond phase of the clock."""
import numpy as np
import pytest

from katzenpost._core.wheel import TimerWheel
from katzenpost.server import scheduler
from katzenpost.server.counters import PipelineCounters
from katzenpost.server.scheduler import WheelStage
from katzenpost.server.workers import MS, PACKET_LENGTH, US

MAX_DELAY_MS = 50
CAP_MS = 3 * 60 * 1000


def stage():
    counters = PipelineCounters()
    wheel = TimerWheel(0, PACKET_LENGTH, 7)
    s = WheelStage(wheel=wheel, counters=counters.stage("scheduler"), max_burst=64, slack_ms=10,
                   out_capacity=64, max_delay_cap_ms=CAP_MS)
    s.set_max_delay(MAX_DELAY_MS)
    return s, counters


@pytest.mark.parametrize("phase_ns", [0, 1, US // 2, US - 1, MS // 2])
@pytest.mark.parametrize("delay_us, kept", [((MAX_DELAY_MS - 1) * 1000, True), (MAX_DELAY_MS * 1000, True),
                                            (MAX_DELAY_MS * 1000 + 1, False),
                                            ((MAX_DELAY_MS + 1) * 1000, False)])
def test_delay_equal_to_max_delay_is_kept(monkeypatch, phase_ns, delay_us, kept):
    now_ns = 1_000_000 * MS + phase_ns
    monkeypatch.setattr(scheduler.time, "monotonic_ns", lambda: now_ns)
    s, counters = stage()
    # The deadline as the workers and Pipeline.schedule compute it: now rounded up, plus the delay.
    deadline = np.array([(now_ns + US - 1) // US + delay_us], np.int64)
    s._insert(deadline, np.zeros(1, np.int32), np.zeros((1, PACKET_LENGTH), np.uint8))
    assert len(s.wheel) == (1 if kept else 0)
    assert counters.snapshot()["drops"]["delay_above_max"] == (0 if kept else 1)
