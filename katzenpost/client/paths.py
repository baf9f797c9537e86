"""Path selection over a verified PKI document, as the reference client (and the mix decoy) do it.

A path is one node per hop with the public mix key of the epoch the packet will reach that hop
in, and the hop's routing commands: a NodeDelay drawn from Exp(Mu) (mean 1/Mu ms, plus 1 ms,
capped at MuMaxDelay) on every non-terminal hop and on the terminal hop of a forward packet that
carries a SURB (its SURB-ACK delay); the terminal hop gets the Recipient, and a SURB path the
SURBReply as well (Katzenpost "Mix Network" and "End-to-end" specifications; the reference's
sphinx/path package).

Shapes (layers 0..N-1 of the document's topology):
- client forward: source provider, one mix per layer, destination provider;
- SURB (reply) path, from a provider: one mix per layer, destination (a provider, or a mix of
  layer k: layers 0..k-1, then the mix);
- forward from a mix of layer k (decoy): layers k+1..N-1, then the destination provider.
The node a packet starts at is the first hop only on a client's forward path (the client's
provider unwraps it); elsewhere the origin sends the packet to the first hop itself.

Pure computation on the document: no I/O, no clock reads (the caller passes the start time).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from katzenpost.pki.descriptor import LAYER_PROVIDER, MixDescriptor
from katzenpost.pki.document import Document
from katzenpost.pki.epochtime import DEFAULT_CLOCK, EpochClock
from katzenpost.sphinx import NodeDelay, PathHop, Recipient, SURBReply, geometry

# Whole selections tried before giving up when a hop has no key for the epoch its packet will
# reach it in (the reference's path package tries 3 times too).
MAX_SELECTION_ATTEMPTS = 3


class PathError(ValueError):
    """No path can be built from this document (missing layer, provider, key or bad input)."""


@dataclass(frozen=True)
class Path:
    """A selected path. `hops` go to `sphinx.new_packet` / `new_surb` as they are."""

    hops: tuple[PathHop, ...]
    nodes: tuple[MixDescriptor, ...]
    delays_ms: tuple[int, ...]     # NodeDelay of each hop, 0 where the hop has none
    start: float                   # Unix seconds the packet leaves its origin
    end: float                     # start + all delays (the reference's `then`)

    @property
    def total_delay_ms(self) -> int:
        return sum(self.delays_ms)

    @property
    def first_hop(self) -> bytes:
        """Node ID the origin hands the packet to."""
        return self.hops[0].id


class _Draw:
    """Uniform choices and exponential delays from a `random.Random`-like object or a numpy
    Generator (tests inject a seeded one; the default is the system CSPRNG)."""

    __slots__ = ("_index", "_exp")

    def __init__(self, rng):
        if rng is None:
            rng = random.SystemRandom()
        if hasattr(rng, "expovariate"):
            self._index = rng.randrange
            self._exp = lambda mean: rng.expovariate(1.0 / mean)
        elif hasattr(rng, "exponential") and hasattr(rng, "integers"):
            self._index = lambda n: int(rng.integers(n))
            self._exp = lambda mean: float(rng.exponential(mean))
        else:
            raise TypeError(f"paths: rng must be a random.Random or numpy Generator, got {type(rng).__name__}")

    def index(self, n: int) -> int:
        return self._index(n)

    def exp(self, mean: float) -> float:
        return self._exp(mean)


def as_draw(rng) -> _Draw:
    """Wrap an rng once when many paths are drawn from it (any function here accepts either)."""
    return rng if isinstance(rng, _Draw) else _Draw(rng)


def pad_recipient(recipient) -> bytes:
    """A recipient (user name, endpoint or 64-byte ID) as the 64-byte NUL-padded Recipient ID."""
    if isinstance(recipient, str):
        recipient = recipient.encode()
    recipient = bytes(recipient)
    if not recipient or len(recipient) > geometry.RECIPIENT_ID_LENGTH:
        raise PathError(f"paths: recipient must be 1..{geometry.RECIPIENT_ID_LENGTH} bytes, got {len(recipient)}")
    return recipient.ljust(geometry.RECIPIENT_ID_LENGTH, b"\x00")


def provider_named(doc: Document, name: str) -> MixDescriptor:
    """The provider called `name` in `doc` (PathError if the document lists none)."""
    for desc in doc.providers:
        if desc.name == name:
            return desc
    raise PathError(f"paths: provider '{name}' is not in the document of epoch {doc.epoch}")


def select_nodes(doc: Document, src: MixDescriptor, dst: MixDescriptor, *, from_client: bool,
                 forward: bool, rng=None) -> list[MixDescriptor]:
    """The nodes of one path (see the module docstring for the shapes), one random mix a layer."""
    draw = as_draw(rng)
    layers = doc.topology
    if forward:
        if not dst.is_provider:
            raise PathError(f"paths: forward destination '{dst.name}' is not a provider")
        if from_client and not src.is_provider:
            raise PathError(f"paths: client source '{src.name}' is not a provider")
        first = 0 if src.is_provider else _layer_of(doc, src) + 1
        stop = len(layers)
    else:
        if not src.is_provider:
            raise PathError(f"paths: SURB source '{src.name}' is not a provider")
        first = 0
        stop = len(layers) if dst.is_provider else _layer_of(doc, dst)
    nodes = [src] if forward and from_client else []
    for index in range(first, stop):
        layer = layers[index]
        if not layer:
            raise PathError(f"paths: layer {index} of the document of epoch {doc.epoch} has no nodes")
        nodes.append(layer[draw.index(len(layer))])
    nodes.append(dst)
    if len(nodes) > geometry.NR_HOPS:
        raise PathError(f"paths: {len(nodes)} hops, a Sphinx packet has at most {geometry.NR_HOPS}")
    return nodes


def _layer_of(doc: Document, mix: MixDescriptor) -> int:
    """The topology layer listing `mix` (its descriptor's own layer field is not trusted)."""
    for index, layer in enumerate(doc.topology):
        if any(d.identity_key == mix.identity_key for d in layer):
            return index
    raise PathError(f"paths: mix '{mix.name}' is in no layer of the document of epoch {doc.epoch}")


def new_path(doc: Document, src: MixDescriptor, dst: MixDescriptor, recipient, *, from_client: bool,
             forward: bool, start: float, with_surb: bool = False, surb_id: bytes | None = None,
             rng=None, clock: EpochClock = DEFAULT_CLOCK) -> Path:
    """Select nodes and draw delays; each hop's key is the one of the epoch at the time the
    packet reaches it (start + the delays before it). Reselects up to MAX_SELECTION_ATTEMPTS
    times when a node lacks that key. A forward path `with_surb` has a terminal NodeDelay; a
    SURB path (`forward=False`) needs `surb_id`."""
    draw = as_draw(rng)
    recipient = pad_recipient(recipient)
    if not forward and (surb_id is None or len(surb_id) != geometry.SURB_ID_LENGTH):
        raise PathError(f"paths: a SURB path needs a {geometry.SURB_ID_LENGTH}-byte SURB ID")
    if doc.mu <= 0:
        raise PathError(f"paths: the document of epoch {doc.epoch} has Mu {doc.mu}, not > 0")
    missing = None
    for _ in range(MAX_SELECTION_ATTEMPTS):
        nodes = select_nodes(doc, src, dst, from_client=from_client, forward=forward, rng=draw)
        path, missing = _assign(doc, nodes, recipient, None if forward else bytes(surb_id),
                                forward and with_surb, start, draw, clock)
        if path is not None:
            return path
    raise PathError(f"paths: node '{missing[0]}' has no mix key for epoch {missing[1]} "
                    f"(after {MAX_SELECTION_ATTEMPTS} selections)")


def _assign(doc, nodes, recipient, surb_id, terminal_delay, start, draw, clock):
    """(Path, None), or (None, (node name, epoch)) when a node lacks the key it needs."""
    mean = 1.0 / doc.mu
    hops, delays = [], []
    then = start
    last = len(nodes) - 1
    for index, node in enumerate(nodes):
        epoch = clock.epoch_at(int(then))[0]
        key = node.mix_keys.get(epoch)
        if key is None:
            return None, (node.name, epoch)
        commands = []
        delay = 0
        if index != last or terminal_delay:
            delay = int(draw.exp(mean)) + 1
            if doc.mu_max_delay > 0:
                delay = min(delay, doc.mu_max_delay)
            then += delay / 1000.0
            commands.append(NodeDelay(delay))
        if index == last:
            commands.append(Recipient(recipient))
            if surb_id is not None:
                commands.append(SURBReply(surb_id))
        hops.append(PathHop(node.identity_key, key, commands))
        delays.append(delay)
    return Path(tuple(hops), tuple(nodes), tuple(delays), start, then), None


def forward_path(doc: Document, src_provider: MixDescriptor, dst_provider: MixDescriptor, recipient, *,
                 with_surb: bool, start: float, rng=None, clock: EpochClock = DEFAULT_CLOCK) -> Path:
    """A client's forward path: its provider, one mix per layer, the recipient's provider. With
    `with_surb` the terminal hop has a NodeDelay (the provider's SURB-ACK delay)."""
    return new_path(doc, src_provider, dst_provider, recipient, from_client=True, forward=True,
                    with_surb=with_surb, start=start, rng=rng, clock=clock)


def surb_path(doc: Document, reply_from: MixDescriptor, reply_to: MixDescriptor, recipient, surb_id: bytes, *,
              start: float, rng=None, clock: EpochClock = DEFAULT_CLOCK) -> Path:
    """The return path of a SURB: from the provider that will send the reply (not a hop), one mix
    per layer, to `reply_to` (the client's provider, or a mix for its own decoy loops)."""
    return new_path(doc, reply_from, reply_to, recipient, surb_id=surb_id, from_client=False,
                    forward=False, start=start, rng=rng, clock=clock)
