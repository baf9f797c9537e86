"""The node's PKI worker and document cache (the reference server's PKI worker and its
AuthenticateConnection; the Katzenpost PKI specification).

Fetches documents for the epochs a node needs, publishes its descriptor (retrying within the
epoch, unlike the reference), and answers the rest of the node: peer authentication, outgoing
destinations, raw documents for clients. It runs on the node's event loop and owns no keys
beyond the identity seed it signs with.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Callable, Protocol

from katzenpost.pki.client import (
    DocumentGoneError,
    DocumentNotFoundError,
    PKIClient,
    PKIClientError,
    PostConflictError,
    PostRejectedError,
)
from katzenpost.pki.descriptor import LAYER_PROVIDER, MIX_KEYS_PER_DESCRIPTOR, MixDescriptor
from katzenpost.pki.document import Document
from katzenpost.pki.epochtime import EpochClock
from katzenpost.sphinx.geometry import NODE_ID_LENGTH
from katzenpost.tasks import cancel_and_wait
from katzenpost.wire.commands import ConsensusStatus
from katzenpost.wire.handshake import PeerCredentials

log = logging.getLogger("katzenpost.pki")

FIRST_RUN_DELAY = 5.0


class MixKeyStore(Protocol):
    """What the PKI worker needs from the node's mix-key store."""

    def generate(self, base_epoch: int) -> bool:
        """Ensure keys exist for base_epoch .. base_epoch+2; True if any key was created."""
        ...

    def prune(self) -> bool:
        """Destroy keys of epochs that are over; True if any key was removed."""
        ...

    def public_key(self, epoch: int) -> bytes | None:
        """The X25519 public key for `epoch`, or None if there is none."""
        ...


@dataclass(frozen=True)
class NodeSelf:
    """This node as it publishes itself (filled in by the server from its config and keys)."""

    identifier: str
    identity_seed: bytes = field(repr=False)  # a secret: never in a log line
    identity_public: bytes
    link_public: bytes
    addresses: dict[str, list[str]]
    is_provider: bool = False
    registration_http_addresses: list[str] | None = None
    kaetzchen_for_pki: Callable[[], dict | None] | None = None


class PKICacheError(ValueError):
    """A fetched document that this node cannot use (we are missing or listed wrongly)."""


@dataclass
class CachedDocument:
    """A verified document with this node's view of it (pkicache entry)."""

    doc: Document
    self_desc: MixDescriptor
    incoming: dict[bytes, MixDescriptor] = field(default_factory=dict)
    outgoing: dict[bytes, MixDescriptor] = field(default_factory=dict)
    listed: frozenset[bytes] = frozenset()  # every identity in the document (Go's GetByID)

    @classmethod
    def build(cls, doc: Document, node: NodeSelf) -> "CachedDocument":
        self_desc = doc.node_by_identity(node.identity_public)
        if self_desc is None:
            raise PKICacheError(f"pki: this node is not in the document for epoch {doc.epoch}")
        if self_desc.name != node.identifier:
            raise PKICacheError(f"pki: the document lists this node as '{self_desc.name}'")
        if self_desc.link_key != node.link_public:
            raise PKICacheError("pki: the document lists a different link key for this node")
        layers = len(doc.topology)
        if node.is_provider != (self_desc.layer == LAYER_PROVIDER):
            raise PKICacheError(f"pki: self has the wrong layer {self_desc.layer}")
        if not node.is_provider and self_desc.layer >= layers:
            raise PKICacheError(f"pki: self layer {self_desc.layer} is out of range")
        entry = cls(doc, self_desc)
        entry.incoming = _by_identity(_incoming_peers(doc, self_desc.layer))
        entry.outgoing = _by_identity(_outgoing_peers(doc, self_desc.layer))
        entry.listed = frozenset(d.identity_key for d in doc.all_nodes())
        return entry


def _by_identity(descs: list[MixDescriptor]) -> dict[bytes, MixDescriptor]:
    return {d.identity_key: d for d in descs}


def _incoming_peers(doc: Document, layer: int) -> list[MixDescriptor]:
    if layer == LAYER_PROVIDER:
        return doc.topology[-1]
    return doc.providers if layer == 0 else doc.topology[layer - 1]


