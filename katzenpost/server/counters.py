"""Packet counters of the node's pipeline: one block per stage, events and drops by named reason.

Each block has exactly one writing thread (the stage that owns it); any thread may read a
snapshot. Counters only ever grow, so a torn read is at worst one update behind.
"""
import bisect
import enum

import numpy as np


class DropReason(enum.IntEnum):
    """Why a packet left the pipeline without being delivered (the reference server's drop points)."""

    INGRESS_QUEUE_FULL = 0        # workers' input queue at its high-water mark
    UNWRAP_DELAY = 1              # waited longer than Debug.UnwrapDelay before unwrap
    UNWRAP_FAILED = 2             # Sphinx unwrap error (MAC, version, commands...)
    DUPLICATE_COMMAND = 3         # a routing command type repeated
    REPLAY = 4                    # replay tag already in the key's filter
    INVALID_COMMANDS = 5          # a combination of commands no class accepts
    FORWARD_AT_PROVIDER = 6       # forward hop on a packet that must terminate here
    DELAY_TOO_LONG = 7            # NodeDelay above NumMixKeys * epoch period
    DWELL_EXCEEDED = 8            # zero NodeDelay and the packet already waited >= 1 ms
    NO_ROUTE = 9                  # next hop is not a known outgoing destination
    TERMINAL_AT_MIX = 10          # a non-SURB-reply terminal packet reached a mix
    CLIENT_BYPASS = 11            # a client's packet terminates here without crossing the mix
    KAETZCHEN_SURB_REPLY = 12     # a SURB reply addressed to a Kaetzchen endpoint
    SCHEDULER_QUEUE_FULL = 13     # scheduler's input queue at its high-water mark
    LOCAL_QUEUE_FULL = 14         # local-delivery queue (provider/decoy) at its high-water mark
    DELAY_ABOVE_MAX = 15          # delay above the scheduler's current maxDelay
    SCHEDULER_FULL = 16           # random drop: the timer wheel held SchedulerQueueSize packets
    SCHEDULER_LATE = 17           # due more than SchedulerSlack ago
    DISPATCH_QUEUE_FULL = 18      # the I/O thread's due-packet queue at its high-water mark
    DESTINATION_QUEUE_FULL = 19   # the next hop's outgoing queue full (drop-tail)
    SEND_SLACK = 20               # waited longer than SendSlack in the outgoing queue
    DESTINATION_GONE = 21         # the next hop's connection no longer exists
    WORKER_ERROR = 22             # a crypto worker raised while processing the batch
    HALT = 23                     # still queued when the node halted
    NO_MIX_KEYS = 24              # no mix key loaded for the current epoch


class Event(enum.IntEnum):
    """Packets that passed a stage."""

    RECEIVED = 0            # accepted by the ingress batcher
    BATCHES_TO_WORKERS = 1
    UNWRAPPED = 2           # unwrap succeeded
    FORWARD = 3             # classified forward and handed to the scheduler
    TO_USER = 4
    UNRELIABLE_TO_USER = 5
    SURB_REPLY = 6
    KAETZCHEN = 7
    DECOY_SURB_REPLY = 8    # SURB reply at a mix, handed to decoy
    SCHEDULED = 9           # inserted into the timer wheel
    DUE = 10                # popped from the wheel and handed to the I/O thread
    ENQUEUED_OUT = 11       # put on a destination's outgoing queue
    SENT = 12               # handed to a destination's sender
    LOCAL_DELIVERED = 13    # handed to the local-delivery handler (provider/decoy)
    WORKER_EXCEPTIONS = 14  # count of exceptions (not packets)
    DEQUEUED = 15           # taken off the queue by a crypto worker (the I/O thread reads this to
                            # bound packets in flight to the workers)


DROP_SLOTS = 32      # room for every DropReason; `_core.classify` adds into this array directly

