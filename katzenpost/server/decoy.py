"""Decoy loop traffic of a mix (`[Debug] SendDecoyTraffic`; mixes only), as the Go server does it.

With a document for the current epoch, the decoy sends a loop packet after Exp(LambdaM) ms
(capped at LambdaMMaxDelay): to a random provider advertising the `loop` Kaetzchen with a string
endpoint, along this mix's remaining layers, carrying a SURB that returns through layers
0..self-1 to this mix. The provider's loop service answers with the SURB; the answer reaches
this mix as a SURB reply (the pipeline's `DECOY_SURB_REPLY` rows), is matched by recipient (a
random 64-byte ID of this instance, compared in constant time) and SURB ID (BE64(start time) ||
BE64(random)), decrypted and counted delivered. A SURB still unanswered DecoySlack after its
expected arrival is counted lost. Packets go straight to the first hop (`dispatch_now`): no
local delay at the originating mix.

Everything runs on the node's asyncio thread.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import os

import numpy as np

from katzenpost.client import message, paths
from katzenpost.pki.document import Document
from katzenpost.server.workers import KIND_DECOY_SURB_REPLY, PACKET_LENGTH
from katzenpost.sphinx import geometry

log = logging.getLogger("katzenpost.server.decoy")

LOOP_CAPABILITY = "loop"
MAX_ATTEMPTS = 3                 # path selections per loop packet, as in Go
KIND_LOOP = "loop"
_PAYLOAD = slice(geometry.HEADER_LENGTH, geometry.HEADER_LENGTH + geometry.SPRP_PAYLOAD_LENGTH)
_BASE_LENGTH = 8                 # the SURB ID's first half: this instance's start time


class Decoy:
    """The decoy loop of one mix. The node calls `on_new_document` for each new PKI document,
    routes the pipeline's local batches to `on_local`, and reads `counters()` for metrics."""

    def __init__(self, *, identity_public: bytes, pipeline, clock, decoy_slack_ms: int, rng=None,
                 entropy=os.urandom):
        self._identity = bytes(identity_public)
        self._pipeline = pipeline
        self._clock = clock
        self._slack_s = decoy_slack_ms / 1000.0
        self._draw = paths.as_draw(rng)
        self._entropy = entropy
        self._recipient = bytes(entropy(geometry.RECIPIENT_ID_LENGTH))
        self._surb_id_base = int(clock.unix_now()).to_bytes(_BASE_LENGTH, "big")
        self._book = message.ReplyBook()
        self._docs: dict[int, tuple] = {}        # epoch -> (document, this mix's descriptor)
        self._loop = None
        self._timer = None
        self._counts = dict(sent=0, ignored_documents=0, send_failures=0, unmatched_replies=0)

    # ------------------------------------------------------------ life cycle
    def start(self) -> None:
        """Begin sending (on the running event loop) once a current document is known."""
        self._loop = asyncio.get_running_loop()
        self._rearm()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = None

    def counters(self) -> dict:
        counts = dict(self._counts)
        counts["delivered"] = self._book.delivered
        counts["lost"] = self._book.lost
        counts["undecryptable_replies"] = self._book.failed
        counts["pending"] = len(self._book)
        return counts

    # ------------------------------------------------------------ documents
    def on_new_document(self, doc: Document) -> None:
        """Keep `doc` if it is for the current or a later epoch and lists this node as a mix (else
        it is counted as ignored). The decoy sends only while it holds the current epoch's
        document; one fetched ahead takes over when its epoch begins."""
        current = self._clock.current()
        reason = self._unusable(doc, current)
        if reason:
            log.debug("decoy: ignoring the document of epoch %d (%s)", doc.epoch, reason)
            self._counts["ignored_documents"] += 1
        else:
            mine = next(d for layer in doc.topology for d in layer if d.identity_key == self._identity)
            self._docs[doc.epoch] = (doc, mine)
        for epoch in [e for e in self._docs if e < current]:
            del self._docs[epoch]
        if self._loop is not None:
            self._rearm()

    def _unusable(self, doc, current):
        if doc.epoch < current:
            return "a past epoch"
        if not any(d.identity_key == self._identity for layer in doc.topology for d in layer):
            return "this node is not a mix in it"
        if not doc.lambda_m > 0:
            return f"LambdaM {doc.lambda_m}"
        return None

    def _current(self):
        """(document, own descriptor) of the current epoch, or None."""
        return self._docs.get(self._clock.current())

    # ------------------------------------------------------------ timer
    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        current = self._current()
        later = [e for e in self._docs if e > self._clock.current()]
        if current is not None:
            doc = current[0]
            wait_ms = int(self._draw.exp(1.0 / doc.lambda_m))
            if doc.lambda_m_max_delay > 0:                       # 0 would make Go spin: no cap
                wait_ms = min(wait_ms, doc.lambda_m_max_delay)
        elif later:                                              # wake when that epoch begins
            wait_ms = max(0.0, 1000.0 * (self._clock.epoch_start(min(later)) - self._clock.unix_now()))
        elif len(self._book):
            wait_ms = max(1000.0 * self._slack_s, 1000.0)        # no traffic: still sweep lost SURBs
        else:
            return
        self._timer = self._loop.call_later(wait_ms / 1000.0, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            self.sweep()
            if self._current() is not None:
                self.send_loop()
        except Exception:                                       # the loop must outlive one bad tick
            log.exception("decoy: sending a loop packet failed")
            self._counts["send_failures"] += 1
        if self._loop is not None:
            self._rearm()

    def sweep(self) -> int:
        """Count SURBs whose reply is more than DecoySlack overdue as lost; returns how many."""
        lost = self._book.expire(self._clock.unix_now(), self._slack_s)
        if lost:
            log.debug("decoy: %d loop SURBs lost", len(lost))
        return len(lost)

    # ------------------------------------------------------------ sending
    def send_loop(self) -> bool:
        """Build and dispatch one loop packet now; False when there is no current document, no
        loop provider, or no path within MAX_ATTEMPTS."""
        current = self._current()
        if current is None:
            return False
        doc, mine = current
        targets = loop_targets(doc)
        if not targets:
            log.debug("decoy: no provider of epoch %d offers a loop endpoint", doc.epoch)
            self._counts["send_failures"] += 1
            return False
        provider, endpoint = targets[self._draw.index(len(targets))]
        out = self._build(doc, mine, provider, endpoint)
        if out is None:
            self._counts["send_failures"] += 1
            return False
        self._book.add(out.surb)
        packets = np.frombuffer(out.packet, dtype=np.uint8).reshape(1, PACKET_LENGTH)
        self._pipeline.dispatch_now(out.first_hop, packets)
        self._counts["sent"] += 1
        return True

    def _build(self, doc, mine, provider, endpoint):
        surb_id = self._surb_id_base + bytes(self._entropy(geometry.SURB_ID_LENGTH - _BASE_LENGTH))
        limit = 2 * self._clock.period
        for attempt in range(MAX_ATTEMPTS):
            now = self._clock.unix_now()
            try:
                forward = paths.new_path(doc, mine, provider, endpoint, from_client=False,
                                         forward=True, with_surb=True, start=now, rng=self._draw,
                                         clock=self._clock)
                back = paths.surb_path(doc, provider, mine, self._recipient, surb_id,
                                       start=forward.end, rng=self._draw, clock=self._clock)
            except paths.PathError as exc:
                log.debug("decoy: path attempt %d failed: %s", attempt + 1, exc)
                continue
            if back.end - now >= limit:            # would straddle too many epochs: reselect
                continue
            return message.with_surb(forward, back, b"", surb_id=surb_id, kind=KIND_LOOP,
                                     entropy=self._entropy)
        log.debug("decoy: no loop path after %d attempts", MAX_ATTEMPTS)
        return None

    # ------------------------------------------------------------ replies
    def on_local(self, batch) -> None:
        """SURB replies the pipeline delivered to this mix (`LocalBatch`); other rows are ignored."""
        rows = np.flatnonzero(np.asarray(batch.kind) == KIND_DECOY_SURB_REPLY)
        # Loop replies arrive at the LambdaM rate (a few a second): a loop per reply is cheap.
        for row in rows.tolist():
            self._on_reply(batch.recipient[row].tobytes(), batch.surb_id[row].tobytes(), batch.packets[row])

    def _on_reply(self, recipient, surb_id, packet):
        # Both in constant time: the SURB ID base tells decoy replies apart, keep it unguessable.
        if not (hmac.compare_digest(recipient, self._recipient)
                and hmac.compare_digest(surb_id[:_BASE_LENGTH], self._surb_id_base)):
            self._counts["unmatched_replies"] += 1
            return
        if self._book.pending(surb_id) is None:
            self._counts["unmatched_replies"] += 1       # unknown, already answered or swept
            return
        self._book.open(surb_id, bytes(packet[_PAYLOAD]))   # counts delivered or undecryptable


def loop_targets(doc: Document) -> list[tuple]:
    """(provider, endpoint) for every provider advertising the loop service with a string endpoint."""
    targets = []
    for provider in doc.providers:
        try:
            targets.append((provider, message.kaetzchen_endpoint(provider, LOOP_CAPABILITY)))
        except message.MessageError:
            continue
    return targets
