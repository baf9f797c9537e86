"""Crypto worker threads: batch unwrap and replay check with the GIL released, then classification.

Workers talk to the rest of the node only through zmq inproc sockets and never block on a full
queue: a packet that cannot be handed on is dropped and counted with its reason.
"""
import dataclasses
import logging
import queue
import threading
import time

import numpy as np
import zmq

from katzenpost.server.counters import DropReason, Event
from katzenpost.sphinx import geometry

log = logging.getLogger("katzenpost.server.workers")

PACKET_LENGTH = geometry.PACKET_LENGTH
EPOCH_PERIOD_MS = 20 * 60 * 1000          # spec/server.md §0.1 (P)
NUM_MIX_KEYS = 3                          # spec/server.md §0.1
MAX_NODE_DELAY_MS = NUM_MIX_KEYS * EPOCH_PERIOD_MS
MS = 1_000_000                            # nanoseconds per millisecond

FLAG_NEXT_HOP = 1
FLAG_RECIPIENT = 2
FLAG_SURB_REPLY = 4
FLAG_NODE_DELAY = 8
FLAG_DUPLICATE = 16
_COMMAND_BITS = FLAG_NEXT_HOP | FLAG_RECIPIENT | FLAG_SURB_REPLY | FLAG_NODE_DELAY

# Packet kinds after classification (spec/server.md §1.4), also the `kind` of a LocalBatch row.
KIND_FORWARD = 0
KIND_TO_USER = 1
KIND_UNRELIABLE_TO_USER = 2
KIND_SURB_REPLY = 3
KIND_KAETZCHEN = 4
KIND_DECOY_SURB_REPLY = 5
KIND_NONE = 255

NO_DROP = 255                              # `reason` of a packet that is not dropped

_KIND_EVENT = {
    KIND_TO_USER: Event.TO_USER,
    KIND_UNRELIABLE_TO_USER: Event.UNRELIABLE_TO_USER,
    KIND_SURB_REPLY: Event.SURB_REPLY,
    KIND_KAETZCHEN: Event.KAETZCHEN,
    KIND_DECOY_SURB_REPLY: Event.DECOY_SURB_REPLY,
}


# ---------------------------------------------------------------- batch formats (zmq frames)

def encode_ingress_meta(recv_at_ns, from_client):
    """Meta frame of an ingress batch: int64 RecvAt (monotonic ns) then uint8 from-client flags."""
    return np.asarray(recv_at_ns, dtype=np.int64).tobytes() + np.asarray(from_client, np.uint8).tobytes()


def decode_ingress(meta, data):
    """(recv_at int64[n], from_client uint8[n], packets uint8[n, L] writable) from two frames."""
    n, rest = divmod(len(data), PACKET_LENGTH)
    if rest or n == 0 or len(meta) != 9 * n:
        raise ValueError(f"workers: malformed ingress batch ({len(meta)} meta / {len(data)} data bytes)")
    recv_at = np.frombuffer(meta, dtype=np.int64, count=n)
    from_client = np.frombuffer(meta, dtype=np.uint8, count=n, offset=8 * n)
    packets = np.frombuffer(data, dtype=np.uint8).reshape(n, PACKET_LENGTH)
    return recv_at, from_client, packets


def encode_schedule_meta(deadline_ms, hop):
    """Meta frame of a batch for the scheduler: int64 deadlines (monotonic ms), int32 hop indices."""
    return np.asarray(deadline_ms, np.int64).tobytes() + np.asarray(hop, np.int32).tobytes()


def decode_schedule(meta, data):
    n, rest = divmod(len(data), PACKET_LENGTH)
    if rest or len(meta) != 12 * n:
        raise ValueError(f"workers: malformed schedule batch ({len(meta)} meta / {len(data)} data bytes)")
    deadline = np.frombuffer(meta, dtype=np.int64, count=n)
    hop = np.frombuffer(meta, dtype=np.int32, count=n, offset=8 * n)
    packets = np.frombuffer(data, dtype=np.uint8).reshape(n, PACKET_LENGTH)
    return deadline, hop, packets


