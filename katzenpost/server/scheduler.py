"""The scheduler: holds forward packets in the timer wheel until their deadline, then hands due
packets on in bursts. `WheelStage` is that work; the pipeline runs it on the I/O thread (default)
or in `SchedulerThread`, which sleeps in a zmq poll until the next deadline or input.

It never blocks on a full queue (drops are counted) and touches no state of other threads.
"""
import logging
import threading
import time

import numpy as np
import zmq

from katzenpost.server.control import ControlChannel, ControlledThread
from katzenpost.server.counters import DropReason, Event
from katzenpost.server.workers import MAX_NODE_DELAY_MS, MS, PACKET_LENGTH, decode_schedule

log = logging.getLogger("katzenpost.server.scheduler")
# Plain ints: the enum members cost an enum __and__ per readiness check on the hot path.
ZMQ_EVENTS = int(zmq.EVENTS)
ZMQ_POLLIN = int(zmq.POLLIN)

MIN_SLACK_MS = 10                       # the reference raises SchedulerSlack to 10
DEFAULT_MAX_DELAY_MS = MAX_NODE_DELAY_MS    # 3P


def encode_due_meta(dispatch_ns, hop, deadline_ms):
    """Meta frame of a due batch: int64 dispatch time (ns), int32 hops[c], int64 deadlines[c]."""
    return (np.int64(dispatch_ns).tobytes() + np.asarray(hop, np.int32).tobytes()
            + np.asarray(deadline_ms, np.int64).tobytes())


def decode_due(meta, data):
    """(dispatch_ns, hop int32[c], deadline int64[c], packets uint8[c, L]) from a due batch."""
    c, rest = divmod(len(data), PACKET_LENGTH)
    if rest or len(meta) != 8 + 12 * c:
        raise ValueError(f"scheduler: malformed due batch ({len(meta)} meta / {len(data)} data bytes)")
    dispatch_ns = int(np.frombuffer(meta, dtype=np.int64, count=1)[0])
    hop = np.frombuffer(meta, dtype=np.int32, count=c, offset=8)
    deadline = np.frombuffer(meta, dtype=np.int64, count=c, offset=8 + 4 * c)
    packets = np.frombuffer(data, dtype=np.uint8).reshape(c, PACKET_LENGTH)
    return dispatch_ns, hop, deadline, packets


def clamp_max_delay(mu_max_delay_ms, cap_ms=DEFAULT_MAX_DELAY_MS):
    """maxDelay as the reference scheduler computes it: MuMaxDelay, unless 0 or above 3P (cap_ms), then 3P."""
    if mu_max_delay_ms <= 0 or mu_max_delay_ms > cap_ms:
        return cap_ms
    return int(mu_max_delay_ms)


def now_ms():
    return time.monotonic_ns() // MS


def now_ms_rounded_up():
    """Now as deadlines are computed (rounded up to the millisecond): ``deadline - this`` is
    the delay a packet was given, never one millisecond more."""
    return (time.monotonic_ns() + MS - 1) // MS


class WheelStage:
    """The scheduler's work around `_core.wheel.TimerWheel`, for whichever thread owns it: batch
    insert with the maxDelay check, due-packet pops in SchedulerMaxBurst bursts, drop counting."""

    def __init__(self, *, wheel, counters, max_burst, slack_ms, out_capacity,
                 max_delay_cap_ms=DEFAULT_MAX_DELAY_MS):
        if max_burst < 1:
            raise ValueError(f"scheduler: SchedulerMaxBurst must be >= 1, got {max_burst}")
        self.wheel = wheel
        self._counters = counters
        self._max_burst = max_burst
        self._slack_ms = max(MIN_SLACK_MS, int(slack_ms))
        self._max_delay_cap_ms = max_delay_cap_ms            # 3P
        self.max_delay_ms = max_delay_cap_ms
        self.out_packets = np.zeros((out_capacity, PACKET_LENGTH), dtype=np.uint8)
        self.out_hop = np.zeros(out_capacity, dtype=np.int32)
        self.out_deadline = np.zeros(out_capacity, dtype=np.int64)
        self._late_seen = 0

    def set_max_delay(self, mu_max_delay_ms):
        self.max_delay_ms = clamp_max_delay(mu_max_delay_ms, self._max_delay_cap_ms)

    def insert_message(self, frame):
        """Insert one worker batch (a single-frame message); failures are logged and counted."""
        try:
            self._insert(*decode_schedule(frame.buffer))
        except Exception:
            log.exception("scheduler: batch insert failed")
            self._counters.count(Event.WORKER_EXCEPTIONS)

    def _insert(self, deadline, hop, packets):
        # Workers already drop NodeDelay > 3P, so only a smaller (PKI) maxDelay needs the check.
        # The reference compares the (dwell-adjusted) delay with maxDelay. Deadlines are rounded
        # up to the millisecond, so now is too: against a rounded-down now, a delay exactly
        # equal to maxDelay would look 1 ms longer and be dropped.
        if (self.max_delay_ms < self._max_delay_cap_ms
                and int(deadline.max()) - (now := now_ms_rounded_up()) > self.max_delay_ms):
            too_far = (deadline - now) > self.max_delay_ms
            self._counters.drop(DropReason.DELAY_ABOVE_MAX, int(too_far.sum()))
            keep = ~too_far
            deadline, hop, packets = deadline[keep], hop[keep], np.ascontiguousarray(packets[keep])
        n = len(deadline)
        if n == 0:
            return
        dropped = self.wheel.insert_batch(deadline, hop, packets, n)
        self._counters.count(Event.SCHEDULED, n)
        if dropped:
            self._counters.drop(DropReason.SCHEDULER_FULL, int(dropped))

    def pop_due(self, input_pending=None):
        """Pop due packets into out_* in bursts; (count, more_due). Stops early for new input."""
        capacity = len(self.out_hop)
        total = 0
        more_due = False
        while total < capacity:
            burst = min(self._max_burst, capacity - total)
            got = self.wheel.pop_due(now_ms(), burst, self._slack_ms, self.out_packets[total:],
                                     self.out_hop[total:], self.out_deadline[total:])
            total += got
            if got < burst:
                break
            if input_pending is not None and input_pending():
                more_due = True          # let new input in before the next burst
                break
        else:
            more_due = True
        self.count_late()
        if total:
            self._counters.count(Event.DUE, total)
        return total, more_due

    def next_deadline(self):
        return self.wheel.next_deadline()

    def count_late(self):
        late = int(self.wheel.dropped_late)
        if late != self._late_seen:
            self._counters.drop(DropReason.SCHEDULER_LATE, late - self._late_seen)
            self._late_seen = late

    def count_halted(self):
        self.count_late()
        remaining = len(self.wheel)
        if remaining:
            log.info("scheduler: %d packets still queued at halt are dropped", remaining)
            self._counters.drop(DropReason.HALT, remaining)


