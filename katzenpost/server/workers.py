"""Crypto worker threads: batch unwrap and replay check with the GIL released, then classification.

Workers talk to the rest of the node only through zmq inproc sockets and never block on a full
queue: a packet that cannot be handed on is dropped and counted with its reason.
"""
import dataclasses
import logging
import threading
import time

import numpy as np
import zmq

from katzenpost._core import classify as core_classify
from katzenpost.pki.epochtime import DEFAULT_PERIOD
from katzenpost.server.control import ControlChannel, ControlledThread
from katzenpost.server.counters import DropReason, Event
from katzenpost.sphinx import geometry

log = logging.getLogger("katzenpost.server.workers")
# Plain ints: the enum members cost an enum __and__ per readiness check on the hot path.
ZMQ_EVENTS = int(zmq.EVENTS)
ZMQ_POLLIN = int(zmq.POLLIN)

PACKET_LENGTH = geometry.PACKET_LENGTH
EPOCH_PERIOD_MS = DEFAULT_PERIOD * 1000   # the reference epoch period P, unless Debug.EpochPeriod
NUM_MIX_KEYS = 3                          # mix keys a node holds: epochs E-1, E, E+1
MAX_NODE_DELAY_MS = NUM_MIX_KEYS * EPOCH_PERIOD_MS
MS = 1_000_000                            # nanoseconds per millisecond
US = 1_000                                # nanoseconds per microsecond: the unit of forward deadlines

# Packet kinds after classification (the reference crypto worker's cases), also the `kind` of a LocalBatch row.
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

# Packet batches travel as ONE zmq frame, packets first and the per-packet fields after them,
# ending in the count: one send and one receive per batch (each zmq call gives up the GIL).
# The ingress tail is as long as the scheduler's (12 bytes a packet): when every packet of a
# batch goes forward, the worker writes deadlines and hops over RecvAt/from-client and sends the
# very frame it received on to the scheduler (no copy, no new buffer).
TAIL_BYTES_PER_PACKET = 12


def _tail_offset(n):
    """Where the per-packet fields start: after n packets, rounded up to 8 for aligned int64s."""
    return (n * PACKET_LENGTH + 7) & ~7


def ingress_message_size(n):
    return _tail_offset(n) + TAIL_BYTES_PER_PACKET * n + 8


def write_ingress_tail(buf, n, recv_at_ns, from_client):
    """Write the fields after n packets already in buf[:n*L]: int64 RecvAt (monotonic ns) x n,
    uint8 from-client x n, 3n spare bytes, int64 n. `recv_at_ns` and `from_client` are buffers
    or sequences of at least n items. Returns the message length."""
    view = memoryview(buf)
    off = _tail_offset(n)
    # The alignment padding would otherwise carry a previous, longer batch's packet bytes.
    view[n * PACKET_LENGTH:off] = bytes(off - n * PACKET_LENGTH)
    view[off:off + 8 * n] = memoryview(np.asarray(recv_at_ns, dtype=np.int64)).cast("B")[:8 * n]
    view[off + 8 * n:off + 9 * n] = memoryview(np.asarray(from_client, dtype=np.uint8)).cast("B")[:n]
    end = off + TAIL_BYTES_PER_PACKET * n
    view[off + 9 * n:end] = bytes(end - off - 9 * n)  # the spare bytes, likewise
    view[end:end + 8] = int(n).to_bytes(8, "little")
    return end + 8


def encode_ingress(packets, recv_at_ns, from_client):
    """One ingress message from uint8[n, L] packets (tests and tools; the I/O side fills in place)."""
    n = len(packets)
    buf = bytearray(ingress_message_size(n))
    buf[:n * PACKET_LENGTH] = np.ascontiguousarray(packets, np.uint8).tobytes()
    write_ingress_tail(buf, n, recv_at_ns, from_client)
    return bytes(buf)


def _count(buf, per_packet):
    size = len(buf)
    if size < 8:
        raise ValueError(f"workers: batch message of {size} bytes is too short")
    n = int.from_bytes(buf[size - 8:], "little", signed=True)
    if not 0 < n <= (1 << 24) or size != _tail_offset(n) + per_packet * n + 8:
        raise ValueError(f"workers: malformed batch message ({size} bytes, count {n})")
    return n


