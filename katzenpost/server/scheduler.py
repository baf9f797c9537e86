"""The scheduler: holds forward packets in the timer wheel until their deadline, then hands due
packets on in bursts. `WheelStage` is that work; the pipeline runs it on the I/O thread (default)
or in `SchedulerThread`, which sleeps in a zmq poll until the next deadline or input.

Deadlines are monotonic microseconds (rounded up, so a packet never leaves early): in whole
milliseconds the rounding and the event loop's millisecond timers added 0-2 ms to every packet.
On the I/O thread a Linux timerfd (`DeadlineTimer`) wakes the loop at the deadline.

It never blocks on a full queue (drops are counted) and touches no state of other threads.
"""
import ctypes
import logging
import os
import threading
import time

import numpy as np
import zmq

from katzenpost.server.control import ControlChannel, ControlledThread
from katzenpost.server.counters import DropReason, Event
from katzenpost.server.workers import MAX_NODE_DELAY_MS, MS, PACKET_LENGTH, US, decode_schedule

log = logging.getLogger("katzenpost.server.scheduler")
# Plain ints: the enum members cost an enum __and__ per readiness check on the hot path.
ZMQ_EVENTS = int(zmq.EVENTS)
ZMQ_POLLIN = int(zmq.POLLIN)

MIN_SLACK_MS = 10                       # the reference raises SchedulerSlack to 10
DEFAULT_MAX_DELAY_MS = MAX_NODE_DELAY_MS    # 3P


def encode_due_meta(dispatch_ns, hop, deadline_us):
    """Meta frame of a due batch: int64 dispatch time (ns), int32 hops[c], int64 deadlines[c] (us)."""
    return (np.int64(dispatch_ns).tobytes() + np.asarray(hop, np.int32).tobytes()
            + np.asarray(deadline_us, np.int64).tobytes())


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


def now_us():
    return time.monotonic_ns() // US


def now_us_rounded_up():
    """Now as deadlines are computed (rounded up to the microsecond): ``deadline - this`` is
    the delay a packet was given, never one microsecond more."""
    return (time.monotonic_ns() + US - 1) // US


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


# Wheel passes on the I/O thread start at least this far apart, so due packets go out in
# batches (one send per destination a pass): 250 us while passes find few packets, so a lone
# packet leaves on time; 1 ms after a pass found DENSE_PASS_PACKETS or more (measured at 12,000
# packets/s: with 250 us, 4x the passes cost the I/O thread ~3 us more a packet, mostly writes).
MIN_TIMER_INTERVAL_US = 250
DENSE_TIMER_INTERVAL_US = 1000
DENSE_PASS_PACKETS = 4

_CLOCK_MONOTONIC = 1            # <time.h>; the clock of time.monotonic_ns()
_TFD_TIMER_ABSTIME = 1          # <sys/timerfd.h>
_NS_PER_S = 1_000_000_000


