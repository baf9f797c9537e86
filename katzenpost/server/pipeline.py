"""The node's packet pipeline, I/O side: batches incoming packets to the crypto workers, runs the
timer wheel (or talks to the scheduler thread), puts due packets on per-destination outgoing
queues, hands terminal packets to the local handler, and starts and halts it all.

Runs on the asyncio thread and must never block it: every full queue is a counted drop.
"""
import array
import asyncio
import collections
import dataclasses
import logging
import os
import re
import time

import numpy as np
import zmq

from katzenpost.config import DEBUG_INT_KNOBS
from katzenpost.server.counters import DropReason, Event, PipelineCounters
from katzenpost.server.scheduler import MIN_SLACK_MS, DeadlineTimer, SchedulerThread, WheelStage, decode_due
from katzenpost.server.workers import (
    EPOCH_PERIOD_MS, MS, NUM_MIX_KEYS, PACKET_LENGTH, US, CryptoWorker, EndpointSet, LocalBatch, RouteTable,
    WorkerEndpoints, encode_schedule, ingress_message_size, write_ingress_tail,
)

log = logging.getLogger("katzenpost.server.pipeline")
# Plain ints: the enum members cost an enum __and__ per readiness check on the hot path.
ZMQ_EVENTS = int(zmq.EVENTS)
ZMQ_POLLIN = int(zmq.POLLIN)

# SphinxQueuePackets when the operator did not set it: about UnwrapDelay/2 of unwrap work at the
# rate the start-up self-test measured, within these bounds; the floor alone without a measurement.
IN_FLIGHT_FLOOR, IN_FLIGHT_CEILING = 64, 4096

UNLIMITED = 0         # SchedulerQueueSize <= 0: no bound on the timer wheel, as in Go;
                      # the wheel's arena grows in chunks of 4,096 packets as they arrive


def _knob(name):
    """The default of `[Debug] <name>`: config.DEBUG_INT_KNOBS is the one source of truth."""
    return DEBUG_INT_KNOBS[name].default