@dataclasses.dataclass(frozen=True)
class LocalBatch:
    """Terminal packets for this node (provider delivery, Kaetzchen, decoy), row-aligned arrays."""

    kind: np.ndarray          # uint8[k], KIND_*
    recv_at_ns: np.ndarray    # int64[k]
    delay_ms: np.ndarray      # uint32[k], NodeDelay of the terminal hop (SURB-ACK delay)
    recipient: np.ndarray     # uint8[k, 64]
    surb_id: np.ndarray       # uint8[k, 16]
    packets: np.ndarray       # uint8[k, L]; payload decrypted in place at [460:]

    def __len__(self):
        return len(self.kind)

    def to_frames(self):
        meta = b"".join((self.kind.astype(np.uint8).tobytes(), self.recv_at_ns.astype(np.int64).tobytes(),
                         self.delay_ms.astype(np.uint32).tobytes(),
                         np.ascontiguousarray(self.recipient, np.uint8).tobytes(),
                         np.ascontiguousarray(self.surb_id, np.uint8).tobytes()))
        return [meta, np.ascontiguousarray(self.packets)]

    @classmethod
    def from_frames(cls, meta, data):
        k, rest = divmod(len(data), PACKET_LENGTH)
        row = 1 + 8 + 4 + geometry.RECIPIENT_ID_LENGTH + geometry.SURB_ID_LENGTH
        if rest or len(meta) != row * k:
            raise ValueError(f"workers: malformed local batch ({len(meta)} meta / {len(data)} data bytes)")
        off = 0

        def take(dtype, count, width=1):
            nonlocal off
            arr = np.frombuffer(meta, dtype=dtype, count=count * width, offset=off)
            off += arr.nbytes
            return arr.reshape(count, width) if width > 1 else arr

        return cls(kind=take(np.uint8, k), recv_at_ns=take(np.int64, k), delay_ms=take(np.uint32, k),
                   recipient=take(np.uint8, k, geometry.RECIPIENT_ID_LENGTH),
                   surb_id=take(np.uint8, k, geometry.SURB_ID_LENGTH),
                   packets=np.frombuffer(data, dtype=np.uint8).reshape(k, PACKET_LENGTH))


# ---------------------------------------------------------------- read-only tables handed to workers

class RouteTable:
    """Immutable map from 32-byte next-hop node IDs to the scheduler's int32 hop indices."""

    def __init__(self, hops=None):
        hops = dict(hops or {})
        for node_id, index in hops.items():
            if len(node_id) != geometry.NODE_ID_LENGTH or not 0 <= index < 2**31:
                raise ValueError(f"workers: bad route {node_id!r} -> {index}")
        ids = sorted(hops)
        self._ids = np.array(ids, dtype=f"S{geometry.NODE_ID_LENGTH}")
        self._index = np.array([hops[i] for i in ids], dtype=np.int32)

    def __len__(self):
        return len(self._ids)

    def lookup(self, next_hop):
        """int32[k] hop index per row of uint8[k, 32] `next_hop`, -1 where the node is unknown."""
        k = len(next_hop)
        out = np.full(k, -1, dtype=np.int32)
        if k == 0 or len(self._ids) == 0:
            return out
        keys = np.ascontiguousarray(next_hop, dtype=np.uint8).view(f"S{geometry.NODE_ID_LENGTH}").ravel()
        pos = np.searchsorted(self._ids, keys)
        pos[pos == len(self._ids)] = 0
        found = self._ids[pos] == keys
        out[found] = self._index[pos[found]]
        return out


class EndpointSet:
    """Immutable set of 64-byte recipient IDs (Kaetzchen and plugin endpoints, NUL padded)."""

    def __init__(self, endpoints=()):
        width = geometry.RECIPIENT_ID_LENGTH
        padded = set()
        for ep in endpoints:
            ep = bytes(ep)
            if not 0 < len(ep) <= width:
                raise ValueError(f"workers: Kaetzchen endpoint must be 1..{width} bytes: {ep!r}")
            padded.add(ep.ljust(width, b"\0"))
        self._ids = np.array(sorted(padded), dtype=f"S{width}")

    def contains(self, recipient):
        k = len(recipient)
        if k == 0 or len(self._ids) == 0:
            return np.zeros(k, dtype=bool)
        keys = np.ascontiguousarray(recipient, np.uint8).view(f"S{geometry.RECIPIENT_ID_LENGTH}").ravel()
        pos = np.searchsorted(self._ids, keys)
        pos[pos == len(self._ids)] = 0
        return self._ids[pos] == keys


@dataclasses.dataclass(frozen=True)
class MixKeySet:
    """Raw X25519 mix private keys to try, in order, each with its replay filter (thread-safe)."""

    keys: np.ndarray          # uint8[M, 32], M in 1..3
    filters: tuple            # M objects with check_and_add(tags, mask, out)

    def __post_init__(self):
        keys = np.ascontiguousarray(self.keys, dtype=np.uint8)
        if keys.ndim != 2 or keys.shape[1] != 32 or not 1 <= keys.shape[0] <= geometry.MAX_TRIAL_KEYS:
            raise ValueError(f"workers: mix keys must be uint8[1..3, 32], got shape {keys.shape}")
        if len(self.filters) != keys.shape[0]:
            raise ValueError(f"workers: {keys.shape[0]} mix keys but {len(self.filters)} replay filters")
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "filters", tuple(self.filters))