def _timerfd_calls():
    """(timerfd_create, timerfd_settime) from the C library, or None where there are none."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        create, settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None
    create.argtypes, create.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
    settime.restype = ctypes.c_int
    return create, settime


_TIMERFD = _timerfd_calls()


class DeadlineTimer:
    """Calls `callback()` on the event loop once a deadline (monotonic us) has passed.

    asyncio's and uvloop's timers work in whole milliseconds (measured on this code's target
    machine: a call_at fires 0.6 ms late at the median and 1.07 ms at p99), more than the whole
    added-latency budget. So the loop watches a Linux timerfd instead, armed at the absolute
    deadline: it wakes within the kernel's timer slack (50 us by default). Where there is no
    timerfd it falls back to `loop.call_at`. One arm is a system call (~2 us), made per batch
    of packets, never per packet. It fires at most once per `min_interval_us` (a deadline
    sooner than that after the last firing waits for it), or per `dense_interval_us` after the
    owner reported a dense pass (`note_pass`), so a busy wheel is emptied in batches rather
    than one wake-up per packet. Owned by the loop's thread.
    """

    def __init__(self, loop, callback, min_interval_us=MIN_TIMER_INTERVAL_US,
                 dense_interval_us=DENSE_TIMER_INTERVAL_US):
        self._loop = loop
        self._callback = callback
        self._sparse_interval_us = min_interval_us
        self._dense_interval_us = max(dense_interval_us, min_interval_us)
        self._min_interval_us = min_interval_us
        self._last_fired_us = 0
        self.when_us = None             # the armed deadline, None when idle
        self._handle = None             # call_at fallback
        self._fd = -1
        if _TIMERFD is not None:
            fd = _TIMERFD[0](_CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0:
                self._fd = fd
                self._spec = _Itimerspec()
                self._spec_ref = ctypes.byref(self._spec)
                loop.add_reader(fd, self._expired)
            else:
                log.info("scheduler: no timerfd (errno %d); the wheel uses the loop's millisecond timers",
                         ctypes.get_errno())

    def note_pass(self, packets):
        """How many packets the pass this timer started found due: DENSE_PASS_PACKETS or more
        spaces the next firing by dense_interval_us, fewer by min_interval_us."""
        self._min_interval_us = (self._dense_interval_us if packets >= DENSE_PASS_PACKETS
                                 else self._sparse_interval_us)

    @property
    def precise(self):
        """True when the timerfd is in use (sub-millisecond wake-ups)."""
        return self._fd >= 0

    def arm(self, deadline_us):
        """Fire at `deadline_us` (or min_interval_us after the last firing, if later) unless
        already armed for that time or earlier."""
        # (A zero it_value would disarm a timerfd: 1 us is the earliest time there is.)
        deadline_us = max(deadline_us, self._last_fired_us + self._min_interval_us, 1)
        if self.when_us is not None and self.when_us <= deadline_us:
            return
        self.when_us = deadline_us
        if self._fd >= 0:
            value = self._spec.it_value
            value.tv_sec, value.tv_nsec = divmod(deadline_us * US, _NS_PER_S)
            if _TIMERFD[1](self._fd, _TFD_TIMER_ABSTIME, self._spec_ref, None) == 0:
                return
            log.error("scheduler: timerfd_settime failed (errno %d); using the loop's timers",
                      ctypes.get_errno())
            self._close_fd()
        self._call_at(deadline_us)

    def _call_at(self, deadline_us):
        if self._handle is not None:
            self._handle.cancel()
        # +1 us: the float loop clock must not round below the deadline.
        self._handle = self._loop.call_at(deadline_us / 1e6 + 1e-6, self._fire)

    def disarm(self):
        """Forget the armed deadline (the callback will not run for it)."""
        self.when_us = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._fd >= 0:
            self._spec.it_value.tv_sec = self._spec.it_value.tv_nsec = 0
            _TIMERFD[1](self._fd, 0, self._spec_ref, None)

    def close(self):
        self.disarm()
        self._close_fd()

    def _close_fd(self):
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    def _expired(self):
        try:
            os.read(self._fd, 8)               # the expiry count; reading clears the readiness
        except BlockingIOError:
            return                             # disarmed or re-armed since it became readable
        self._fire()

    def _fire(self):
        self._handle = None
        if self._fd < 0 and self.when_us is not None and now_us() < self.when_us:
            # uvloop's clock counts whole milliseconds: its timers can run up to 1 ms early.
            self._call_at(self.when_us)
            return
        self.when_us = None
        self._last_fired_us = time.monotonic_ns() // US
        self._callback()


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
        self._slack_us = max(MIN_SLACK_MS, int(slack_ms)) * (MS // US)
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
        # up to the microsecond, so now is too: against a rounded-down now, a delay exactly
        # equal to maxDelay would look 1 us longer and be dropped.
        max_delay_us = self.max_delay_ms * (MS // US)
        if (self.max_delay_ms < self._max_delay_cap_ms
                and int(deadline.max()) - (now := now_us_rounded_up()) > max_delay_us):
            too_far = (deadline - now) > max_delay_us
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
            got = self.wheel.pop_due(now_us(), burst, self._slack_us, self.out_packets[total:],
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
        """The earliest queued deadline (monotonic us), or -1 when the wheel is empty."""
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
        remaining_ns = deadline * US - time.monotonic_ns()
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