@dataclasses.dataclass
class PipelineSettings:
    """Pipeline knobs, named after the config's `[Debug]` fields (README.md), with its defaults."""

    NumSphinxWorkers: int = _knob("NumSphinxWorkers")      # <= 0: CPU count
    SchedulerQueueSize: int = _knob("SchedulerQueueSize")  # <= 0: unlimited (Go); > 0: random drop
    SchedulerMaxBurst: int = _knob("SchedulerMaxBurst")
    SchedulerSlack: int = _knob("SchedulerSlack")          # ms, raised to its minimum
    UnwrapDelay: int = _knob("UnwrapDelay")                # ms
    SendSlack: int = _knob("SendSlack")                    # ms, raised to its minimum
    SphinxBatchSize: int = _knob("SphinxBatchSize")        # packets per batch to the workers
                                                           # (x unwrap cost = latency)
    SphinxBatchWindowUs: int = _knob("SphinxBatchWindowUs")  # 0: flush at each event-loop pass
    SphinxQueueHWM: int = _knob("SphinxQueueHWM")  # batches per worker pipe and side (zmq SNDHWM
                                        # and RCVHWM): counts messages, and light load makes
                                        # 1-packet batches, so keep it roomy; UnwrapDelay bounds
                                        # the wait, this the memory
    SphinxQueuePackets: int = _knob("SphinxQueuePackets")  # packets in flight per worker (sent,
                                        # not yet dequeued): ~ UnwrapDelay/2 of real unwrap work;
                                        # beyond it a FIFO only ages packets into UnwrapDelay drops;
                                        # <= 0: size_in_flight() or IN_FLIGHT_FLOOR
    SchedulerInputHWM: int = _knob("SchedulerInputHWM")  # batches queued towards the scheduler
    DispatchHWM: int = _knob("DispatchHWM")      # due batches towards the I/O thread (thread mode)
    LocalHWM: int = _knob("LocalHWM")            # local-delivery batches towards the I/O thread
    OutgoingQueueSize: int = _knob("OutgoingQueueSize")  # packets per next hop while paused
    DispatchBatchSize: int = _knob("DispatchBatchSize")  # packets per due batch from the scheduler
    EpochPeriod: int = 0                # seconds; <= 0: the 20-minute period (Debug.EpochPeriod)
    SchedulerInline: bool = True        # timer wheel on the I/O thread (measured: less node CPU per
                                        # packet than a scheduler thread); False: its own thread

    @classmethod
    def from_config(cls, debug_section):
        """Settings from a config `Debug` section (any object), read by the TOML names
        (`NumSphinxWorkers`) or their snake_case (`num_sphinx_workers`); absent ones keep defaults."""
        values = {}
        for field in dataclasses.fields(cls):
            for name in (field.name, _snake_case(field.name)):
                value = getattr(debug_section, name, None)
                if value is not None:
                    values[field.name] = value
                    break
        # The config spells the placement as Debug.SchedulerThread (false by default).
        thread = getattr(debug_section, "scheduler_thread", getattr(debug_section, "SchedulerThread", None))
        if thread is not None and "SchedulerInline" not in values:
            values["SchedulerInline"] = not thread
        return cls(**values).normalized()

    def normalized(self):
        """A copy with the config's defaults applied (<= 0 means default) and bounds checked."""
        s = dataclasses.replace(self)
        for field in dataclasses.fields(s):
            value = getattr(s, field.name)
            wants_bool = field.type in (bool, "bool")
            if isinstance(value, bool) != wants_bool or not isinstance(value, int):
                kind = "true or false" if wants_bool else "an integer"
                raise ValueError(f"config: Debug.{field.name} must be {kind}, got {value!r}")
        if s.NumSphinxWorkers <= 0:
            s.NumSphinxWorkers = os.cpu_count() or 1
        if s.SchedulerQueueSize <= 0:
            s.SchedulerQueueSize = UNLIMITED
        if s.SchedulerMaxBurst <= 0:
            s.SchedulerMaxBurst = _knob("SchedulerMaxBurst")
        s.SchedulerSlack = max(MIN_SLACK_MS, DEBUG_INT_KNOBS["SchedulerSlack"].minimum,
                               s.SchedulerSlack)
        s.SendSlack = max(DEBUG_INT_KNOBS["SendSlack"].minimum, s.SendSlack)
        if s.UnwrapDelay <= 0:
            s.UnwrapDelay = _knob("UnwrapDelay")
        if s.EpochPeriod <= 0:
            s.EpochPeriod = EPOCH_PERIOD_MS // 1000
        if s.SphinxQueuePackets <= 0:       # no self-test measured it (the node sizes it first)
            s.SphinxQueuePackets = IN_FLIGHT_FLOOR
        for name in ("SphinxBatchSize", "SphinxQueueHWM", "SphinxQueuePackets", "SchedulerInputHWM",
                     "DispatchHWM", "LocalHWM", "OutgoingQueueSize", "DispatchBatchSize"):
            if getattr(s, name) < 1:
                raise ValueError(f"config: Debug.{name} must be >= 1, got {getattr(s, name)}")
        if s.SphinxBatchWindowUs < 0:
            raise ValueError(f"config: Debug.SphinxBatchWindowUs must be >= 0, got {s.SphinxBatchWindowUs}")
        return s


def in_flight_for(unwraps_per_second: float, unwrap_delay_ms: int) -> int:
    """Packets in flight per worker for a measured unwrap rate: about UnwrapDelay/2 of work (a
    shorter queue drops bursts the worker would finish in time, a longer one only ages packets
    into UnwrapDelay drops), clamped to [IN_FLIGHT_FLOOR, IN_FLIGHT_CEILING]."""
    work = unwraps_per_second * unwrap_delay_ms / 2000
    return int(min(max(work, IN_FLIGHT_FLOOR), IN_FLIGHT_CEILING))


