"""Epoch time: the reference's base and period, conversions, and the test-network period."""
import time

import pytest

from katzenpost.pki import epochtime
from katzenpost.pki.epochtime import EPOCH_ZERO, EpochClock, EpochTimeError


def test_epoch_zero_is_2017_06_01_utc():
    assert time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(EPOCH_ZERO)) == "2017-06-01 00:00:00"
    assert epochtime.DEFAULT_PERIOD == 1200


def test_epoch_elapsed_and_till_at_known_instants():
    clock = EpochClock()
    assert clock.epoch_at(EPOCH_ZERO) == (0, 0, 1200)
    assert clock.epoch_at(EPOCH_ZERO + 1199.5) == (0, 1199.5, 0.5)
    assert clock.epoch_at(EPOCH_ZERO + 1200 * 123456 + 300) == (123456, 300, 900)


def test_now_agrees_with_the_wall_clock():
    epoch, elapsed, till = epochtime.now()
    assert abs(elapsed + till - 1200) < 1e-6
    assert epoch == int((time.time() - EPOCH_ZERO) // 1200) or elapsed < 1
    assert 0 < epochtime.till_next() <= 1200


def test_is_in_epoch_for_now_and_three_hours_either_side():
    clock = EpochClock()
    epoch, _, _ = clock.now()
    now = time.time()
    assert clock.is_in_epoch(epoch, now)
    assert not clock.is_in_epoch(epoch, now + 3 * 3600)
    assert not clock.is_in_epoch(epoch, now - 3 * 3600)
    assert clock.epoch_start(epoch) <= now < clock.epoch_start(epoch + 1)


def test_time_before_epoch_zero_is_an_error():
    with pytest.raises(EpochTimeError):
        EpochClock().epoch_at(EPOCH_ZERO - 1)


def test_injected_clock_drives_now():
    clock = EpochClock(clock=lambda: EPOCH_ZERO + 1200 * 7 + 60)
    assert clock.now() == (7, 60, 1140) and clock.current() == 7 and clock.till_next() == 1140


def test_test_network_period_scales_the_timing_rules():
    fast = EpochClock(period=20)
    assert fast.is_warped and fast.epoch_at(EPOCH_ZERO + 45)[0] == 2
    assert fast.document_lifetime() == 70 and fast.early_send_window() == 2
    assert 0.5 <= fast.worker_tick() < 20
    normal = EpochClock()
    assert normal.document_lifetime() == 3 * 1200 + 600
    assert normal.worker_tick() == 60 and normal.early_send_window() == 120


@pytest.mark.parametrize("period", [0, 5, -20, 2.5])
def test_invalid_periods_are_refused(period):
    with pytest.raises(EpochTimeError):
        EpochClock(period=period)
