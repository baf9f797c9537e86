"""Client-side Sphinx messages: forward messages with a SURB-ACK, unreliable messages, Kaetzchen
requests with a SURB for the reply, and the matching and decryption of what comes back.

Payload layout of the reference client (BlockSphinxPlaintext, Katzenpost "End-to-end" and
"Kaetzchen" specifications): `flags (1: a SURB follows, 0: padding) | 0x00 | SURB (556 bytes) or
zeros | user data zero-padded to 1490 bytes` = the 2048-byte Sphinx payload. A provider answers
a SURB with a SURB-ACK (2048 zero bytes) or, for a Kaetzchen, `0x01 0x00 | response` padded.

The sender keeps a `SURBContext` per SURB (its ID, decryption keys, expected arrival); a
`ReplyBook` matches replies to them by SURB ID and counts the ones that never came.
Packet creation is the Sphinx core's (`katzenpost.sphinx`): the batch forms (`new_round_trips`,
`new_messages`, `new_kaetzchen_requests`) make all their SURBs in one call and all their packets
in another, so the core runs the X25519s of eight packets per lane pass; a single packet is a
batch of one.
"""
from __future__ import annotations

import heapq
import os
from dataclasses import dataclass, field

from katzenpost import sphinx
from katzenpost.client import paths
from katzenpost.pki.descriptor import MixDescriptor
from katzenpost.pki.document import Document
from katzenpost.pki.epochtime import DEFAULT_CLOCK, EpochClock
from katzenpost.sphinx import SphinxError, geometry

FLAG_PADDING = 0
FLAG_SURB = 1
_HEADER = geometry.SPHINX_PLAINTEXT_HEADER_LENGTH
_ZEROS = bytes(geometry.FORWARD_PAYLOAD_LENGTH)
_NO_SURB = bytes((FLAG_PADDING, 0)) + bytes(geometry.SURB_LENGTH)
_WITH_SURB = bytes((FLAG_SURB, 0))

KIND_ACK = "ack"            # a SURB-ACK for a message to a user
KIND_REPLY = "reply"        # a Kaetzchen (or other service) reply


class MessageError(ValueError):
    """Input that cannot become a message (oversized body, bad SURB ID)."""


def plaintext_block(body, surb: bytes | None = None) -> bytes:
    """The 2048-byte Sphinx payload: header, SURB or zeros, `body` zero-padded to 1490 bytes."""
    body = bytes(body)
    _check_body(body)
    if surb is None:
        head = _NO_SURB
    elif len(surb) != geometry.SURB_LENGTH:
        raise MessageError(f"message: SURB of {len(surb)} bytes, expected {geometry.SURB_LENGTH}")
    else:
        head = _WITH_SURB + surb
    return head + body + _ZEROS[:geometry.USER_FORWARD_PAYLOAD_LENGTH - len(body)]


def reply_body(plaintext: bytes) -> bytes:
    """The response inside a decrypted service reply (after `0x01 0x00`; still zero-padded).
    A SURB-ACK (all zeros) gives 2046 zero bytes."""
    if len(plaintext) < _HEADER:
        raise MessageError(f"message: reply of {len(plaintext)} bytes has no header")
    return bytes(plaintext[_HEADER:])


@dataclass(frozen=True)
class SURBContext:
    """What the sender keeps for one SURB: its ID, the keys to decrypt the reply, what it is for,
    and when the reply should arrive (Unix seconds, before any slack)."""

    surb_id: bytes
    keys: bytes = field(repr=False)
    kind: str
    eta: float
    sent_at: float


@dataclass(frozen=True)
class Outgoing:
    """A packet ready to send: hand `packet` to node `first_hop` (the client's provider, or the
    first mix for a mix's own loops). `surb` is None for an unreliable message."""

    packet: bytes = field(repr=False)
    first_hop: bytes
    forward: paths.Path = field(repr=False)
    reply: paths.Path | None = field(repr=False)
    surb: SURBContext | None


def new_surb_id(entropy=os.urandom) -> bytes:
    return _read(entropy, geometry.SURB_ID_LENGTH)


def _read(entropy, n):
    data = bytes(entropy(n))
    if len(data) != n:
        raise MessageError(f"message: entropy source gave {len(data)} of {n} bytes")
    return data


def with_surb(forward: paths.Path, reply: paths.Path, body, *, surb_id: bytes, kind: str,
              entropy=os.urandom) -> Outgoing:
    """A packet along `forward` whose payload carries a SURB for `reply` (whose terminal hop
    must carry `surb_id`); the keys stay in the returned context."""
    return with_surbs([(forward, reply, body, surb_id, kind)], entropy=entropy)[0]