def _snake_case(name):
    """NumSphinxWorkers -> num_sphinx_workers, SphinxQueueHWM -> sphinx_queue_hwm."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


class OutgoingQueue:
    """Bounded queue of packets for one next hop (drop-tail, SendSlack), in front of its sender.

    The sender (`can_send()`, `send_packets(packets)`, `async wait_writable()`) never blocks and
    is handed packets as a uint8[k, PACKET_LENGTH] array it must not keep (copy what it keeps).
    Packets queue here only while it is paused; a drain task flushes them when it resumes.
    """

    def __init__(self, sender, *, capacity, send_slack_ms, counters):
        self.sender = sender
        self._capacity = capacity
        self._slack_ns = send_slack_ms * MS
        self._counters = counters
        self._chunks = collections.deque()      # (dispatch_ns, uint8[k, L] array owned here)
        self._queued = 0
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._drain_forever())
        self.closed = False

    def __len__(self):
        return self._queued

    def put(self, dispatch_ns, packets):
        if self.closed:
            self._counters.drop(self._closed_reason, len(packets))
            return
        self._counters.count(Event.ENQUEUED_OUT, len(packets))
        if not self._chunks and self.sender.can_send():
            self._send(packets)
            return
        space = self._capacity - self._queued
        if space < len(packets):
            self._counters.drop(DropReason.DESTINATION_QUEUE_FULL, len(packets) - max(space, 0))
            packets = packets[:max(space, 0)]
        if len(packets):
            self._chunks.append((dispatch_ns, np.array(packets)))     # own copy: frames are reused
            self._queued += len(packets)
            self._wakeup.set()

    async def _drain_forever(self):
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._chunks:
                if not self.sender.can_send():
                    if not await self._sender_became_writable():
                        return
                    continue
                dispatch_ns, packets = self._chunks.popleft()
                self._queued -= len(packets)
                if time.monotonic_ns() - dispatch_ns > self._slack_ns:
                    self._counters.drop(DropReason.SEND_SLACK, len(packets))
                    continue
                self._send(packets)

    async def _sender_became_writable(self):
        # A sender that fails while we wait (its session closed) will never drain this queue:
        # count what is queued as dropped and refuse more, instead of dying silently.
        try:
            await self.sender.wait_writable()
            return True
        except Exception as exc:
            log.info("pipeline: sender %r failed while paused (%s); closing its queue", self.sender, exc)
            self.close(DropReason.DESTINATION_GONE)
            return False

    def _send(self, packets):
        try:
            self.sender.send_packets(packets)
        except Exception:
            log.exception("pipeline: sender %r failed; %d packets dropped", self.sender, len(packets))
            self._counters.drop(DropReason.DESTINATION_GONE, len(packets))
            return
        self._counters.count(Event.SENT, len(packets))

    def close(self, reason=DropReason.HALT):
        """Stop the drain task; queued packets are counted as dropped with `reason`."""
        self.closed = True
        self._closed_reason = reason
        self._task.cancel()
        if self._queued:
            self._counters.drop(reason, self._queued)
        self._chunks.clear()
        self._queued = 0


class _ZmqReader:
    """Reads a zmq socket from the asyncio loop via its (edge-triggered) notification fd."""

    def __init__(self, loop, sock, on_message, counters, budget=64, multipart=True):
        self._counters = counters
        self._recv = (lambda: sock.recv_multipart(copy=False)) if multipart else (lambda: sock.recv(copy=False))
        self._loop = loop
        self._sock = sock
        self._on_message = on_message
        self._budget = budget
        self._fd = sock.getsockopt(zmq.FD)
        self._pending = None
        loop.add_reader(self._fd, self.read_ready)
        self._pending = loop.call_soon(self.read_ready)       # messages may predate the reader

    def read_ready(self):
        self._pending = None
        sock = self._sock
        for _ in range(self._budget):
            # Reading EVENTS also re-arms the edge-triggered fd once the queue is empty.
            if not sock.getsockopt(ZMQ_EVENTS) & ZMQ_POLLIN:
                return
            self._handle(self._recv())
        # Budget used up: the edge will not fire again for what is left, so come back soon.
        self._pending = self._loop.call_soon(self.read_ready)

    def drain(self):
        sock = self._sock
        while sock.getsockopt(ZMQ_EVENTS) & ZMQ_POLLIN:
            self._handle(self._recv())

    def _handle(self, frames):
        # A failing handler must not stop the reader: with an edge-triggered fd, what is still
        # queued would wait for the next message's edge.
        try:
            self._on_message(frames)
        except Exception:
            log.exception("pipeline: handler %s failed on a batch", getattr(self._on_message, "__name__", "?"))
            self._counters.count(Event.WORKER_EXCEPTIONS)

    def close(self):
        self._loop.remove_reader(self._fd)
        if self._pending is not None:
            self._pending.cancel()


class Pipeline:
    """Crypto workers + scheduler thread + the I/O-side glue, with the reference server's halt order."""

    def __init__(self, settings, *, engine, wheel_factory, is_provider=False, on_local=None):
        self.settings = settings.normalized()
        self.counters = PipelineCounters()
        self._engine = engine
        self._wheel_factory = wheel_factory
        self._is_provider = is_provider
        self._on_local = on_local
        self._io = self.counters.stage("io")
        self._destinations = []               # hop index -> OutgoingQueue (None when removed)
        self._hop_of_node = {}
        self._state = "new"
        self._ctx = None
        self._readers = []
        self._batch = _IngressBatch(self.settings.SphinxBatchSize)
        self._flush_at_end_of_read = self.settings.SphinxBatchWindowUs == 0
        self._flush_handle = None
        self._sent_to_workers = 0
        self._worker_counters = []
        self._in_flight_limit = 0
        self._scheduler = None            # the scheduler thread, or
        self._stage = None                # the wheel run inline on this thread
        self._wheel_timer = None          # DeadlineTimer of the inline wheel
        self._wheel_soon = None           # a pop pass queued with call_soon (more was due)
        self._to_sched = None             # created on the first schedule() with the scheduler thread

    # ------------------------------------------------------------ start / halt
    async def start(self):
        """Create sockets and threads (scheduler first, then workers, as the reference starts them)."""
        if self._state != "new":
            raise RuntimeError(f"pipeline: start() in state {self._state}")
        s = self.settings
        self._loop = asyncio.get_running_loop()
        self._ctx = zmq.Context()
        self._addrs = WorkerEndpoints.unique()
        try:
            self._open_io_sockets()
            wheel = self._wheel_factory(s.SchedulerQueueSize, PACKET_LENGTH, int.from_bytes(os.urandom(8), "little"))
            three_p_ms = NUM_MIX_KEYS * s.EpochPeriod * 1000
            if s.SchedulerInline:
                self._stage = WheelStage(wheel=wheel, counters=self.counters.stage("scheduler"),
                                         max_burst=s.SchedulerMaxBurst, slack_ms=s.SchedulerSlack,
                                         out_capacity=s.DispatchBatchSize, max_delay_cap_ms=three_p_ms)
                self._wheel_timer = DeadlineTimer(self._loop, self._on_wheel_timer)
                self._from_workers_fwd = self._socket(zmq.PULL, zmq.RCVHWM, s.SchedulerInputHWM)
                self._from_workers_fwd.bind(self._addrs.sched)
                self._readers.append(_ZmqReader(self._loop, self._from_workers_fwd, self._on_sched_message,
                                                self._io, multipart=False))
            else:
                self._scheduler = SchedulerThread(
                    context=self._ctx, endpoints=self._addrs, counters=self.counters.stage("scheduler"),
                    wheel=wheel, max_burst=s.SchedulerMaxBurst, slack_ms=s.SchedulerSlack,
                    hwm=s.SchedulerInputHWM, out_capacity=s.DispatchBatchSize, max_delay_cap_ms=three_p_ms)
                self._scheduler.start()
            self._workers = [
                CryptoWorker(i, context=self._ctx, endpoints=self._addrs, engine=self._engine,
                             counters=self.counters.stage(f"worker-{i}"), batch_capacity=s.SphinxBatchSize,
                             is_provider=self._is_provider, unwrap_delay_ms=s.UnwrapDelay,
                             hwm=s.SphinxQueueHWM, max_node_delay_ms=three_p_ms)
                for i in range(s.NumSphinxWorkers)]
            self._worker_counters = [w.counters for w in self._workers]
            self._in_flight_limit = s.SphinxQueuePackets * s.NumSphinxWorkers
            for worker in self._workers:
                worker.start()
            threads = [t for t in self.threads() if t is not None]
            for thread in threads:
                await _wait_event(getattr(thread, "bound", None) or thread.started_ok)
            if not all(t.is_alive() for t in threads):
                raise RuntimeError("pipeline: a worker or the scheduler failed to start")
        except BaseException:
            await self._teardown()
            raise
        self._state = "running"

    def _open_io_sockets(self):
        s = self.settings
        self._to_workers = self._socket(zmq.PUSH, zmq.SNDHWM, s.SphinxQueueHWM)
        self._to_workers.bind(self._addrs.sphinx)
        self._from_sched = self._socket(zmq.PULL, zmq.RCVHWM, s.DispatchHWM)
        self._from_sched.bind(self._addrs.out)
        self._from_workers = self._socket(zmq.PULL, zmq.RCVHWM, s.LocalHWM)
        self._from_workers.bind(self._addrs.local)
        self._readers = [_ZmqReader(self._loop, self._from_sched, self._on_due, self._io),
                         _ZmqReader(self._loop, self._from_workers, self._on_local_frames, self._io)]

    def _socket(self, kind, hwm_option, hwm):
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(hwm_option, hwm)
        return sock

    async def halt(self):
        """Graceful halt of the whole pipeline; every packet in it is delivered or counted."""
        await self.halt_crypto_workers()
        await self.halt_scheduler()

    async def halt_crypto_workers(self):
        """Halt steps "connector" and "crypto workers" of the reference server's halt order: flush the open
        ingress batch, close the outgoing queues, let the workers drain and stop. Local packets
        they produced still reach the local handler (the provider halts after this)."""
        if self._state != "running":
            return
        self._state = "halting"
        self.flush()
        for dest in self._destinations:
            if dest is not None:
                dest.close(DropReason.HALT)
        await self._stop_workers()

    async def halt_scheduler(self):
        """Halt step "scheduler": packets still in the wheel are counted as HALT drops, then all
        sockets and the zmq context are closed."""
        if self._state == "running":
            await self.halt_crypto_workers()
        if self._state != "halting":
            return
        await self._teardown()
        self._state = "halted"

    async def _stop_workers(self):
        workers = getattr(self, "_workers", [])
        for worker in workers:
            if worker.is_alive():
                worker.request_halt()
        for worker in workers:
            await _join(worker)
        self._drain_readers()                    # what the workers produced before they stopped

    async def _teardown(self):
        await self._stop_workers()
        scheduler = self._scheduler
        if scheduler is not None:
            if scheduler.is_alive():
                scheduler.request_halt()
            await _join(scheduler)
        self._drain_readers()
        if self._stage is not None:
            if self._wheel_soon is not None:
                self._wheel_soon.cancel()
                self._wheel_soon = None
            if self._wheel_timer is not None:
                self._wheel_timer.close()
                self._wheel_timer = None
            self._stage.count_halted()
        for reader in self._readers:
            reader.close()
        self._readers = []
        for thread in [*getattr(self, "_workers", []), *([scheduler] if scheduler else [])]:
            thread.close_control()
        if self._ctx is not None:
            self._ctx.destroy(linger=0)
            self._ctx = None

    def _drain_readers(self):
        for reader in self._readers:
            reader.drain()

    # ------------------------------------------------------------ control
    def set_mix_keys(self, keyset):
        for worker in self._workers:
            worker.post("keys", keyset)

    def set_kaetzchen_endpoints(self, endpoints):
        table = self._endpoint_table = EndpointSet(endpoints)
        for worker in self._workers:
            worker.post("endpoints", table)

    async def restart_dead_workers(self):
        """Replace crypto worker threads that died (an error outside a batch; a failing batch
        never kills one) with fresh threads on the same sockets and counters, and hand them the
        routes and endpoints. The caller re-sends the mix keys. Returns how many were restarted."""
        if self._state != "running":
            return 0
        s = self.settings
        restarted = 0
        all_dead = not any(worker.is_alive() for worker in self._workers)
        for i, worker in enumerate(self._workers):
            if worker.is_alive():
                continue
            if restarted == 0:
                self._forget_in_flight(all_dead)
            worker.close_control()
            fresh = CryptoWorker(i, context=self._ctx, endpoints=self._addrs, engine=self._engine,
                                 counters=worker.counters, batch_capacity=s.SphinxBatchSize,
                                 is_provider=self._is_provider, unwrap_delay_ms=s.UnwrapDelay,
                                 hwm=s.SphinxQueueHWM, max_node_delay_ms=NUM_MIX_KEYS * s.EpochPeriod * 1000)
            self._workers[i] = fresh
            fresh.start()
            await _wait_event(fresh.started_ok)
            if not fresh.is_alive():
                raise RuntimeError(f"pipeline: crypto worker {i} failed again at start")
            fresh.post("routes", RouteTable(self._hop_of_node))
            if getattr(self, "_endpoint_table", None) is not None:
                fresh.post("endpoints", self._endpoint_table)
            restarted += 1
        return restarted

    def set_max_delay(self, mu_max_delay_ms):
        if self._stage is not None:
            self._stage.set_max_delay(mu_max_delay_ms)
        else:
            self._scheduler.post("max_delay", mu_max_delay_ms)

    def set_destinations(self, senders):
        """Outgoing destinations by 32-byte node ID ({node_id: sender}); replaces the previous set.

        Hop indices of nodes that stay are kept, so packets already in the wheel still find them.
        """
        s = self.settings
        for node_id in list(self._hop_of_node):
            if node_id not in senders:
                hop = self._hop_of_node.pop(node_id)
                self._destinations[hop].close(DropReason.DESTINATION_GONE)
                self._destinations[hop] = None
        for node_id, sender in senders.items():
            hop = self._hop_of_node.get(node_id)
            if hop is not None and self._destinations[hop].sender is sender:
                continue
            if hop is not None:
                self._destinations[hop].close(DropReason.DESTINATION_GONE)
            else:
                hop = len(self._destinations)
                self._destinations.append(None)
                self._hop_of_node[node_id] = hop
            self._destinations[hop] = OutgoingQueue(sender, capacity=s.OutgoingQueueSize,
                                                    send_slack_ms=s.SendSlack, counters=self._io)
        routes = RouteTable(self._hop_of_node)
        for worker in self._workers:
            worker.post("routes", routes)

    # ------------------------------------------------------------ ingress
    def submit(self, packet, recv_at_ns, from_client=False, *, caller_flushes=False):
        """Queue one received packet (PACKET_LENGTH bytes) for the crypto workers; never blocks.

        The open batch goes out when full, else at the end of the event-loop pass (or after the
        batch window). `caller_flushes=True`: the caller calls `end_of_read()` once it has
        submitted what one read gave it, which saves an event-loop pass per read (measured
        ~10 us of I/O-thread CPU a packet at low rates)."""
        # The hot path of the I/O thread: a few attribute writes, no allocation.
        if self._state != "running":
            _check_length(packet)
            self._io.drop(DropReason.HALT)
            return
        batch = self._batch
        count = batch.count
        start = count * PACKET_LENGTH
        try:
            batch.view[start:start + PACKET_LENGTH] = packet     # raises unless exactly L bytes
        except (ValueError, TypeError):
            _check_length(packet)
            raise
        batch.recv_at[count] = recv_at_ns
        batch.from_client[count] = 1 if from_client else 0
        batch.count = count + 1
        if count == 0 and not (caller_flushes and self._flush_at_end_of_read):
            self._arm_flush()
        if count + 1 == batch.capacity:
            self.flush()

    def end_of_read(self):
        """After the packets of one read were submitted with `caller_flushes=True`: send the open
        batch now (with a batch window configured, the window's timer sends it instead)."""
        if self._flush_at_end_of_read:
            self.flush()

    def _arm_flush(self):
        window = self.settings.SphinxBatchWindowUs
        if window:
            self._flush_handle = self._loop.call_later(window / 1e6, self.flush)
        else:
            self._flush_handle = self._loop.call_soon(self.flush)

    def flush(self):
        """Send the open ingress batch to the workers now (drop it, counted, if they are full)."""
        batch = self._batch
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if batch is None or batch.count == 0:
            return
        count = batch.count
        if self._in_flight() + count > self._in_flight_limit:
            # Shed here, where it is cheapest, rather than let the queue age every packet in it.
            batch.reset()
            self._io.drop(DropReason.INGRESS_QUEUE_FULL, count)
            return
        try:
            # copy=True: zmq copies just the filled part and the buffer is reused at once.
            self._to_workers.send(batch.message(), flags=zmq.NOBLOCK, copy=True)
        except zmq.Again:
            self._io.drop(DropReason.INGRESS_QUEUE_FULL, count)
            return
        finally:
            batch.reset()
        self._sent_to_workers += count
        self._io.count(Event.RECEIVED, count)
        self._io.count(Event.BATCHES_TO_WORKERS)

    # ------------------------------------------------------------ locally created packets
    def dispatch_now(self, node_id, packets):
        """Hand packets this node created (uint8[k, L]; decoy loops) straight to the outgoing
        queue of `node_id`: no local delay at the originating mix, as in the Go server. Not
        kept: the queue copies what it holds. An unknown next hop is a counted
        `destination_gone` drop."""
        packets = _packet_rows(packets)
        if self._state != "running":
            self._io.drop(DropReason.HALT, len(packets))
            return
        hop = self._hop_of_node.get(bytes(node_id))
        if hop is None:
            self._io.drop(DropReason.DESTINATION_GONE, len(packets))
            return
        self._put(self._destinations, hop, time.monotonic_ns(), packets)

    def schedule(self, packets, delay_ms, node_ids):
        """Put packets this node created (uint8[k, L]: SURB-ACKs, Kaetzchen replies) into the
        timer wheel, due `delay_ms` (uint32[k] or one int) from now, for `node_ids` (one 32-byte
        ID, or uint8[k, 32] / k IDs). Never dwell-adjusted; the scheduler's maxDelay applies as
        to forwarded packets, as for the Go server's locally made packets. Unknown next hops:
        `no_route`."""
        packets = _packet_rows(packets)
        k = len(packets)
        delay = np.array(np.broadcast_to(np.asarray(delay_ms, dtype=np.int64), (k,)))
        if k and int(delay.min()) < 0:
            raise ValueError("pipeline: a negative delay")
        hop = self._hops_of(node_ids, k)
        if self._state != "running":
            self._io.drop(DropReason.HALT, k)
            return
        keep = (hop >= 0) & (delay <= self._max_delay_cap_ms())
        if not keep.all():
            self._io.drop(DropReason.NO_ROUTE, int((hop < 0).sum()))
            self._io.drop(DropReason.DELAY_ABOVE_MAX, int(((hop >= 0) & ~keep).sum()))
            packets, delay, hop = packets[keep], delay[keep], hop[keep]
        if len(packets) == 0:
            return
        deadline = (time.monotonic_ns() + US - 1) // US + delay * (MS // US)
        message = encode_schedule(packets, None, deadline, hop)
        if self._stage is not None:
            self._stage.insert_message(zmq.Frame(message))
            self._arm_wheel_timer()
            return
        try:
            self._local_to_sched().send(message, flags=zmq.NOBLOCK, copy=True)
        except zmq.Again:
            self._io.drop(DropReason.SCHEDULER_QUEUE_FULL, len(packets))

    def _hops_of(self, node_ids, k):
        """int32[k] hop indices (-1: unknown) of one 32-byte ID or k of them, one dict lookup
        per distinct ID."""
        if isinstance(node_ids, (bytes, bytearray, memoryview)) and len(node_ids) == _NODE_ID_LENGTH:
            ids = np.frombuffer(bytes(node_ids), np.uint8).reshape(1, _NODE_ID_LENGTH)
        elif isinstance(node_ids, np.ndarray):
            ids = np.ascontiguousarray(node_ids, np.uint8).reshape(-1, _NODE_ID_LENGTH)
        else:
            ids = np.frombuffer(b"".join(map(bytes, node_ids)), np.uint8).reshape(-1, _NODE_ID_LENGTH)
        if len(ids) not in (1, k):
            raise ValueError(f"pipeline: {len(ids)} node IDs for {k} packets")
        unique, inverse = np.unique(ids, axis=0, return_inverse=True)
        table = np.array([self._hop_of_node.get(row.tobytes(), -1) for row in unique], np.int32)
        return np.array(np.broadcast_to(table[inverse.reshape(-1)], (k,)))

    def _max_delay_cap_ms(self):
        return NUM_MIX_KEYS * self.settings.EpochPeriod * 1000     # 3P; the wheel checks maxDelay

    def _local_to_sched(self):
        # Scheduler thread: a PUSH of our own into its input (inproc allows many connections).
        if self._to_sched is None:
            self._to_sched = self._socket(zmq.PUSH, zmq.SNDHWM, self.settings.SchedulerInputHWM)
            self._to_sched.connect(self._addrs.sched)
        return self._to_sched

    # ------------------------------------------------------------ egress
    def _on_due(self, frames):
        try:
            dispatch_ns, hops, deadline, packets = decode_due(frames[0].buffer, frames[1].buffer)
        except Exception:
            log.exception("pipeline: malformed due batch from the scheduler")
            return
        self.counters.dispatch_delay.observe_deadlines(time.monotonic_ns(), deadline, US)
        self._dispatch(dispatch_ns, hops, packets)

    def _dispatch(self, dispatch_ns, hops, packets):
        """Hand due packets (uint8[c, L], not kept) to their destinations' outgoing queues."""
        destinations = self._destinations
        if len(hops) == 0:
            return
        raw = hops.tobytes()
        if raw == raw[:4] * len(hops):                  # one destination: the common case
            self._put(destinations, int(hops[0]), dispatch_ns, packets)
            return
        for hop in np.unique(hops):
            self._put(destinations, int(hop), dispatch_ns, packets[hops == hop])

    # ------------------------------------------------------------ inline scheduler (SchedulerInline)
    def _on_sched_message(self, frame):
        self._stage.insert_message(frame)
        self._arm_wheel_timer()

    def _arm_wheel_timer(self):
        # Per batch, never per packet: one look at the wheel, a system call only when the
        # earliest deadline moved earlier (or the timer was idle).
        deadline = self._stage.next_deadline()
        if deadline >= 0 and self._wheel_soon is None and self._wheel_timer is not None:
            self._wheel_timer.arm(deadline)

    def _on_wheel_timer(self):
        self._wheel_soon = None
        stage = self._stage
        total, more_due = stage.pop_due()
        self._wheel_timer.note_pass(total)
        if total:
            now = time.monotonic_ns()
            self.counters.dispatch_delay.observe_deadlines(now, stage.out_deadline[:total], US)
            self._dispatch(now, stage.out_hop[:total], stage.out_packets[:total])
        if more_due:
            self._wheel_soon = self._loop.call_soon(self._on_wheel_timer)
        else:
            self._arm_wheel_timer()

    def _put(self, destinations, hop, dispatch_ns, packets):
        dest = destinations[hop] if 0 <= hop < len(destinations) else None
        if dest is None:
            self._io.drop(DropReason.DESTINATION_GONE, len(packets))
            return
        dest.put(dispatch_ns, packets)

    def _on_local_frames(self, frames):
        try:
            batch = LocalBatch.from_frames(frames[0].buffer, frames[1].buffer)
        except Exception:
            log.exception("pipeline: malformed local batch from a worker")
            return
        if self._on_local is None:
            log.error("pipeline: %d local packets and no local handler", len(batch))
            self._io.drop(DropReason.DESTINATION_GONE, len(batch))
            return
        try:
            self._on_local(batch)
        except Exception:
            log.exception("pipeline: local handler failed on %d packets", len(batch))
            self._io.count(Event.WORKER_EXCEPTIONS)
            self._io.drop(DropReason.WORKER_ERROR, len(batch))
            return
        self._io.count(Event.LOCAL_DELIVERED, len(batch))

    # ------------------------------------------------------------ introspection
    def _in_flight(self):
        """Packets sent to the crypto workers and not yet dequeued by one (SphinxQueuePackets
        bounds it per worker)."""
        dequeued = 0
        for worker_counters in self._worker_counters:       # read-only: each worker writes its own
            dequeued += worker_counters.events[_DEQUEUED]
        if self._sent_to_workers < dequeued:    # live workers took packets forgotten at a restart
            self._sent_to_workers = dequeued
        return self._sent_to_workers - dequeued

    def _forget_in_flight(self, all_dead):
        """A dead worker's socket took its queued packets with it: forget every packet in flight,
        or the bound would count them for ever and a few deaths would shut the ingress. Those
        the live workers still hold are re-counted as they dequeue them (`_in_flight`)."""
        in_flight = self._in_flight()
        self._sent_to_workers -= in_flight
        if all_dead:                            # then every one of them is lost: count them
            self._io.drop(DropReason.WORKER_ERROR, in_flight)
        if in_flight:
            log.error("pipeline: %d packets were in flight to the crypto workers at a worker's "
                      "death; %s", in_flight, "lost" if all_dead else "those of the dead ones lost")

    def queue_depths(self):
        """Packets waiting, by queue: per next hop, the open ingress batch, in flight to the
        crypto workers, and in the timer wheel (inline or on the scheduler thread)."""
        stage = self._stage if self._stage is not None else getattr(self._scheduler, "_stage", None)
        return {"outgoing": {i: len(d) for i, d in enumerate(self._destinations) if d is not None},
                "ingress_open_batch": self._batch.count,
                "crypto_in_flight": max(0, self._in_flight()),
                "scheduler": len(stage.wheel) if stage is not None else 0}

    def threads(self):
        """The pipeline's threads (the scheduler entry is None when it runs inline)."""
        return [self._scheduler, *getattr(self, "_workers", [])]


