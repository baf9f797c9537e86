"""Epoch time: the reference's 20-minute epochs counted from 2017-06-01 00:00 UTC.

Pure arithmetic on wall-clock seconds; no I/O. A shorter period exists only for test networks
(every node and the authority of one network must use the same period).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from katzenpost.rules import DEFAULT_PERIOD, MIN_TEST_PERIOD

# 2017-06-01T00:00:00Z as Unix seconds (core/epochtime.Epoch).
EPOCH_ZERO = 1496275200


class EpochTimeError(ValueError):
    """A time before epoch 0 or an invalid period."""


@dataclass(frozen=True)
class EpochClock:
    """Epoch arithmetic for one period length (seconds). `clock` returns Unix seconds."""

    period: int = DEFAULT_PERIOD
    clock: object = time.time

    def __post_init__(self) -> None:
        if not isinstance(self.period, int) or isinstance(self.period, bool):
            raise EpochTimeError(f"epochtime: period must be an integer, got {self.period!r}")
        if self.period != DEFAULT_PERIOD and self.period < MIN_TEST_PERIOD:
            raise EpochTimeError(
                f"epochtime: period must be >= {MIN_TEST_PERIOD} s, got {self.period}")

    @property
    def is_warped(self) -> bool:
        """True when this clock runs a test network's shortened period."""
        return self.period != DEFAULT_PERIOD

    def unix_now(self) -> float:
        return float(self.clock())

    def epoch_at(self, unix_seconds: float) -> tuple[int, float, float]:
        """(epoch, elapsed, till) for a Unix time; the reference panics before epoch 0."""
        delta = unix_seconds - EPOCH_ZERO
        if delta < 0:
            raise EpochTimeError(f"epochtime: time {unix_seconds} is before epoch 0")
        epoch = int(delta // self.period)
        elapsed = delta - epoch * self.period
        return epoch, elapsed, self.period - elapsed

    def now(self) -> tuple[int, float, float]:
        """(current epoch, seconds elapsed in it, seconds till the next one)."""
        return self.epoch_at(self.unix_now())

    def current(self) -> int:
        return self.now()[0]

    def till_next(self) -> float:
        return self.now()[2]

    def elapsed(self) -> float:
        return self.now()[1]

    def epoch_start(self, epoch: int) -> int:
        """Unix seconds at which `epoch` begins."""
        if epoch < 0:
            raise EpochTimeError(f"epochtime: negative epoch {epoch}")
        return EPOCH_ZERO + epoch * self.period

    def is_in_epoch(self, epoch: int, unix_seconds: float) -> bool:
        start = self.epoch_start(epoch)
        return start <= unix_seconds < start + self.period

    # The reference's timing rules, as fractions of the period so test networks scale.
    def document_lifetime(self) -> int:
        """Certificate lifetime of descriptors and documents: 3P + 10 min (scaled when warped)."""
        return 3 * self.period + (600 if not self.is_warped else self.period // 2)

    def worker_tick(self) -> float:
        """PKI worker and authority tick: 60 s, or P/24 (>= 0.5 s) on a test network."""
        if not self.is_warped:
            return 60.0
        return max(0.5, self.period / 24)

    def early_send_window(self) -> float:
        """A peer only in the next document may send to us this long before the rollover."""
        return 120.0 if not self.is_warped else self.period / 10


DEFAULT_CLOCK = EpochClock()


def now() -> tuple[int, float, float]:
    """(epoch, elapsed, till) with the reference period."""
    return DEFAULT_CLOCK.now()


def till_next() -> float:
    return DEFAULT_CLOCK.till_next()


def epoch_at(unix_seconds: float) -> tuple[int, float, float]:
    return DEFAULT_CLOCK.epoch_at(unix_seconds)