class SphinxUnwrapEngine:
    """The production unwrap: `katzenpost.sphinx.batch.unwrap_batch` into an `UnwrapBatch`."""

    def __init__(self):
        from katzenpost.sphinx import batch

        self._unwrap = batch.unwrap_batch
        self._result_type = batch.UnwrapBatch

    def new_result(self, capacity):
        return self._result_type(capacity)

    def unwrap(self, packets, n, keys, result):
        self._unwrap(packets, n, keys, result)


# ---------------------------------------------------------------- classification (pure, vectorised)

def adjust_forward_delay(node_delay_ms, dwell_ns):
    """Dwell-adjusted delay in ns per spec/server.md §1.5, and a mask of packets to drop."""
    delay = node_delay_ms.astype(np.int64) * MS
    dwell = np.asarray(dwell_ns, dtype=np.int64)
    longer = delay > dwell
    zero = node_delay_ms == 0
    adjusted = np.where(longer, delay - dwell, MS)                     # dwell >= non-zero delay: 1 ms
    adjusted = np.where(~longer & zero, MS - dwell, adjusted)          # zero delay: 1 ms - dwell
    drop = ~longer & zero & (dwell >= MS)
    return adjusted, drop


@dataclasses.dataclass
class Classification:
    reason: np.ndarray        # uint8[n], NO_DROP or a DropReason
    kind: np.ndarray          # uint8[n], KIND_*
    deadline_ms: np.ndarray   # int64[n], monotonic ms (forward packets only)
    hop: np.ndarray           # int32[n] (forward packets only)


def classify(result, n, *, from_client, recv_at_ns, dequeue_ns, now_ns, replayed, is_provider,
             routes, endpoints):
    """Sort unwrapped packets into forward / local kinds / drops (spec/server.md §1.3-1.5)."""
    reason = np.full(n, NO_DROP, dtype=np.uint8)
    kind = np.full(n, KIND_NONE, dtype=np.uint8)
    deadline = np.zeros(n, dtype=np.int64)
    hop = np.full(n, -1, dtype=np.int32)
    status = result.status[:n]
    flags = result.flags[:n]
    from_client = np.asarray(from_client, dtype=bool)

    def drop(mask, why):
        reason[mask & (reason == NO_DROP)] = why

    drop(status != 0, DropReason.UNWRAP_FAILED)
    drop((flags & FLAG_DUPLICATE) != 0, DropReason.DUPLICATE_COMMAND)
    drop(np.asarray(replayed, dtype=bool), DropReason.REPLAY)
    commands = flags & _COMMAND_BITS
    live = reason == NO_DROP
    forward = live & (commands == (FLAG_NEXT_HOP | FLAG_NODE_DELAY))
    to_user = live & (commands == (FLAG_RECIPIENT | FLAG_NODE_DELAY))
    unreliable = live & (commands == FLAG_RECIPIENT)
    surb_reply = live & (commands == (FLAG_RECIPIENT | FLAG_SURB_REPLY))
    drop(live & ~(forward | to_user | unreliable | surb_reply), DropReason.INVALID_COMMANDS)
    terminal = to_user | unreliable | surb_reply

    if is_provider:
        drop(forward & ~from_client, DropReason.FORWARD_AT_PROVIDER)      # MustTerminate
        drop(terminal & from_client, DropReason.CLIENT_BYPASS)            # MustForward
        at_endpoint = terminal & endpoints.contains(result.recipient[:n])
        drop(at_endpoint & surb_reply, DropReason.KAETZCHEN_SURB_REPLY)
        live = reason == NO_DROP
        kind[live & to_user] = KIND_TO_USER
        kind[live & unreliable] = KIND_UNRELIABLE_TO_USER
        kind[live & surb_reply] = KIND_SURB_REPLY
        kind[live & at_endpoint] = KIND_KAETZCHEN
    else:
        drop(to_user | unreliable, DropReason.TERMINAL_AT_MIX)
        kind[(reason == NO_DROP) & surb_reply] = KIND_DECOY_SURB_REPLY

    fwd = np.flatnonzero(forward & (reason == NO_DROP))
    if len(fwd):
        node_delay = result.delay_ms[fwd]
        too_long = node_delay.astype(np.int64) > MAX_NODE_DELAY_MS
        delay_ns, dwell_drop = adjust_forward_delay(node_delay, dequeue_ns - recv_at_ns[fwd])
        hops = routes.lookup(result.next_hop[fwd])
        why = np.full(len(fwd), NO_DROP, dtype=np.uint8)
        why[(hops < 0)] = DropReason.NO_ROUTE
        why[dwell_drop] = DropReason.DWELL_EXCEEDED
        why[too_long] = DropReason.DELAY_TOO_LONG
        reason[fwd] = why
        ok = fwd[why == NO_DROP]
        kind[ok] = KIND_FORWARD
        # Round the deadline up: a packet never leaves before its delay has passed.
        deadline[fwd] = (now_ns + delay_ns + MS - 1) // MS
        hop[fwd] = hops
    return Classification(reason=reason, kind=kind, deadline_ms=deadline, hop=hop)