def with_surbs(items, *, entropy=os.urandom) -> list[Outgoing]:
    """`with_surb` for many (forward, reply, body, surb_id, kind) at once: the SURBs, then the
    packets, each made in one batch call into the Sphinx core (eight X25519s a lane pass under
    the lane backend). Every body is checked before any packet is made."""
    items = list(items)
    for _, _, body, _, _ in items:
        _check_body(body)
    surbs = sphinx.new_surbs([reply.hops for _, reply, _, _, _ in items], rng=entropy)
    payloads = [plaintext_block(body, surb) for (_, _, body, _, _), (surb, _) in zip(items, surbs)]
    packets = sphinx.new_packets([forward.hops for forward, _, _, _, _ in items], payloads, rng=entropy)
    return [Outgoing(packet, forward.first_hop, forward, reply,
                     SURBContext(surb_id=surb_id, keys=keys, kind=kind, eta=reply.end, sent_at=forward.start))
            for packet, (forward, reply, _, surb_id, kind), (_, keys) in zip(packets, items, surbs)]


def _check_body(body) -> None:
    if len(body) > geometry.USER_FORWARD_PAYLOAD_LENGTH:
        raise MessageError(f"message: body of {len(body)} bytes, at most {geometry.USER_FORWARD_PAYLOAD_LENGTH}")


def _checked_surb_id(surb_id, entropy):
    if surb_id is None:
        return new_surb_id(entropy)
    surb_id = bytes(surb_id)
    if len(surb_id) != geometry.SURB_ID_LENGTH:
        raise MessageError(f"message: SURB ID of {len(surb_id)} bytes, expected {geometry.SURB_ID_LENGTH}")
    return surb_id


@dataclass(frozen=True)
class RoundTrip:
    """One packet with a SURB to build in a batch (`new_round_trips`): `body` to `recipient`
    (a user, or a Kaetzchen endpoint) at `provider`, sent at `start` (Unix seconds: the path's
    epochs and the reply's ETA follow from it). `kind` is KIND_ACK for a message to a user,
    KIND_REPLY for a service request."""

    provider: MixDescriptor
    recipient: str | bytes
    body: bytes = field(repr=False)
    start: float
    kind: str = KIND_ACK
    surb_id: bytes | None = None


def new_round_trips(doc: Document, *, src_provider: MixDescriptor, reply_to, trips, rng=None,
                    clock: EpochClock = DEFAULT_CLOCK, entropy=os.urandom) -> list[Outgoing]:
    """Packets for many `RoundTrip`s at once, each with a SURB back to `reply_to` at
    `src_provider`: paths drawn per trip as `new_message` does, then all SURBs and all packets
    in two batch calls. One bad trip (no path, oversized body, bad SURB ID) raises before any
    packet is made. With a seeded `rng`/`entropy` the bytes differ from a loop of
    `new_message` (the batch reads its randomness in another order); the formats are the same."""
    draw = paths.as_draw(rng)
    items = []
    for trip in trips:
        surb_id = _checked_surb_id(trip.surb_id, entropy)
        forward = paths.forward_path(doc, src_provider, trip.provider, trip.recipient, with_surb=True,
                                     start=trip.start, rng=draw, clock=clock)
        reply = paths.surb_path(doc, trip.provider, src_provider, reply_to, surb_id, start=forward.end,
                                rng=draw, clock=clock)
        items.append((forward, reply, bytes(trip.body), surb_id, trip.kind))
    return with_surbs(items, entropy=entropy)


def new_messages(doc: Document, *, src_provider: MixDescriptor, dst_provider: MixDescriptor, recipient,
                 reply_to, bodies, starts, rng=None, clock: EpochClock = DEFAULT_CLOCK,
                 entropy=os.urandom) -> list[Outgoing]:
    """`new_message` for many bodies to one recipient, the i-th sent at `starts[i]`, built in
    one batch (see `new_round_trips`)."""
    bodies, starts = list(bodies), list(starts)
    if len(bodies) != len(starts):
        raise MessageError(f"message: {len(bodies)} bodies but {len(starts)} start times")
    return new_round_trips(doc, src_provider=src_provider, reply_to=reply_to, rng=rng, clock=clock,
                           entropy=entropy,
                           trips=[RoundTrip(dst_provider, recipient, body, start) for body, start in zip(bodies, starts)])


def new_kaetzchen_requests(doc: Document, *, src_provider: MixDescriptor, service_provider: MixDescriptor,
                           endpoint, reply_to, bodies, starts, rng=None, clock: EpochClock = DEFAULT_CLOCK,
                           entropy=os.urandom) -> list[Outgoing]:
    """`new_kaetzchen_request` for many bodies to one service, built in one batch."""
    bodies, starts = list(bodies), list(starts)
    if len(bodies) != len(starts):
        raise MessageError(f"message: {len(bodies)} bodies but {len(starts)} start times")
    return new_round_trips(doc, src_provider=src_provider, reply_to=reply_to, rng=rng, clock=clock,
                           entropy=entropy, trips=[RoundTrip(service_provider, endpoint, body, start, KIND_REPLY)
                                                   for body, start in zip(bodies, starts)])