def decode_ingress(buf):
    """(recv_at int64[n], from_client uint8[n], packets uint8[n, L] writable) from one message."""
    return _ingress_views(buf)[:3]


def _ingress_views(buf):
    """decode_ingress plus an int32[n] view of the spare tail bytes (where the hops go when the
    frame is forwarded in place)."""
    n = _count(buf, TAIL_BYTES_PER_PACKET)
    off = _tail_offset(n)
    raw = np.frombuffer(buf, dtype=np.uint8)
    packets = raw[:n * PACKET_LENGTH].reshape(n, PACKET_LENGTH)
    recv_at = raw[off:off + 8 * n].view(np.int64)
    from_client = raw[off + 8 * n:off + 9 * n]
    hop_space = raw[off + 8 * n:off + 12 * n].view(np.int32)
    return recv_at, from_client, packets, hop_space


def encode_schedule(packets, rows, deadline_us, hop):
    """One message for the scheduler: packets[rows] (or all if rows is None), int64 deadlines
    (monotonic us), int32 hop indices, int64 count."""
    k = len(deadline_us)
    off = _tail_offset(k)
    out = np.empty(off + 12 * k + 8, dtype=np.uint8)
    out[k * PACKET_LENGTH:off] = 0  # alignment padding: never what the memory held before
    body = out[:k * PACKET_LENGTH].reshape(k, PACKET_LENGTH)
    if rows is None:
        body[:] = packets
    else:
        np.take(packets, rows, axis=0, out=body)
    out[off:off + 8 * k] = np.asarray(deadline_us, np.int64).view(np.uint8)
    out[off + 8 * k:off + 12 * k] = np.asarray(hop, np.int32).view(np.uint8)
    out[off + 12 * k:] = np.array([k], np.int64).view(np.uint8)
    return out


def decode_schedule(buf):
    """(deadline_us int64[k], hop int32[k], packets uint8[k, L]) from a message for the scheduler."""
    k = _count(buf, TAIL_BYTES_PER_PACKET)
    off = _tail_offset(k)
    raw = np.frombuffer(buf, dtype=np.uint8)                  # one buffer export, then views
    packets = raw[:k * PACKET_LENGTH].reshape(k, PACKET_LENGTH)
    deadline = raw[off:off + 8 * k].view(np.int64)
    hop = raw[off + 8 * k:off + 12 * k].view(np.int32)
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
    dispatch_ns: int = 0      # monotonic ns when the worker handed the batch on (DispatchAt)

    def __len__(self):
        return len(self.kind)

    def to_frames(self):
        meta = b"".join((np.int64(self.dispatch_ns).tobytes(),
                         self.kind.astype(np.uint8).tobytes(), self.recv_at_ns.astype(np.int64).tobytes(),
                         self.delay_ms.astype(np.uint32).tobytes(),
                         np.ascontiguousarray(self.recipient, np.uint8).tobytes(),
                         np.ascontiguousarray(self.surb_id, np.uint8).tobytes()))
        return [meta, np.ascontiguousarray(self.packets)]

    @classmethod
    def from_frames(cls, meta, data):
        k, rest = divmod(len(data), PACKET_LENGTH)
        row = 1 + 8 + 4 + geometry.RECIPIENT_ID_LENGTH + geometry.SURB_ID_LENGTH
        if rest or len(meta) != 8 + row * k:
            raise ValueError(f"workers: malformed local batch ({len(meta)} meta / {len(data)} data bytes)")
        dispatch_ns = int(np.frombuffer(meta, dtype=np.int64, count=1)[0])
        off = 8

        def take(dtype, count, width=1):
            nonlocal off
            arr = np.frombuffer(meta, dtype=dtype, count=count * width, offset=off)
            off += arr.nbytes
            return arr.reshape(count, width) if width > 1 else arr

        return cls(kind=take(np.uint8, k), recv_at_ns=take(np.int64, k), delay_ms=take(np.uint32, k),
                   recipient=take(np.uint8, k, geometry.RECIPIENT_ID_LENGTH),
                   surb_id=take(np.uint8, k, geometry.SURB_ID_LENGTH),
                   packets=np.frombuffer(data, dtype=np.uint8).reshape(k, PACKET_LENGTH),
                   dispatch_ns=dispatch_ns)