def check_replays(result, n, keyset, eligible):
    """bool[n]: packets whose replay tag was already in the filter of the key that opened them."""
    replayed = np.zeros(n, dtype=bool)
    seen = np.zeros(n, dtype=np.uint8)
    key_index = result.key_index[:n]
    tags = result.tags[:n]
    for j, replay_filter in enumerate(keyset.filters):
        mask = eligible & (key_index == j)
        if not mask.any():
            continue
        seen[:] = 0
        replay_filter.check_and_add(tags, mask.view(np.uint8), seen)
        replayed |= mask & (seen != 0)
    return replayed


# ---------------------------------------------------------------- the worker threads

@dataclasses.dataclass(frozen=True)
class WorkerEndpoints:
    """inproc addresses of one pipeline (unique per pipeline instance)."""

    sphinx: str        # ingress batches: I/O PUSH (bind) -> workers PULL
    sched: str         # forward packets: workers PUSH -> scheduler PULL (bind)
    local: str         # terminal packets: workers PUSH -> I/O PULL (bind)
    out: str           # due packets: scheduler PUSH -> I/O PULL (bind)

    @classmethod
    def unique(cls):
        tag = f"{id(object()):x}-{time.monotonic_ns():x}"
        return cls(*(f"inproc://kp-{name}-{tag}" for name in ("sphinx", "sched", "local", "out")))