class SchedulerThread(ControlledThread):
    """The single scheduler thread: a WheelStage driven by a zmq poll on input and deadlines."""

    def __init__(self, *, context, endpoints, counters, wheel, max_burst, slack_ms, hwm, out_capacity,
                 max_delay_cap_ms=DEFAULT_MAX_DELAY_MS):
        super().__init__(name="katzenpost-scheduler", daemon=True)
        self._stage = WheelStage(wheel=wheel, counters=counters, max_burst=max_burst, slack_ms=slack_ms,
                                 out_capacity=out_capacity, max_delay_cap_ms=max_delay_cap_ms)
        self._ctx = context
        self._endpoints = endpoints
        self._counters = counters
        self._hwm = hwm
        self._control = ControlChannel(context, f"{endpoints.sched}-ctl")
        self.bound = threading.Event()

    # --- thread body
    def run(self):
        sockets = []
        try:
            pull = self._ctx.socket(zmq.PULL)
            sockets.append(pull)
            pull.setsockopt(zmq.LINGER, 0)
            pull.setsockopt(zmq.RCVHWM, self._hwm)
            pull.bind(self._endpoints.sched)
            out = self._ctx.socket(zmq.PUSH)
            sockets.append(out)
            out.setsockopt(zmq.LINGER, 0)
            out.setsockopt(zmq.SNDHWM, self._hwm)
            out.connect(self._endpoints.out)
            ctl = self._ctx.socket(zmq.PAIR)
            sockets.append(ctl)
            ctl.setsockopt(zmq.LINGER, 0)
            ctl.connect(self._control.address)
            self.bound.set()
            self._loop(pull, out, ctl)
        except Exception:
            log.exception("scheduler thread failed; it stops")
            self._counters.count(Event.WORKER_EXCEPTIONS)
        finally:
            self.bound.set()
            for sock in sockets:
                sock.close(linger=0)

    def _loop(self, pull, out, ctl):
        poller = zmq.Poller()
        poller.register(pull, zmq.POLLIN)
        poller.register(ctl, zmq.POLLIN)
        more_due = False

        def input_pending():
            return bool(pull.getsockopt(ZMQ_EVENTS) & ZMQ_POLLIN)

        while True:
            timeout_ms, remaining_ns = (0, 0) if more_due else self._poll_timeout()
            ready = dict(poller.poll(timeout_ms))
            if not ready and 0 < remaining_ns < MS:
                # Under a millisecond to go: poll's whole-millisecond timeout would overshoot.
                time.sleep(remaining_ns / 1e9)
            if ctl in ready:
                while ctl.poll(0):
                    ctl.recv()
                if self._apply_control():
                    self._drain_input(pull, limit=None)
                    self._stage.count_halted()
                    return
            if pull in ready:
                self._drain_input(pull, limit=64)
            total, more_due = self._stage.pop_due(input_pending)
            if total:
                self._send_due(out, total)

    def _poll_timeout(self):
        """(poll timeout in whole ms or None, ns until the next deadline or 0)."""
        deadline = self._stage.next_deadline()
        if deadline < 0:
            return None, 0
        remaining_ns = deadline * MS - time.monotonic_ns()
        if remaining_ns <= 0:
            return 0, 0
        return remaining_ns // MS, remaining_ns

    def _apply_control(self):
        return self._control.apply({"max_delay": self._stage.set_max_delay}, "scheduler")

    def _drain_input(self, pull, limit):
        count = 0
        while limit is None or count < limit:
            try:
                frame = pull.recv(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            count += 1
            self._stage.insert_message(frame)

    def _send_due(self, out, total):
        stage = self._stage
        frames = [encode_due_meta(time.monotonic_ns(), stage.out_hop[:total], stage.out_deadline[:total]),
                  stage.out_packets[:total]]           # send_multipart copies it (the buffer is reused)
        try:
            out.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            self._counters.drop(DropReason.DISPATCH_QUEUE_FULL, total)