def _outgoing_peers(doc: Document, layer: int) -> list[MixDescriptor]:
    if layer == LAYER_PROVIDER:
        return doc.topology[0]
    return doc.providers if layer == len(doc.topology) - 1 else doc.topology[layer + 1]


class PKIWorker:
    def __init__(self, node: NodeSelf, client: PKIClient, mix_keys: MixKeyStore,
                 clock: EpochClock, *, on_new_documents: Callable[[], None] | None = None,
                 on_epoch_change: Callable[[Document], None] | None = None,
                 on_mix_keys_changed: Callable[[], None] | None = None) -> None:
        self.node = node
        self.client = client
        self.mix_keys = mix_keys
        self.clock = clock
        self.on_new_documents = on_new_documents
        self.on_epoch_change = on_epoch_change
        self.on_mix_keys_changed = on_mix_keys_changed
        self.documents: dict[int, CachedDocument] = {}
        self.failed: set[int] = set()
        self.last_published_epoch = 0           # highest epoch whose publication is settled
        self.published: set[int] = set()        # epochs whose post ended (Ok, Conflict, Rejected)
        self._retry_current: set[int] = set()   # the current epoch, if its post at start failed
        self._started = False
        self._missed_deadline_logged = -1
        self._last_epoch_handled = -1
        self._task: asyncio.Task | None = None

    # --- the loop --------------------------------------------------------------------------

    def _now(self, now: float | None) -> float:
        return self.clock.unix_now() if now is None else now

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pki-worker")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait([task], "PKI worker")

    async def _run(self) -> None:
        tick = self.clock.worker_tick()
        await asyncio.sleep(min(FIRST_RUN_DELAY, tick))
        while True:
            try:
                await self.tick()
            except Exception as exc:  # the worker must keep running whatever one tick does
                log.error("PKI worker tick failed: %r", exc)
            await asyncio.sleep(tick)

    async def tick(self, now: float | None = None) -> None:
        current_time = self._now(now)
        epoch, _, till = self.clock.epoch_at(current_time)
        stored = await self._fetch_missing(epoch, till, current_time)
        self.failed = {e for e in self.failed if epoch - 2 <= e <= epoch + 1}
        if stored:
            for old in [e for e in self.documents if e < epoch - 2]:
                del self.documents[old]
            if self.on_new_documents is not None:
                self.on_new_documents()
        await self._publish_if_needed(epoch, till, current_time)
        if epoch != self._last_epoch_handled and epoch in self.documents:
            self._last_epoch_handled = epoch
            if self.on_epoch_change is not None:
                self.on_epoch_change(self.documents[epoch].doc)

    # --- fetching --------------------------------------------------------------------------

    def _epochs_to_fetch(self, epoch: int, till: float) -> list[int]:
        wanted = [epoch + 1] if till < 3 * self.clock.period / 8 else []
        wanted += [epoch, epoch - 1, epoch - 2]
        return [e for e in wanted if e >= 0 and e not in self.documents and e not in self.failed]

    async def _fetch_missing(self, epoch: int, till: float, now: float) -> bool:
        stored = False
        for wanted in self._epochs_to_fetch(epoch, till):
            try:
                doc = await self.client.get_document(wanted, now)
            except DocumentGoneError as exc:
                log.warning("Failed to fetch PKI for epoch %d: %s", wanted, exc)
                self.failed.add(wanted)
                continue
            except DocumentNotFoundError as exc:
                # The next epoch's document is not out yet: voting authorities publish it at
                # 7P/8, and the node polls from 5P/8 on, as the reference does.
                log.log(logging.DEBUG if wanted > epoch else logging.WARNING,
                        "Failed to fetch PKI for epoch %d: %s", wanted, exc)
                continue
            except PKIClientError as exc:
                log.warning("Failed to fetch PKI for epoch %d: %s", wanted, exc)
                continue
            try:
                self.documents[wanted] = CachedDocument.build(doc, self.node)
            except PKICacheError as exc:
                log.warning("Document for epoch %d is unusable: %s", wanted, exc)
                self.failed.add(wanted)
                continue
            log.info("Stored the PKI document for epoch %d", wanted)
            stored = True
        return stored

    # --- publishing ------------------------------------------------------------------------

    def publication_deadline(self) -> float:
        """Seconds before the rollover after which the descriptor for the next epoch is late:
        3P/8, when the authority builds the next document with whoever has posted."""
        return 3 * self.clock.period / 8

    def _publication_epochs(self, epoch: int, till: float) -> list[int]:
        """Epochs to post for in this tick (docs/node.md, "Publication").

        At start: the current epoch and, in the same tick, the next one, whatever time is left:
        the authority decides (Conflict if E+1's document already exists), and a node, or a
        whole test network, started late in an epoch would otherwise leave E+1 with no document
        at all. Afterwards the next epoch, at the first tick of each epoch; an epoch whose post
        failed in transport is retried on later ticks while more than 3P/8 of the current epoch
        is left (the current one: while it is current). After the deadline the next epoch is
        given up, logged once, and the epoch after it is published at the first tick of the
        next epoch."""
        targets = []
        if not self._started:
            self._started = True
            return [e for e in (epoch, epoch + 1) if e not in self.published]
        if epoch in self._retry_current and epoch not in self.published:
            targets.append(epoch)
        upcoming = epoch + 1
        if upcoming not in self.published:
            if till > self.publication_deadline():
                targets.append(upcoming)
            elif self._missed_deadline_logged != upcoming:
                self._missed_deadline_logged = upcoming
                log.warning("missed publication deadline for epoch: %d", upcoming)
        return targets

    def _rotate_mix_keys(self, epoch: int) -> None:
        """Keys for epoch..epoch+2 exist, old ones are gone; the node re-shadows on a change."""
        created = self.mix_keys.generate(epoch)
        pruned = self.mix_keys.prune()
        if (created or pruned) and self.on_mix_keys_changed is not None:
            self.on_mix_keys_changed()

    def build_descriptor(self, epoch: int) -> MixDescriptor:
        self._rotate_mix_keys(epoch)
        mix_keys = {}
        for e in range(epoch, epoch + MIX_KEYS_PER_DESCRIPTOR):
            key = self.mix_keys.public_key(e)
            if key is None:
                raise PKIClientError(f"pki: key for epoch {e} that was scheduled for "
                                     "publication got pruned")
            mix_keys[e] = key
        node = self.node
        kaetzchen = None
        if node.is_provider and node.kaetzchen_for_pki is not None:
            kaetzchen = node.kaetzchen_for_pki() or None
        return MixDescriptor(
            name=node.identifier, identity_key=node.identity_public, link_key=node.link_public,
            mix_keys=mix_keys, addresses={t: list(a) for t, a in node.addresses.items()},
            kaetzchen=kaetzchen,
            registration_http_addresses=(node.registration_http_addresses
                                         if node.is_provider else None),
            layer=LAYER_PROVIDER if node.is_provider else 0)

    async def _publish_if_needed(self, epoch: int, till: float, now: float) -> None:
        # Only the epochs around now: after the civil clock stepped back, a post made while it
        # ran ahead (refused by the authority as out of its window) is not taken as done.
        self.published = {e for e in self.published if epoch - 1 <= e <= epoch + 1}
        self._retry_current = {e for e in self._retry_current if e == epoch}
        for target in self._publication_epochs(epoch, till):
            if await self._publish(target, now):
                self.published.add(target)
                self.last_published_epoch = max(self.last_published_epoch, target)
            elif target == epoch:
                self._retry_current.add(target)

    async def _publish(self, target: int, now: float) -> bool:
        """One post; True when it ended the attempts for `target` (Ok, Conflict, Rejected)."""
        try:
            desc = self.build_descriptor(target)
        except Exception as exc:
            # The mix-key store could not make the keys (a full DataDir, say): this post is
            # skipped and retried on the next tick, and the rest of this tick still runs.
            log.warning("Failed to post descriptor for epoch %d (will retry): %s", target, exc)
            return False
        try:
            await self.client.post_descriptor(target, self.node.identity_seed, desc, now)
        except PostConflictError as exc:
            # Already stored (our earlier post whose reply was lost) or too late: either
            # way another attempt cannot change anything this epoch.
            log.warning("Descriptor for epoch %d not accepted: %s", target, exc)
        except PostRejectedError as exc:
            # The authority refused it (Invalid, Forbidden): the same post would be refused again.
            log.error("Failed to post to PKI: %s", exc)
        except (PKIClientError, ValueError, OSError) as exc:
            # Transport errors: retried on the next tick, and the rest of this tick still runs.
            log.warning("Failed to post descriptor for epoch %d (will retry): %s", target, exc)
            return False
        else:
            log.info("Posted descriptor for epoch %d", target)
        return True

    # --- what the rest of the node asks ----------------------------------------------------

    def _document_epochs(self, epoch: int, till: float) -> list[int]:
        early = [epoch + 1] if till < self.clock.period / 8 else []
        return early + [epoch, epoch - 1, epoch - 2]

    def authenticate_connection(self, creds: PeerCredentials, is_outgoing: bool,
                                now: float | None = None) -> tuple[bool, bool]:
        """(valid, can_send) for a mix peer, by the documents around now (AuthenticateConnection)."""
        ad = creds.additional_data
        if len(ad) != NODE_ID_LENGTH:
            return False, False
        current_time = self._now(now)
        epoch, _, till = self.clock.epoch_at(current_time)
        newest_link_key = None
        valid_next = False
        for doc_epoch in self._document_epochs(epoch, till):
            entry = self.documents.get(doc_epoch)
            if entry is None:
                continue
            desc = (entry.outgoing if is_outgoing else entry.incoming).get(ad)
            if desc is None:
                continue
            if newest_link_key is None:
                newest_link_key = desc.link_key
            if creds.public_key not in (desc.link_key, newest_link_key):
                log.warning("Peer %s presented a link key that is not in the document for "
                            "epoch %d", ad.hex()[:16], doc_epoch)
                continue
            if doc_epoch == epoch:
                return True, True
            if doc_epoch == epoch + 1:
                if not is_outgoing and till < self.clock.early_send_window():
                    return True, True
                valid_next = True
                continue
            # An older document counts only while the peer is still listed (in any role) in
            # the current one, as the reference's GetByID does.
            current = self.documents.get(epoch)
            if current is not None and ad in current.listed:
                return True, True
        return valid_next, False

    def till_verdicts_change(self, now: float | None = None) -> float:
        """Seconds until authenticate_connection's answers can change with no new document:
        the next of the early-send window opening, the next epoch's document coming into use
        (P/8 before the rollover) and the rollover itself."""
        _, _, till = self.clock.epoch_at(self._now(now))
        moments = (till - self.clock.early_send_window(), till - self.clock.period / 8, till)
        return min(m for m in moments if m > 0)

    def outgoing_destinations(self, now: float | None = None) -> dict[bytes, MixDescriptor]:
        """Next-hop nodes to keep connections to: the union over the documents in use."""
        current_time = self._now(now)
        epoch, _, till = self.clock.epoch_at(current_time)
        current = self.documents.get(epoch)
        result: dict[bytes, MixDescriptor] = {}
        for doc_epoch in self._document_epochs(epoch, till):
            entry = self.documents.get(doc_epoch)
            if entry is None:
                continue
            for identity, desc in entry.outgoing.items():
                if doc_epoch < epoch and (current is None or identity not in current.listed):
                    continue
                result.setdefault(identity, desc)
        return result

    def get_raw_consensus(self, epoch: int, now: float | None = None) -> tuple[ConsensusStatus, bytes]:
        """What a provider answers a client's GetConsensus."""
        if epoch in self.failed:
            return ConsensusStatus.GONE, b""
        entry = self.documents.get(epoch)
        if entry is not None:
            return ConsensusStatus.OK, entry.doc.raw
        current_time = self._now(now)
        if epoch < self.clock.epoch_at(current_time)[0] - 1:
            return ConsensusStatus.GONE, b""
        return ConsensusStatus.NOT_FOUND, b""

    def current_document(self, now: float | None = None) -> Document | None:
        current_time = self._now(now)
        entry = self.documents.get(self.clock.epoch_at(current_time)[0])
        return None if entry is None else entry.doc