_DEQUEUED = int(Event.DEQUEUED)


_NODE_ID_LENGTH = 32


def _packet_rows(packets):
    """`packets` as a C-contiguous uint8[k, L] array; anything else is a ValueError."""
    rows = np.ascontiguousarray(packets, dtype=np.uint8)
    if rows.ndim != 2 or rows.shape[1] != PACKET_LENGTH:
        raise ValueError(f"pipeline: packets of shape {rows.shape}, expected (k, {PACKET_LENGTH})")
    return rows


def _check_length(packet):
    if len(packet) != PACKET_LENGTH:
        raise ValueError(f"pipeline: packet of {len(packet)} bytes, expected {PACKET_LENGTH}")


class _IngressBatch:
    """The open batch of received packets, gathered into one reused buffer laid out as the
    single-frame ingress message (`workers.decode_ingress`). Pipeline.submit fills `view`,
    `recv_at` and `from_client` at row `count` directly; all are allocated once."""

    __slots__ = ("capacity", "count", "view", "recv_at", "from_client", "_buf")

    def __init__(self, capacity):
        self.capacity = capacity
        self.count = 0
        self._buf = bytearray(ingress_message_size(capacity))
        self.view = memoryview(self._buf)           # fixed size: a wrong-length write raises
        self.recv_at = array.array("q", bytes(8 * capacity))
        self.from_client = bytearray(capacity)

    def reset(self):
        self.count = 0

    def message(self):
        size = write_ingress_tail(self._buf, self.count, self.recv_at, self.from_client)
        return self.view[:size]


async def _wait_event(event, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not event.is_set():
        if time.monotonic() > deadline:
            raise RuntimeError("pipeline: a thread did not start in time")
        await asyncio.sleep(0.001)


async def _join(thread, timeout=10.0):
    deadline = time.monotonic() + timeout
    while thread.is_alive():
        if time.monotonic() > deadline:
            log.error("pipeline: thread %s did not stop within %.0f s", thread.name, timeout)
            return
        await asyncio.sleep(0.001)
    thread.join()