class CryptoWorker(threading.Thread):
    """One crypto worker: pulls ingress batches, unwraps, checks replays, classifies, pushes on."""

    def __init__(self, index, *, context, endpoints, engine, counters, batch_capacity, is_provider,
                 unwrap_delay_ms, hwm):
        super().__init__(name=f"katzenpost-crypto-{index}", daemon=True)
        self.index = index
        self._ctx = context
        self._endpoints = endpoints
        self._engine = engine
        self._counters = counters
        self._capacity = batch_capacity
        self._is_provider = is_provider
        self._unwrap_delay_ns = unwrap_delay_ms * MS
        self._hwm = hwm
        self._inbox = queue.SimpleQueue()          # control objects; a byte on the PAIR wakes us
        self._ctl_addr = f"{endpoints.sphinx}-ctl-{index}"
        self._ctl = context.socket(zmq.PAIR)
        self._ctl.setsockopt(zmq.LINGER, 0)
        self._ctl.bind(self._ctl_addr)
        self._keyset = None
        self._routes = RouteTable()
        self._endpoints_set = EndpointSet()
        self.started_ok = threading.Event()

    # --- control, called from the owning (I/O) thread
    def post(self, kind, value):
        self._inbox.put((kind, value))
        self._ctl.send(b"c")

    def request_halt(self):
        self._inbox.put(("halt", None))
        self._ctl.send(b"c")

    def close_control(self):
        self._ctl.close(linger=0)

    # --- thread body
    def run(self):
        ctx = self._ctx
        sockets = []

        def open_socket(kind, addr, hwm=None):
            sock = ctx.socket(kind)
            sock.setsockopt(zmq.LINGER, 0)
            if hwm is not None:
                sock.setsockopt(zmq.SNDHWM if kind == zmq.PUSH else zmq.RCVHWM, hwm)
            sock.connect(addr)
            sockets.append(sock)
            return sock

        try:
            pull = open_socket(zmq.PULL, self._endpoints.sphinx, self._hwm)
            self._to_sched = open_socket(zmq.PUSH, self._endpoints.sched, self._hwm)
            self._to_local = open_socket(zmq.PUSH, self._endpoints.local, self._hwm)
            ctl = open_socket(zmq.PAIR, self._ctl_addr)
            self._result = self._engine.new_result(self._capacity)
            self.started_ok.set()
            self._loop(pull, ctl)
        except Exception:
            log.exception("crypto worker %d failed outside a batch; it stops", self.index)
            self._counters.count(Event.WORKER_EXCEPTIONS)
        finally:
            for sock in sockets:
                sock.close(linger=0)
            self.started_ok.set()

    def _loop(self, pull, ctl):
        poller = zmq.Poller()
        poller.register(pull, zmq.POLLIN)
        poller.register(ctl, zmq.POLLIN)
        while True:
            ready = dict(poller.poll())
            if ctl in ready:
                while ctl.poll(0):
                    ctl.recv()
                if self._apply_control():
                    self._drain(pull)
                    return
            if pull in ready:
                # Bounded drain, then look at control again: a halt is never starved.
                for _ in range(64):
                    try:
                        frames = pull.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._process_safely(frames)

    def _drain(self, pull):
        while True:
            try:
                frames = pull.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._process_safely(frames)

    def _apply_control(self):
        """Apply queued control messages; True when a halt was requested."""
        halt = False
        while True:
            try:
                kind, value = self._inbox.get_nowait()
            except queue.Empty:
                return halt
            if kind == "halt":
                halt = True
            elif kind == "keys":
                self._keyset = value
            elif kind == "routes":
                self._routes = value
            elif kind == "endpoints":
                self._endpoints_set = value
            else:
                log.error("crypto worker %d: unknown control message %r", self.index, kind)

    def _process_safely(self, frames):
        dequeue_ns = time.monotonic_ns()
        try:
            if len(frames) != 2:
                raise ValueError(f"workers: ingress message with {len(frames)} frames, expected 2")
            recv_at, from_client, packets = decode_ingress(frames[0].buffer, frames[1].buffer)
        except Exception:
            log.exception("crypto worker %d: malformed ingress batch dropped", self.index)
            self._counters.count(Event.WORKER_EXCEPTIONS)
            return
        try:
            self.process_batch(recv_at, from_client, packets, dequeue_ns)
        except Exception:
            log.exception("crypto worker %d: batch of %d packets failed", self.index, len(packets))
            self._counters.count(Event.WORKER_EXCEPTIONS)
            self._counters.drop(DropReason.WORKER_ERROR, len(packets))

    def process_batch(self, recv_at, from_client, packets, dequeue_ns):
        counters = self._counters
        stale = (dequeue_ns - recv_at) > self._unwrap_delay_ns
        if stale.any():
            counters.drop(DropReason.UNWRAP_DELAY, int(stale.sum()))
            fresh = ~stale
            recv_at, from_client, packets = recv_at[fresh], from_client[fresh], packets[fresh]
        n = len(packets)
        if n == 0:
            return
        keyset = self._keyset
        if keyset is None:
            counters.drop(DropReason.NO_MIX_KEYS, n)
            return
        result = self._result
        self._engine.unwrap(packets, n, keyset.keys, result)     # GIL released inside
        ok = result.status[:n] == 0
        counters.count(Event.UNWRAPPED, int(ok.sum()))
        eligible = ok & ((result.flags[:n] & FLAG_DUPLICATE) == 0)
        replayed = check_replays(result, n, keyset, eligible)
        cls = classify(result, n, from_client=from_client, recv_at_ns=recv_at, dequeue_ns=dequeue_ns,
                       now_ns=time.monotonic_ns(), replayed=replayed, is_provider=self._is_provider,
                       routes=self._routes, endpoints=self._endpoints_set)
        counters.drop_many(np.bincount(cls.reason, minlength=NO_DROP + 1))
        self._push_forward(cls, packets)
        self._push_local(cls, result, recv_at, packets)

    def _push_forward(self, cls, packets):
        idx = np.flatnonzero(cls.kind == KIND_FORWARD)
        if len(idx) == 0:
            return
        frames = [encode_schedule_meta(cls.deadline_ms[idx], cls.hop[idx]), packets[idx]]
        try:
            self._to_sched.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self._counters.drop(DropReason.SCHEDULER_QUEUE_FULL, len(idx))
            return
        self._counters.count(Event.FORWARD, len(idx))

    def _push_local(self, cls, result, recv_at, packets):
        local = (cls.kind != KIND_FORWARD) & (cls.kind != KIND_NONE)
        idx = np.flatnonzero(local)
        if len(idx) == 0:
            return
        batch = LocalBatch(kind=cls.kind[idx], recv_at_ns=recv_at[idx], delay_ms=result.delay_ms[idx],
                           recipient=result.recipient[idx], surb_id=result.surb_id[idx],
                           packets=packets[idx])
        try:
            self._to_local.send_multipart(batch.to_frames(), flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self._counters.drop(DropReason.LOCAL_QUEUE_FULL, len(idx))
            return
        for kind, count in zip(*np.unique(batch.kind, return_counts=True)):
            self._counters.count(_KIND_EVENT[int(kind)], int(count))
