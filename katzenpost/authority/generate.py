"""One epoch's network document from a set of descriptors: the non-voting authority's
`generateDocument`, as a function of its inputs (no clock, no store, no key).

The daemon calls it when its timing rule says the document is due; tools and tests call it
directly. The result is unsigned: sign it with `katzenpost.pki.document.sign_document`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
from typing import Iterable, Sequence

from katzenpost.authority.config import Parameters
from katzenpost.pki.descriptor import LAYER_PROVIDER, MixDescriptor
from katzenpost.pki.document import Document

log = logging.getLogger("katzenpost.authority")

SRV_LABEL = b"shared-random"
WEEK_OF_EPOCHS = 504  # PriorSharedRandom rotates once a week of 20-minute epochs
UINT64 = 2**64


class GenerationError(ValueError):
    """The descriptors cannot make a valid document (no provider, or an empty layer)."""


def generate_document(epoch: int, descriptors: Iterable[MixDescriptor], parameters: Parameters,
                      *, layers: int, authority_identity: bytes, genesis_epoch: int,
                      previous: Document | None = None,
                      prior_shared_random: Sequence[bytes] = (),
                      rng: random.Random | None = None) -> Document:
    """The document for `epoch` (unsigned).

    `descriptors` are verified descriptors for `epoch` (mixes with layer 0, providers with
    layer 255); `previous` is the document of epoch-1 if there is one (mixes keep their layer,
    the shared random value chains from it); `prior_shared_random` is the previous document's
    PriorSharedRandom (empty at genesis). `rng` draws the shuffle and the reveal.
    """
    rng = rng or random.SystemRandom()
    descs = list(descriptors)
    providers = [d for d in descs if d.layer == LAYER_PROVIDER]
    mixes = [d for d in descs if d.layer == 0]
    if not providers or len(mixes) < layers:
        # The reference builds such a document anyway and then dies on its validation.
        raise GenerationError(f"not generating the document for epoch {epoch}: {len(mixes)} "
                              f"mixes for {layers} layers, {len(providers)} providers")
    srv = shared_random_value(epoch, authority_identity, genesis_epoch, previous, rng)
    return Document(epoch=epoch, genesis_epoch=genesis_epoch,
                    topology=topology(mixes, layers, previous, rng), providers=providers,
                    shared_random_value=srv,
                    prior_shared_random=next_prior_shared_random(
                        epoch, genesis_epoch, srv, prior_shared_random),
                    # The config's Parameters carry exactly the document's parameter fields.
                    **dataclasses.asdict(parameters))


def topology(mixes: Sequence[MixDescriptor], layers: int, previous: Document | None,
             rng: random.Random) -> list[list[MixDescriptor]]:
    """Mixes keep their previous layer up to len(mixes)/layers per layer; short layers are
    filled at random from the rest, and what remains is dealt round-robin from layer 0."""
    result: list[list[MixDescriptor]] = [[] for _ in range(layers)]
    rest = list(mixes)
    rng.shuffle(rest)
    if previous is not None:
        target = len(mixes) // layers
        prior_layer = {d.identity_key: i for i, layer in enumerate(previous.topology)
                       for d in layer}
        unplaced = []
        for desc in rest:
            layer = prior_layer.get(desc.identity_key)
            if layer is not None and layer < layers and len(result[layer]) < target:
                result[layer].append(desc)
            else:
                unplaced.append(desc)
        rest = unplaced
        for layer in result:
            while len(layer) < target and rest:
                layer.append(rest.pop())
    for index, desc in enumerate(rest):
        result[index % layers].append(desc)
    return result


def shared_random_value(epoch: int, authority_identity: bytes, genesis_epoch: int,
                        previous: Document | None, rng: random.Random) -> bytes:
    """SHA3-256(label ‖ epoch ‖ identity ‖ reveal ‖ previous SRV), zero-chained at genesis."""
    reveal = epoch.to_bytes(8, "big") + hashlib.sha3_256(rng.randbytes(32)).digest()
    chained = bytes(32)
    if epoch != genesis_epoch:
        if previous is None:
            log.warning("No document for epoch %d: chaining the SRV of %d from zero",
                        epoch - 1, epoch)
        else:
            chained = previous.shared_random_value
    return hashlib.sha3_256(SRV_LABEL + epoch.to_bytes(8, "big") + authority_identity
                            + reveal + chained).digest()


def next_prior_shared_random(epoch: int, genesis_epoch: int, srv: bytes,
                             prior: Sequence[bytes]) -> list[bytes]:
    """PriorSharedRandom: [srv, srv] at first, rotated once a week of epochs from genesis."""
    if not prior:
        return [srv, srv]
    if ((genesis_epoch - epoch) % UINT64) % WEEK_OF_EPOCHS == 0:
        return [srv, prior[0]]
    return list(prior)
