"""Mix layer assignment of the voting authority (voting/server `generateTopology` and
`generateRandomTopology`), driven by the deterministic reader keyed with the SRV.

Every signer must produce the same layers, so all inputs are explicit and ordered: `mixes` in
the order the caller gives (the consensus uses ascending identity key), the previous document's
layers as parsed. Generic over the entry type: anything with an `identity_key` attribute
(`MixDescriptor` in practice). Pure: no clock, no I/O.
"""
from __future__ import annotations

from typing import Sequence, TypeVar

from katzenpost.voting.errors import TopologyError
from katzenpost.voting.rand import DeterministicRand

Entry = TypeVar("Entry")


def _check_layers(layers: int) -> None:
    if not isinstance(layers, int) or layers < 1:
        raise TopologyError(f"voting/topology: Layers must be >= 1, got {layers!r}")


def random_topology(mixes: Sequence[Entry], layers: int,
                    rng: DeterministicRand) -> list[list[Entry]]:
    """p = Perm(len(mixes)); mixes[p[i]] goes to layer i mod layers. With fewer mixes than
    layers some layer stays empty (the document is then not well formed; callers check)."""
    _check_layers(layers)
    result: list[list[Entry]] = [[] for _ in range(layers)]
    for index, pick in enumerate(rng.perm(len(mixes))):
        result[index % layers].append(mixes[pick])
    return result


def continuity_topology(mixes: Sequence[Entry], layers: int, previous: Sequence[Sequence],
                        rng: DeterministicRand) -> list[list[Entry]]:
    """Keep mixes in their previous layer (up to len(mixes) // layers each), fill short layers
    from the rest, deal what remains round-robin from layer 0.

    `previous` is the previous document's topology (layers of entries with `identity_key`).
    Per previous layer, Perm(len(layer)) chooses which of its nodes stay; the leftovers are then
    ordered by Perm(len(leftovers)). The reference takes the leftovers in Go map order, which
    is random, so Go authorities disagree among themselves whenever two or more mixes are left
    over; here the leftovers are in the order of `mixes` (ascending identity key for the
    consensus), which reproduces Go exactly with at most one leftover.
    """
    _check_layers(layers)
    if len(previous) > layers:
        # The reference indexes past its layer list and crashes; refuse cleanly instead.
        raise TopologyError(f"voting/topology: the previous document has {len(previous)} "
                            f"layers, more than the {layers} configured")
    target = len(mixes) // layers
    pending = {_identity(m): m for m in mixes}
    result: list[list[Entry]] = [[] for _ in range(layers)]
    for index, layer in enumerate(previous):
        for pick in rng.perm(len(layer)):
            if len(result[index]) >= target:
                break
            entry = pending.pop(_identity(layer[pick]), None)
            if entry is not None:
                result[index].append(entry)
    to_assign = list(pending.values())  # insertion order = the order of `mixes`
    order = rng.perm(len(to_assign))
    position = 0
    for index in range(len(previous)):
        while len(result[index]) < target:
            result[index].append(to_assign[order[position]])
            position += 1
    layer_index = 0
    for pick in order[position:]:
        result[layer_index].append(to_assign[pick])
        layer_index = (layer_index + 1) % layers
    return result


def _identity(entry) -> bytes:
    return bytes(entry.identity_key)


def build_topology(mixes: Sequence[Entry], layers: int, key: bytes,
                   previous: Sequence[Sequence] | None = None) -> list[list[Entry]]:
    """The topology of a vote (key = 32 zero bytes) or of the consensus (key = the SRV).

    `mixes` are taken in the order given (the consensus passes them in ascending identity-key
    order; a vote may use any order, its layout is not tallied). With the previous document's
    topology the continuity algorithm is used, else the random one."""
    rng = DeterministicRand(key)
    if previous is not None:
        return continuity_topology(mixes, layers, previous, rng)
    return random_topology(mixes, layers, rng)