# ---------------------------------------------------------------- read-only tables handed to workers

class RouteTable:
    """Immutable map from 32-byte next-hop node IDs to the scheduler's int32 hop indices.

    `ids` (uint8[R, 32], rows sorted bytewise) and `index` (int32[R]) feed `_core.classify`.
    """

    def __init__(self, hops=None):
        hops = dict(hops or {})
        for node_id, index in hops.items():
            if len(node_id) != geometry.NODE_ID_LENGTH or not 0 <= index < 2**31:
                raise ValueError(f"workers: bad route {node_id!r} -> {index}")
        self._hops = {bytes(k): int(v) for k, v in hops.items()}
        ordered = sorted(self._hops)
        self.ids = np.frombuffer(b"".join(ordered), np.uint8).reshape(len(ordered), geometry.NODE_ID_LENGTH).copy()
        self.index = np.array([self._hops[k] for k in ordered], dtype=np.int32)

    def __len__(self):
        return len(self._hops)

    def lookup(self, node_id):
        """Hop index of `node_id`, or -1 (not for the hot path)."""
        return self._hops.get(bytes(node_id), -1)


class EndpointSet:
    """Immutable set of 64-byte recipient IDs (Kaetzchen and plugin endpoints, NUL padded).

    `ids` (uint8[E, 64], rows sorted bytewise) feeds `_core.classify`.
    """

    def __init__(self, endpoints=()):
        width = geometry.RECIPIENT_ID_LENGTH
        padded = set()
        for ep in endpoints:
            ep = bytes(ep)
            if not 0 < len(ep) <= width:
                raise ValueError(f"workers: Kaetzchen endpoint must be 1..{width} bytes: {ep!r}")
            padded.add(ep.ljust(width, b"\0"))
        self._set = frozenset(padded)
        ordered = sorted(padded)
        self.ids = np.frombuffer(b"".join(ordered), np.uint8).reshape(len(ordered), width).copy()

    def __contains__(self, recipient):
        return bytes(recipient).ljust(geometry.RECIPIENT_ID_LENGTH, b"\0") in self._set


@dataclasses.dataclass(frozen=True)
class MixKeySet:
    """Raw X25519 mix private keys to try, in order, each with its replay filter (thread-safe)."""

    keys: np.ndarray = dataclasses.field(repr=False)    # uint8[M, 32], M in 1..3; secret
    filters: tuple = dataclasses.field(repr=False)      # M objects with check_and_add(tags, mask, out)

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
        """Returns how many packets unwrapped."""
        return self._unwrap(packets, n, keys, result)


# ---------------------------------------------------------------- classification

@dataclasses.dataclass
class Classification:
    """Per-row view of one classified batch (tests and diagnostics; workers use the raw outputs)."""

    reason: np.ndarray        # uint8[n], NO_DROP or a DropReason
    kind: np.ndarray          # uint8[n], KIND_* (KIND_NONE for dropped rows)
    deadline_us: np.ndarray   # int64[n], monotonic us (forward rows)
    hop: np.ndarray           # int32[n], -1 except forward rows
    drop_counts: np.ndarray   # int64[REASON_SLOTS]


def classify(result, n, *, from_client, recv_at_ns, dequeue_ns, now_ns, replayed, is_provider, routes,
             endpoints, impl=core_classify):
    """Run `impl.classify_batch` (the compiled core, or its reference twin) and spread it per row."""
    out = _ClassifyBuffers(max(n, 1))
    n_fwd, n_local = impl.classify_batch(
        result, n, np.ascontiguousarray(recv_at_ns, np.int64), np.ascontiguousarray(from_client, np.uint8),
        np.ascontiguousarray(replayed, np.uint8), dequeue_ns, now_ns, is_provider, routes.ids, routes.index,
        endpoints.ids, out.drop_counts, out.fwd_rows, out.fwd_deadline, out.fwd_hop, out.local_rows,
        out.local_kind, out.row_reason)
    kind = np.full(n, KIND_NONE, np.uint8)
    deadline = np.zeros(n, np.int64)
    hop = np.full(n, -1, np.int32)
    rows = out.fwd_rows[:n_fwd]
    kind[rows], deadline[rows], hop[rows] = KIND_FORWARD, out.fwd_deadline[:n_fwd], out.fwd_hop[:n_fwd]
    kind[out.local_rows[:n_local]] = out.local_kind[:n_local]
    return Classification(reason=out.row_reason[:n].copy(), kind=kind, deadline_us=deadline, hop=hop,
                          drop_counts=out.drop_counts)


