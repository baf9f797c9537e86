"""Traffic accounting and a paced load generator over `session.Client`.

`TrafficStats` counts, per kind of traffic (a message to a user, a request to a service), what
was sent, what came back (SURB-ACK or reply) and when, and what was declared lost; latency is
from the send to the moment the reply was matched in a retrieval. `run_load` sends at a fixed
rate for a fixed time and then waits, bounded, for the outstanding replies.
"""
from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from katzenpost.client.session import ClientError, Pending, ReplyLost

# Past the end of sending, how much longer than the reply slack the drain may take (a poll
# interval and a retrieval round trip).
DRAIN_MARGIN = 5.0
# Packets are built ahead in batches (the Sphinx core makes eight per X25519 lane pass; a
# batch of 8 costs 0.3 ms a message against 1.1 ms one at a time, 4 give 0.55 ms): at
# most LOOKAHEAD seconds of sending per batch, so a batch's paths and mix keys are those of the
# moment they are sent, and at most MAX_BATCH packets.
LOOKAHEAD = 4.0
MAX_BATCH = 32


def batch_size(rate: float) -> int:
    return max(1, min(MAX_BATCH, int(rate * LOOKAHEAD)))


class Prebuilt:
    """Items (packets) built ahead for a paced sender. `prepare(indices, times)` — the hook
    `run_load` calls — asks `build(indices, unix_times)` for the items of a batch (a list in
    the same order; an entry may be an exception for that item alone, and an exception raised
    by `build` stands for the whole batch); `take(index)` hands one out or raises its error.
    `times` are monotonic send times, converted to Unix time for the paths."""

    def __init__(self, build: Callable[[list[int], list[float]], Awaitable[list]], unix_now=time.time):
        self._build = build
        self._unix_now = unix_now
        self._items: dict[int, object] = {}

    async def prepare(self, indices, times) -> None:
        indices = list(indices)
        offset = self._unix_now() - time.monotonic()
        try:
            items = await self._build(indices, [t + offset for t in times])
        except ClientError as err:
            items = [err] * len(indices)
        self._items.update(zip(indices, items))

    def take(self, index: int):
        item = self._items.pop(index)
        if isinstance(item, Exception):
            raise item
        return item


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class KindStats:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    failed: int = 0          # send errors and replies that did not decrypt or check
    latencies: list[float] = field(default_factory=list)
    completed_at: list[float] = field(default_factory=list)   # clock() of each delivery

    @property
    def pending(self) -> int:
        return self.sent - self.delivered - self.lost - self.failed


class TrafficStats:
    """Counters by kind and in total; `track()` hooks a `Pending` so its outcome is counted."""

    def __init__(self, clock=time.monotonic):
        self.kinds: dict[str, KindStats] = {}
        self.errors: dict[str, int] = {}
        self._clock = clock
        self._outstanding: set[asyncio.Future] = set()

    def kind(self, name: str) -> KindStats:
        return self.kinds.setdefault(name, KindStats())

    def send_failed(self, name: str, error: Exception) -> None:
        entry = self.kind(name)
        entry.sent += 1
        entry.failed += 1
        self._note_error(error)

    def _note_error(self, error: Exception) -> None:
        text = str(error).split(":", 1)[-1].strip()[:80]
        self.errors[text] = self.errors.get(text, 0) + 1

    def track(self, name: str, pending: Pending, check: Callable[[bytes], bool] | None = None) -> None:
        """Count `pending` under `name`; `check(reply body)` False counts it as failed."""
        entry = self.kind(name)
        entry.sent += 1
        self._outstanding.add(pending.result)

        def done(future: asyncio.Future) -> None:
            self._outstanding.discard(future)
            if future.cancelled():
                entry.failed += 1
                return
            error = future.exception()
            if isinstance(error, ReplyLost):
                entry.lost += 1
            elif error is not None:
                entry.failed += 1
                self._note_error(error)
            elif check is not None and not check(future.result().body):
                entry.failed += 1
                self._note_error(ClientError("reply: unexpected content"))
            else:
                now = self._clock()
                entry.delivered += 1
                entry.latencies.append(now - pending.sent)
                entry.completed_at.append(now)
        pending.result.add_done_callback(done)

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    async def wait_outstanding(self, timeout: float) -> bool:
        """Until every tracked reply resolved (True) or `timeout` passed (False)."""
        if self._outstanding:
            await asyncio.wait(set(self._outstanding), timeout=timeout)
        return not self._outstanding

    def total(self) -> KindStats:
        total = KindStats()
        for entry in self.kinds.values():
            total.sent += entry.sent
            total.delivered += entry.delivered
            total.lost += entry.lost
            total.failed += entry.failed
            total.latencies.extend(entry.latencies)
            total.completed_at.extend(entry.completed_at)
        return total

    def delivered_since(self, moment: float) -> int:
        """Replies that came back after `moment` (the clock's time)."""
        return sum(1 for entry in self.kinds.values() for t in entry.completed_at if t > moment)

    def summary(self, name: str | None = None) -> dict:
        entry = self.total() if name is None else self.kind(name)
        latencies = sorted(entry.latencies)
        return {"sent": entry.sent, "delivered": entry.delivered, "lost": entry.lost,
                "failed": entry.failed, "pending": entry.pending,
                "latency_p50": percentile(latencies, 0.50), "latency_p99": percentile(latencies, 0.99),
                "latency_max": latencies[-1] if latencies else None}


async def run_load(send_one: Callable[[int], Awaitable[None]], *, rate: float, duration: float,
                   stats: TrafficStats, reply_slack: float, stop: asyncio.Event | None = None,
                   prepare: Callable[[range, list[float]], Awaitable[None]] | None = None) -> None:
    """Call `send_one(i)` `rate` times a second for `duration` seconds (the schedule does not
    drift: a slow send shortens the next pause), then wait for the outstanding replies, at most
    `reply_slack` + a margin. `stop` ends the sending early. `send_one` tracks what it sends in
    `stats` and raises ClientError (counted by the caller) or returns. `prepare(indices,
    times)`, when given, is awaited before the first send of each batch (`batch_size(rate)`
    sends) with the batch's indices and planned monotonic send times (see `Prebuilt`)."""
    if rate <= 0 or duration <= 0:
        raise ValueError("load: rate and duration must be > 0")
    interval = 1.0 / rate
    start = time.monotonic()
    count = int(rate * duration)
    size = batch_size(rate)
    for index in range(count):
        if stop is not None and stop.is_set():
            break
        if prepare is not None and index % size == 0:
            batch = range(index, min(count, index + size))
            await prepare(batch, [start + i * interval for i in batch])
        await send_one(index)
        pause = start + (index + 1) * interval - time.monotonic()
        if pause > 0:
            if stop is None:
                await asyncio.sleep(pause)
            else:
                try:
                    await asyncio.wait_for(stop.wait(), pause)
                except asyncio.TimeoutError:
                    pass
    await stats.wait_outstanding(reply_slack + DRAIN_MARGIN)
