"""The non-voting authority's state machine (docs/authority.md): uploads, documents, bootstrap.

Sans-I/O: every entry point takes the Unix time; sockets live in `daemon.py` and the document
itself is built by `generate.py`. It stores no certificate it has not verified, restored ones
included.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from katzenpost.authority.config import AuthorityConfig
from katzenpost.authority.generate import GenerationError, generate_document
from katzenpost.authority.store import AuthorityStore
from katzenpost.pki import cert
from katzenpost.pki.descriptor import (
    LAYER_PROVIDER,
    DescriptorError,
    MixDescriptor,
    verify_and_parse_descriptor,
)
from katzenpost.pki.document import (
    Document,
    DocumentError,
    sign_document,
    verify_and_parse_document,
)
from katzenpost.pki.epochtime import EpochClock
from katzenpost.wire.commands import ConsensusStatus, DescriptorStatus

log = logging.getLogger("katzenpost.authority")


@dataclass(frozen=True)
class PostResult:
    status: DescriptorStatus
    reason: str
    stored: bool = False  # True when this post added a new descriptor


class AuthorityState:
    def __init__(self, cfg: AuthorityConfig, identity_seed: bytes, identity_public: bytes,
                 store: AuthorityStore, clock: EpochClock, rng: random.Random | None = None):
        self.cfg = cfg
        self._seed = identity_seed
        self.identity_public = identity_public
        self.store = store
        self.clock = clock
        self._rng = rng or random.SystemRandom()
        self._mixes = {n.identity_key for n in cfg.mixes}
        self._providers = {n.identity_key: n.identifier for n in cfg.providers}
        self.descriptors: dict[int, dict[bytes, MixDescriptor]] = {}
        self.documents: dict[int, Document] = {}
        self.genesis_epoch = 0
        self.bootstrap_epoch = 0
        self.prior_srv: list[bytes] = []

    # --- whitelist -------------------------------------------------------------------------

    def is_whitelisted(self, identity: bytes) -> bool:
        return identity in self._mixes or identity in self._providers

    def _is_authorized(self, desc: MixDescriptor) -> bool:
        if desc.layer == 0:
            return desc.identity_key in self._mixes
        if desc.layer == LAYER_PROVIDER:
            return self._providers.get(desc.identity_key) == desc.name
        return False

    # --- restore ---------------------------------------------------------------------------

    def restore(self, now: float) -> None:
        """Reload now-1..now+1 from the store, re-verifying everything, then bootstrap."""
        epoch = self.clock.epoch_at(now)[0]
        for e in (epoch - 1, epoch, epoch + 1):
            self._restore_document(e, now)
            self._restore_descriptors(e, now)
        current = self.documents.get(epoch)
        if current is None:
            self.bootstrap_epoch = self.genesis_epoch = epoch
            self.prior_srv = []
            log.info("No document for epoch %d at start: bootstrapping at epoch %d", epoch, epoch)
        else:
            self.genesis_epoch = current.genesis_epoch
            self.bootstrap_epoch = 0
            self.prior_srv = list(current.prior_shared_random)
            log.info("Restored the document for epoch %d (genesis epoch %d)", epoch,
                     self.genesis_epoch)

    def _restore_document(self, epoch: int, now: float) -> None:
        raw = self.store.document(epoch)
        if raw is None:
            return
        try:
            doc = verify_and_parse_document(raw, self.identity_public, now)
        except DocumentError as exc:
            log.warning("Discarding the persisted document for epoch %d: %s", epoch, exc)
            return
        if doc.epoch != epoch:
            log.warning("Discarding the persisted document for epoch %d: it is for %d", epoch,
                        doc.epoch)
            return
        self.documents[epoch] = doc

    def _restore_descriptors(self, epoch: int, now: float) -> None:
        for identity, raw in self.store.descriptors(epoch).items():
            try:
                desc = verify_and_parse_descriptor(identity, raw, epoch, now)
            except DescriptorError as exc:
                log.warning("Discarding a persisted descriptor for epoch %d: %s", epoch, exc)
                continue
            if not self._is_authorized(desc):
                log.warning("Discarding the persisted descriptor of '%s' for epoch %d: no longer"
                            " authorized", desc.name, epoch)
                self.store.delete_descriptor(epoch, identity)
                continue
            self.descriptors.setdefault(epoch, {})[identity] = desc

    # --- uploads ---------------------------------------------------------------------------

    def post_descriptor(self, epoch: int, payload: bytes, peer_identity: bytes,
                        now: float) -> PostResult:
        """onPostDescriptor of the reference non-voting authority, step by step (docs/authority.md)."""
        current = self.clock.epoch_at(now)[0]
        if epoch not in (current - 1, current, current + 1):
            return PostResult(DescriptorStatus.INVALID, f"epoch {epoch} is not within "
                              f"{current - 1}..{current + 1}")
        try:
            desc = verify_and_parse_descriptor(peer_identity, payload, epoch, now)
        except DescriptorError as exc:
            return PostResult(DescriptorStatus.INVALID, str(exc))
        if desc.identity_key != peer_identity:
            return PostResult(DescriptorStatus.FORBIDDEN, "descriptor identity is not the peer's")
        if not self._is_authorized(desc):
            return PostResult(DescriptorStatus.FORBIDDEN,
                              f"'{desc.name}' (layer {desc.layer}) is not authorized")
        stored = self.descriptors.get(epoch, {}).get(peer_identity)
        if stored is not None:
            if stored.raw == desc.raw:
                return PostResult(DescriptorStatus.OK, "identical descriptor already stored")
            return PostResult(DescriptorStatus.CONFLICT, "a different descriptor is stored")
        if epoch in self.documents:
            return PostResult(DescriptorStatus.CONFLICT, f"document for epoch {epoch} exists")
        self.store.put_descriptor(epoch, peer_identity, desc.raw)
        self.descriptors.setdefault(epoch, {})[peer_identity] = desc
        return PostResult(DescriptorStatus.OK, f"stored descriptor of '{desc.name}'", stored=True)

    # --- serving ---------------------------------------------------------------------------

    def document_for_epoch(self, epoch: int, now: float) -> tuple[ConsensusStatus, bytes]:
        """documentForEpoch: the reply to GetConsensus."""
        doc = self.documents.get(epoch)
        if doc is not None:
            return ConsensusStatus.OK, doc.raw
        current, elapsed, _ = self.clock.epoch_at(now)
        bootstrapping = current in (self.bootstrap_epoch, self.bootstrap_epoch + 1)
        if epoch == current:
            return (ConsensusStatus.NOT_FOUND if bootstrapping else ConsensusStatus.GONE), b""
        if epoch == current + 1:
            if current == self.bootstrap_epoch:
                return ConsensusStatus.NOT_FOUND, b""
            if elapsed > 7 * self.clock.period / 8:
                return ConsensusStatus.GONE, b""
            return ConsensusStatus.NOT_FOUND, b""
        if epoch < current:
            return ConsensusStatus.GONE, b""
        return ConsensusStatus.NOT_FOUND, b""

    # --- the worker's tick -----------------------------------------------------------------

    def tick(self, now: float) -> list[int]:
        """Generate what is due, prune what is old; returns the epochs generated."""
        current, _, till = self.clock.epoch_at(now)
        generated = []
        if (current in (self.bootstrap_epoch, self.bootstrap_epoch + 1)
                and current not in self.documents and self._all_nodes_posted(current)):
            if self._generate(current, now):
                generated.append(current)
        if current + 1 not in self.documents and self._next_document_due(current + 1, till):
            if self._generate(current + 1, now):
                generated.append(current + 1)
        self._prune(current)
        return generated

    def _next_document_due(self, epoch: int, till: float) -> bool:
        """The rule of docs/authority.md: with less than half of the epoch left once every
        whitelisted node has posted for `epoch` (the reference's deadline); otherwise at the
        straggler deadline, 3P/8 before the end, when nodes start fetching the next document.
        Either way only with the minimum of nodes."""
        if till >= self.clock.period / 2 or not self._enough_nodes(epoch):
            return False
        return self._all_nodes_posted(epoch) or till <= self.straggler_deadline()

    def straggler_deadline(self) -> float:
        """Seconds before the epoch's end from which the next document no longer waits for
        whitelisted nodes that have not posted (3P/8: nodes fetch it from then on)."""
        return 3 * self.clock.period / 8

    def next_deadline(self, now: float) -> float:
        """Seconds from `now` to the next moment the rule can change its answer (till crosses
        P/2 or 3P/8), so the worker wakes there and not only at its tick."""
        _, elapsed, till = self.clock.epoch_at(now)
        marks = (self.clock.period / 2, self.straggler_deadline())
        ahead = [till - mark for mark in marks if till - mark >= 0]
        # Past both marks: the next epoch's first mark.
        return min(ahead) if ahead else till + self.clock.period - max(marks)

    def _all_nodes_posted(self, epoch: int) -> bool:
        posted = set(self.descriptors.get(epoch, {}))
        return posted >= (self._mixes | set(self._providers))

    def _enough_nodes(self, epoch: int) -> bool:
        descs = self.descriptors.get(epoch, {}).values()
        providers = sum(1 for d in descs if d.layer == LAYER_PROVIDER)
        mixes = sum(1 for d in descs if d.layer == 0)
        needed = self.cfg.debug.layers * self.cfg.debug.min_nodes_per_layer
        return providers >= 1 and mixes >= needed

    def _prune(self, current: int) -> None:
        cutoff = current - 3
        for table in (self.descriptors, self.documents):
            for epoch in [e for e in table if e < cutoff]:
                del table[epoch]
        self.store.prune_before(cutoff)

    # --- document generation ---------------------------------------------------------------

    def _generate(self, epoch: int, now: float) -> bool:
        try:
            doc = generate_document(
                epoch, self.descriptors.get(epoch, {}).values(), self.cfg.parameters,
                layers=self.cfg.debug.layers, authority_identity=self.identity_public,
                genesis_epoch=self.genesis_epoch, previous=self.documents.get(epoch - 1),
                prior_shared_random=self.prior_srv, rng=self._rng)
        except GenerationError as exc:
            log.warning("%s", exc)
            return False
        raw = sign_document(self._seed, doc, self.clock, now)
        try:
            signed = verify_and_parse_document(raw, self.identity_public, now)
        except (DocumentError, cert.CertificateError) as exc:
            log.error("Generated an invalid document for epoch %d: %s", epoch, exc)
            return False
        self.store.put_document(epoch, raw)
        self.documents[epoch] = signed
        self.prior_srv = list(doc.prior_shared_random)
        log.info("Generated the document for epoch %d: %d mixes in %d layers, %d providers",
                 epoch, sum(len(layer) for layer in doc.topology), len(doc.topology),
                 len(doc.providers))
        return True