class _ClassifyBuffers:
    """Output arrays of `classify_batch` for batches of up to `capacity`, reused per batch."""

    def __init__(self, capacity):
        self.drop_counts = np.zeros(core_classify.REASON_SLOTS, np.int64)
        self.fwd_rows = np.zeros(capacity, np.int32)
        self.fwd_deadline = np.zeros(capacity, np.int64)
        self.fwd_hop = np.zeros(capacity, np.int32)
        self.local_rows = np.zeros(capacity, np.int32)
        self.local_kind = np.zeros(capacity, np.uint8)
        self.row_reason = np.zeros(capacity, np.uint8)
        self.masks = np.zeros((geometry.MAX_TRIAL_KEYS, capacity), np.uint8)
        self.seen = np.zeros(capacity, np.uint8)


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


class CryptoWorker(ControlledThread):
    """One crypto worker: pulls ingress batches, unwraps, checks replays, classifies, pushes on."""

    def __init__(self, index, *, context, endpoints, engine, counters, batch_capacity, is_provider,
                 unwrap_delay_ms, hwm, max_node_delay_ms=MAX_NODE_DELAY_MS):
        super().__init__(name=f"katzenpost-crypto-{index}", daemon=True)
        self.index = index
        self._ctx = context
        self._endpoints = endpoints
        self._engine = engine
        self._counters = counters
        self.counters = counters                     # read-only for others (monitoring, in-flight)
        self._capacity = batch_capacity
        self._is_provider = is_provider
        self._unwrap_delay_ns = unwrap_delay_ms * MS
        self._max_node_delay_ms = max_node_delay_ms
        self._hwm = hwm
        self._control = ControlChannel(context, f"{endpoints.sphinx}-ctl-{index}")
        self._keyset = None
        self.started_ok = threading.Event()

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
            ctl = open_socket(zmq.PAIR, self._control.address)
            self._result = self._engine.new_result(self._capacity)
            self._classifier = core_classify.BatchClassifier(self._result, self._counters.drops,
                                                             self._is_provider, self._max_node_delay_ms)
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
        # Plain zmq_poll and an EVENTS check before each recv: the Poller sugar and a zmq.Again
        # exception per batch cost more than the classification itself on small batches.
        items = [(pull, zmq.POLLIN), (ctl, zmq.POLLIN)]
        while True:
            zmq.zmq_poll(items, -1)
            if ctl.getsockopt(ZMQ_EVENTS) & ZMQ_POLLIN:
                while ctl.getsockopt(ZMQ_EVENTS) & ZMQ_POLLIN:
                    ctl.recv()
                if self._apply_control():
                    self._drain(pull, limit=None)
                    return
            # Bounded drain, then look at control again: a halt is never starved.
            self._drain(pull, limit=64)

    def _drain(self, pull, limit):
        count = 0
        while (limit is None or count < limit) and pull.getsockopt(ZMQ_EVENTS) & ZMQ_POLLIN:
            self._process_safely(pull.recv(copy=False))
            count += 1

    def _apply_control(self):
        """Apply queued control messages; True when a halt was requested."""
        return self._control.apply({
            "keys": self._set_keyset,
            "routes": lambda routes: self._classifier.set_routes(routes.ids, routes.index),
            "endpoints": lambda endpoints: self._classifier.set_endpoints(endpoints.ids),
        }, f"crypto worker {self.index}")

    def _set_keyset(self, keyset):
        self._keyset = keyset

    def _process_safely(self, frame):
        dequeue_ns = time.monotonic_ns()
        try:
            recv_at, from_client, packets, hop_space = _ingress_views(frame.buffer)
        except Exception:
            log.exception("crypto worker %d: malformed ingress batch dropped", self.index)
            self._counters.count(Event.WORKER_EXCEPTIONS)
            return
        self._counters.count(Event.DEQUEUED, len(packets))
        try:
            self.process_batch(recv_at, from_client, packets, dequeue_ns, (frame, hop_space))
        except Exception:
            log.exception("crypto worker %d: batch of %d packets failed", self.index, len(packets))
            self._counters.count(Event.WORKER_EXCEPTIONS)
            self._counters.drop(DropReason.WORKER_ERROR, len(packets))

    def process_batch(self, recv_at, from_client, packets, dequeue_ns, in_place=None):
        """One batch; `in_place` = (received frame, its int32 hop space) lets an all-forward batch
        go on to the scheduler in the frame it came in."""
        counters = self._counters
        if len(recv_at) and dequeue_ns - int(recv_at.min()) > self._unwrap_delay_ns:
            stale = (dequeue_ns - recv_at) > self._unwrap_delay_ns
            counters.drop(DropReason.UNWRAP_DELAY, int(stale.sum()))
            fresh = ~stale
            recv_at, from_client, packets = recv_at[fresh], from_client[fresh], packets[fresh]
            in_place = None                            # the rows are copies now
        n = len(packets)
        if n == 0:
            return
        keyset = self._keyset
        if keyset is None:
            counters.drop(DropReason.NO_MIX_KEYS, n)
            return
        result, clf = self._result, self._classifier
        ok = self._engine.unwrap(packets, n, keyset.keys, result)     # GIL released inside
        clf.replay_masks(n)
        seen, masks, tags = clf.seen[:n], clf.masks, result.tags[:n]
        for j, replay_filter in enumerate(keyset.filters):      # masks are disjoint: one seen array
            replay_filter.check_and_add(tags, masks[j, :n], seen)
        n_fwd, n_local = clf.classify(n, recv_at, from_client, dequeue_ns, time.monotonic_ns())
        if ok is None:                             # an engine that does not report it
            ok = n - int(np.count_nonzero(result.status[:n]))
        counters.count(Event.UNWRAPPED, ok)
        if n_local:
            self._push_local(result, recv_at, packets, n_local)
        if n_fwd:                                  # last: it may overwrite recv_at in place
            self._push_forward(packets, n, n_fwd, recv_at, in_place)

    def _push_forward(self, packets, n, n_fwd, recv_at, in_place):
        clf = self._classifier
        if in_place is not None and n_fwd == n:
            # The ingress frame already is a scheduler message once its tail is rewritten.
            frame, hop_space = in_place
            recv_at[:] = clf.fwd_deadline_us[:n]
            hop_space[:] = clf.fwd_hop[:n]
            message, copy = frame, False
        else:
            message, copy = encode_schedule(packets, None if n_fwd == n else clf.fwd_rows[:n_fwd],
                                            clf.fwd_deadline_us[:n_fwd], clf.fwd_hop[:n_fwd]), True
        try:
            self._to_sched.send(message, flags=zmq.NOBLOCK, copy=copy)
        except zmq.Again:
            self._counters.drop(DropReason.SCHEDULER_QUEUE_FULL, n_fwd)
            return
        self._counters.count(Event.FORWARD, n_fwd)

    def _push_local(self, result, recv_at, packets, n_local):
        rows = self._classifier.local_rows[:n_local]
        kind = self._classifier.local_kind[:n_local].copy()
        batch = LocalBatch(kind=kind, recv_at_ns=recv_at[rows], delay_ms=result.delay_ms[rows],
                           recipient=result.recipient[rows], surb_id=result.surb_id[rows],
                           packets=packets.take(rows, axis=0), dispatch_ns=time.monotonic_ns())
        try:
            self._to_local.send_multipart(batch.to_frames(), flags=zmq.NOBLOCK, copy=True)
        except zmq.Again:
            self._counters.drop(DropReason.LOCAL_QUEUE_FULL, n_local)
            return
        for code, count in enumerate(np.bincount(kind, minlength=KIND_DECOY_SURB_REPLY + 1)):
            if count:
                self._counters.count(_KIND_EVENT[code], int(count))