# Upper bounds (ms) of the dispatch-delay buckets, log-spaced (1-2-5); an implicit +Inf follows.
DISPATCH_DELAY_BOUNDS_MS = (0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
_SMALL_BATCH = 8     # up to this many packets a batch, the histogram skips numpy (measured faster)


class StageCounters:
    """Event and drop counters of one stage; written only by the thread that runs the stage."""

    def __init__(self, stage):
        self.stage = stage
        self.events = [0] * len(Event)      # a list: cheaper per update than numpy scalars
        self.drops = np.zeros(DROP_SLOTS, dtype=np.int64)

    def count(self, event, n=1):
        self.events[event] += n

    def drop(self, reason, n=1):
        self.drops[reason] += n


class LatencyHistogram:
    """Fixed-bucket histogram filled one batch at a time (a numpy pass, no per-packet Python);
    one writing thread, like the stage blocks."""

    def __init__(self, bounds_ms=DISPATCH_DELAY_BOUNDS_MS):
        self.bounds_ms = np.asarray(bounds_ms, dtype=np.float64)
        self._bounds = self.bounds_ms.tolist()
        self.counts = np.zeros(len(self.bounds_ms) + 1, dtype=np.int64)    # last: above every bound
        self.sum_ms = 0.0

    def observe_deadlines(self, now_ns, deadlines, unit_ns=1_000_000):
        """Count how long after their deadline (int64 monotonic, in units of `unit_ns`: ms by
        default, the scheduler's are us) packets left at `now_ns`."""
        n = len(deadlines)
        scale = unit_ns / 1e6
        if n <= _SMALL_BATCH:
            # Light load sends batches of one or two: a few scalar steps beat four numpy calls.
            now_ms = now_ns / 1e6
            for deadline in deadlines.tolist():
                late = max(now_ms - deadline * scale, 0.0)
                self.counts[bisect.bisect_left(self._bounds, late)] += 1
                self.sum_ms += late
            return
        late_ms = np.maximum(now_ns / 1e6 - deadlines * scale, 0.0)
        # side="left": a value equal to a bound belongs to that bound's bucket (Prometheus `le`).
        self.counts += np.bincount(np.searchsorted(self.bounds_ms, late_ms, side="left"),
                                   minlength=len(self.counts))
        self.sum_ms += float(late_ms.sum())

    def snapshot(self):
        """{'bounds_ms': (...), 'counts': (per bucket, not cumulative; one more than bounds), 'sum_ms'}"""
        counts = self.counts.copy()
        return {"bounds_ms": tuple(float(b) for b in self.bounds_ms),
                "counts": tuple(int(c) for c in counts), "sum_ms": self.sum_ms}


class PipelineCounters:
    """All stage blocks of one pipeline; readers take snapshots, never write."""

    def __init__(self):
        self._stages = {}
        # Deadline to hand-over to the outgoing queue, written by the I/O thread.
        self.dispatch_delay = LatencyHistogram()

    def stage(self, name):
        """The block of stage `name` (created once, by the pipeline before threads start)."""
        if name not in self._stages:
            self._stages[name] = StageCounters(name)
        return self._stages[name]

    def snapshot(self):
        """{'events': {name: n}, 'drops': {reason: n}, 'stages': {stage: {...}}} summed over stages."""
        events = np.zeros(len(Event), dtype=np.int64)
        drops = np.zeros(DROP_SLOTS, dtype=np.int64)
        stages = {}
        for name, block in list(self._stages.items()):
            ev, dr = np.array(block.events, dtype=np.int64), block.drops.copy()
            events += ev
            drops += dr
            stages[name] = {
                "events": {e.name.lower(): int(ev[e]) for e in Event if ev[e]},
                "drops": {r.name.lower(): int(dr[r]) for r in DropReason if dr[r]},
            }
        return {
            "events": {e.name.lower(): int(events[e]) for e in Event},
            "drops": {r.name.lower(): int(drops[r]) for r in DropReason},
            "stages": stages,
        }

    def total_dropped(self):
        return int(sum(int(b.drops.sum()) for b in list(self._stages.values())))

    def event_total(self, event):
        return int(sum(int(b.events[event]) for b in list(self._stages.values())))