def new_message(doc: Document, *, src_provider: MixDescriptor, dst_provider: MixDescriptor, recipient,
                reply_to, body, start: float, rng=None, clock: EpochClock = DEFAULT_CLOCK,
                surb_id: bytes | None = None, entropy=os.urandom) -> Outgoing:
    """A message to `recipient` at `dst_provider` with a SURB-ACK back to `reply_to` (the
    sender's own recipient ID at `src_provider`): ToUser at the far provider, which stores the
    body and returns the SURB after the terminal hop's NodeDelay."""
    return new_round_trips(doc, src_provider=src_provider, reply_to=reply_to, rng=rng, clock=clock,
                           entropy=entropy,
                           trips=[RoundTrip(dst_provider, recipient, body, start, KIND_ACK, surb_id)])[0]


def new_kaetzchen_request(doc: Document, *, src_provider: MixDescriptor, service_provider: MixDescriptor,
                          endpoint, reply_to, body, start: float, rng=None,
                          clock: EpochClock = DEFAULT_CLOCK, surb_id: bytes | None = None,
                          entropy=os.urandom) -> Outgoing:
    """A request to the Kaetzchen `endpoint` (e.g. the provider's `loop` or `echo` endpoint as
    its descriptor advertises it) with a SURB for the reply back to `reply_to`."""
    return new_round_trips(doc, src_provider=src_provider, reply_to=reply_to, rng=rng, clock=clock,
                           entropy=entropy,
                           trips=[RoundTrip(service_provider, endpoint, body, start, KIND_REPLY, surb_id)])[0]


def new_unreliable_message(doc: Document, *, src_provider: MixDescriptor, dst_provider: MixDescriptor,
                           recipient, body, start: float, rng=None, clock: EpochClock = DEFAULT_CLOCK,
                           entropy=os.urandom) -> Outgoing:
    """A message without a SURB (UnreliableToUser at the far provider: no terminal delay)."""
    forward = paths.forward_path(doc, src_provider, dst_provider, recipient, with_surb=False,
                                 start=start, rng=rng, clock=clock)
    packet = sphinx.new_packet(forward.hops, plaintext_block(body), rng=entropy)
    return Outgoing(packet, forward.first_hop, forward, None, None)


def kaetzchen_endpoint(provider: MixDescriptor, capability: str) -> str:
    """The endpoint a provider advertises for `capability` (MessageError if it has none)."""
    params = (provider.kaetzchen or {}).get(capability)
    endpoint = params.get("endpoint") if isinstance(params, dict) else None
    if not isinstance(endpoint, str) or not endpoint:
        raise MessageError(f"message: provider '{provider.name}' advertises no '{capability}' endpoint")
    return endpoint


def decrypt_reply(payload, keys: bytes) -> bytes:
    """The 2048-byte plaintext of a SURB reply payload (2064 bytes, tag included).
    Raises SphinxError when it does not authenticate under `keys`."""
    return sphinx.decrypt_surb_payload(payload, keys)


@dataclass(frozen=True)
class Reply:
    """A reply matched to its SURB: the context and the 2048-byte plaintext."""

    context: SURBContext
    plaintext: bytes = field(repr=False)

    @property
    def body(self) -> bytes:
        return reply_body(self.plaintext)


class ReplyBook:
    """The SURBs a sender is waiting on, by SURB ID. Not thread-safe: one owner."""

    def __init__(self):
        self._pending: dict[bytes, SURBContext] = {}
        self._by_eta: list[tuple[float, bytes]] = []     # a heap; entries of answered SURBs linger
        self.delivered = 0
        self.failed = 0
        self.lost = 0

    def __len__(self):
        return len(self._pending)

    def add(self, context: SURBContext) -> None:
        if context.surb_id in self._pending:
            raise MessageError("message: SURB ID already pending")
        self._pending[context.surb_id] = context
        heapq.heappush(self._by_eta, (context.eta, context.surb_id))

    def pending(self, surb_id: bytes) -> SURBContext | None:
        return self._pending.get(bytes(surb_id))

    def open(self, surb_id, payload) -> Reply | None:
        """Match and decrypt one reply. None for an unknown SURB ID (nothing is consumed) or a
        payload that fails to decrypt under the matched keys (the SURB is consumed: a reply
        comes once)."""
        context = self._pending.pop(bytes(surb_id), None)
        if context is None:
            return None
        try:
            plaintext = decrypt_reply(payload, context.keys)
        except SphinxError:
            self.failed += 1
            return None
        self.delivered += 1
        return Reply(context, plaintext)

    def expire(self, now: float, slack: float = 0.0) -> list[SURBContext]:
        """Forget and return the SURBs whose reply is overdue (eta + slack < now): lost."""
        overdue = []
        heap = self._by_eta
        while heap and heap[0][0] + slack < now:
            eta, surb_id = heapq.heappop(heap)
            context = self._pending.get(surb_id)
            if context is not None and context.eta == eta:
                del self._pending[surb_id]
                overdue.append(context)
        if len(heap) > 2 * len(self._pending) + 64:       # answered SURBs' entries pile up
            self._by_eta = [(c.eta, c.surb_id) for c in self._pending.values()]
            heapq.heapify(self._by_eta)
        self.lost += len(overdue)
        return overdue
