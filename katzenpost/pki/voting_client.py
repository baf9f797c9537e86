"""The node's and client's side of a set of voting directory authorities (the Katzenpost PKI
specification; the 2021 suite's voting client). The same interface as `client.AuthorityClient`
(`client.PKIClient`), so the PKI worker does not know which kind of directory it talks to.

* **Post**: the descriptor is signed once per epoch and posted to every authority at once. An
  authority that answered (Ok, Conflict, Invalid, Forbidden) is settled for that epoch; one that
  could not be reached is tried again at the next call, with the same signed bytes (so a post
  whose reply was lost is answered Ok, not Conflict). The call succeeds when every authority
  answered Ok; each authority's failure is logged with its name.
* **Get**: the authorities are asked in a random order until one serves a document that
  carries valid signatures of a majority (`n // 2 + 1`) of the configured authorities
  (`verify_consensus`). Unlike the reference, which asks one random authority, a down authority
  or one serving a bad document does not cost the node the epoch.

Authorities are named in log lines by their identity key (base64), never by address.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import random
from dataclasses import dataclass, field
from typing import Sequence

from katzenpost.pki import cert
from katzenpost.pki.client import (
    CONNECT_TIMEOUT,
    HANDSHAKE_TIMEOUT,
    RESPONSE_TIMEOUT,
    AuthorityClient,
    AuthorityUnreachableError,
    DocumentGoneError,
    DocumentNotFoundError,
    InvalidDocumentError,
    PKIClientError,
    PostConflictError,
    PostRejectedError,
)
from katzenpost.pki.descriptor import MixDescriptor, check_well_formed, sign_descriptor
from katzenpost.pki.document import Document
from katzenpost.pki.epochtime import DEFAULT_CLOCK, EpochClock
from katzenpost.voting import consensus
from katzenpost.voting.errors import ConsensusError
from katzenpost.voting.tally import client_threshold

log = logging.getLogger("katzenpost.pki")


@dataclass(frozen=True)
class VotingAuthority:
    """One authority of the set: its identity key (signs the consensus), its link key (its
    Noise static key) and the addresses it listens on."""

    identity_key: bytes
    link_key: bytes
    addresses: tuple[tuple[str, int], ...]

    @property
    def name(self) -> str:
        return base64.b64encode(self.identity_key).decode("ascii")


class ConsensusThresholdError(InvalidDocumentError):
    """A document without valid signatures of a majority of the configured authorities."""


def _count_valid(verifiers: Sequence[bytes], raw: bytes, now: float | None) -> int | None:
    """How many of `verifiers` signed `raw` validly (None: not even a certificate)."""
    try:
        parsed = cert.parse(raw, now)
    except cert.CertificateError:
        return None
    valid = 0
    for key in verifiers:
        try:
            cert.verify_parsed(key, parsed)
            valid += 1
        except cert.CertificateError:
            continue
    return valid


def verify_consensus(raw: bytes, verifiers: Sequence[bytes], epoch: int,
                     now: float | None = None) -> Document:
    """Accept a consensus as a node or client does (the voting library's acceptance rule with
    the client threshold, a simple majority of `verifiers`; signatures of other keys are
    ignored). InvalidDocumentError says why not, ConsensusThresholdError when too few of
    `verifiers` signed it. With a single verifier this is the non-voting authority's rule."""
    keys = [bytes(k) for k in verifiers]
    threshold = client_threshold(len(keys))
    try:
        accepted = consensus.verify_consensus(raw, keys, threshold, epoch, now)
    except ConsensusError as exc:
        valid = _count_valid(keys, raw, now)
        if valid is not None and valid < threshold:
            raise ConsensusThresholdError(
                f"pki: consensus for epoch {epoch} rejected: {valid} of {len(keys)} authorities' "
                f"signatures are valid, {threshold} required") from None
        raise InvalidDocumentError(f"pki: consensus for epoch {epoch} rejected: {exc}") from None
    if not accepted.bad:
        log.debug("Received a fully signed consensus document for epoch %d", epoch)
    return accepted.document


@dataclass
class _EpochPost:
    """This node's post for one epoch: the signed bytes, and the authorities that answered."""

    desc: MixDescriptor
    raw: bytes
    answers: dict[bytes, PKIClientError | None]  # identity -> None (Ok) or the refusal
    unreached: set[bytes] = field(default_factory=set)  # warned about once, then DEBUG


class VotingClient:
    def __init__(self, authorities: Sequence[VotingAuthority], *, clock: EpochClock = DEFAULT_CLOCK,
                 connect_timeout: float = CONNECT_TIMEOUT, handshake_timeout: float = HANDSHAKE_TIMEOUT,
                 response_timeout: float = RESPONSE_TIMEOUT, rng: random.Random | None = None) -> None:
        if not authorities:
            raise ValueError("pki: zero authorities specified in the configuration")
        if not all(a.addresses for a in authorities):
            raise ValueError("pki: an authority without addresses")
        self.authorities = tuple(authorities)
        self.clock = clock
        self._rng = rng or random.SystemRandom()
        self._verifiers = [a.identity_key for a in self.authorities]
        # One wire client per (authority, address): each checks AD = identity, static = link key.
        self._clients = {
            a.identity_key: [AuthorityClient(host, port, a.identity_key, clock=clock,
                                             connect_timeout=connect_timeout,
                                             handshake_timeout=handshake_timeout,
                                             response_timeout=response_timeout,
                                             link_public=a.link_key)
                             for host, port in a.addresses]
            for a in self.authorities}
        self._posts: dict[int, _EpochPost] = {}

    @property
    def threshold(self) -> int:
        return client_threshold(len(self.authorities))

    async def _ask(self, authority: VotingAuthority, request):
        """`request(client)` on the authority's addresses in a random order, until one of them
        is reached (AuthorityUnreachableError from the last otherwise)."""
        clients = list(self._clients[authority.identity_key])
        self._rng.shuffle(clients)
        for index, client in enumerate(clients):
            try:
                return await request(client)
            except AuthorityUnreachableError:
                if index == len(clients) - 1:
                    raise

    # --- fetching ----------------------------------------------------------------------------

    async def get_document(self, epoch: int, now: float | None = None) -> Document:
        """The consensus for `epoch` from the first authority (random order) that serves one
        this node accepts. When none does: DocumentGoneError only if a majority of the
        authorities said it will never exist and the epoch has begun (an authority may answer
        Gone for the next epoch while it is still combining signatures); otherwise a retryable
        error summing up every authority's answer."""
        now = self.clock.unix_now() if now is None else now
        order = list(self.authorities)
        self._rng.shuffle(order)
        answers: list[str] = []
        gone = not_found = refused = 0
        for authority in order:
            try:
                raw = await self._ask(authority, lambda c: c.fetch_consensus(epoch))
                return verify_consensus(raw, self._verifiers, epoch, now)
            except DocumentGoneError:
                gone += 1
                answers.append(f"{authority.name}: gone")
            except DocumentNotFoundError:
                not_found += 1
                answers.append(f"{authority.name}: not yet")
            except InvalidDocumentError as exc:
                refused += 1
                log.warning("Refused the consensus from authority %s: %s", authority.name, exc)
                answers.append(f"{authority.name}: refused")
            except AuthorityUnreachableError as exc:
                log.debug("Authority %s: %s", authority.name, exc)   # names its address
                answers.append(f"{authority.name}: unreachable")
        summary = f"pki: no usable consensus for epoch {epoch} ({'; '.join(answers)})"
        if gone >= self.threshold and not not_found and epoch <= self.clock.epoch_at(now)[0]:
            raise DocumentGoneError(summary)
        if gone or not_found:
            raise DocumentNotFoundError(summary)
        if refused:
            raise InvalidDocumentError(summary)
        raise AuthorityUnreachableError(summary)

    # --- posting -----------------------------------------------------------------------------

    def _signed_for(self, epoch: int, identity_seed: bytes, desc: MixDescriptor,
                    now: float) -> _EpochPost:
        """The post for `epoch`, signed once: a retry re-sends the same bytes. A descriptor that
        changed meanwhile is signed anew (authorities holding the old one answer Conflict)."""
        for old in [e for e in self._posts if e < epoch - 2]:
            del self._posts[old]
        post = self._posts.get(epoch)
        if post is None or post.desc != desc:
            raw = sign_descriptor(identity_seed, desc, self.clock, now)
            post = (_EpochPost(desc, raw, {}) if post is None
                    else _EpochPost(desc, raw, post.answers, post.unreached))
            self._posts[epoch] = post
        return post

    async def _post_one(self, authority: VotingAuthority, epoch: int, identity_seed: bytes,
                        post: _EpochPost) -> None:
        try:
            await self._ask(authority, lambda c: c.post_signed_descriptor(
                epoch, identity_seed, post.desc.identity_key, post.raw))
        except AuthorityUnreachableError as exc:
            level = logging.DEBUG if authority.identity_key in post.unreached else logging.WARNING
            post.unreached.add(authority.identity_key)
            log.log(level, "Failed to post the descriptor for epoch %d to authority %s: "
                    "unreachable (tried again at the next attempt)", epoch, authority.name)
            log.debug("Authority %s: %s", authority.name, exc)       # names its address
            return
        except PostConflictError as exc:
            log.warning("Authority %s: %s", authority.name, exc)
            post.answers[authority.identity_key] = exc
            return
        except PKIClientError as exc:
            log.error("Authority %s: %s", authority.name, exc)
            post.answers[authority.identity_key] = exc
            return
        post.answers[authority.identity_key] = None

    async def post_descriptor(self, epoch: int, identity_seed: bytes, desc: MixDescriptor,
                              now: float | None = None) -> None:
        """Post to every authority that has not answered yet for `epoch`. Returns when all have
        answered Ok; AuthorityUnreachableError (retryable) while some could not be reached;
        PostRejectedError or PostConflictError once all answered and some refused."""
        check_well_formed(desc, epoch)
        current = self.clock.unix_now() if now is None else now
        post = self._signed_for(epoch, identity_seed, desc, current)
        pending = [a for a in self.authorities if a.identity_key not in post.answers]
        await asyncio.gather(*(self._post_one(a, epoch, identity_seed, post) for a in pending))
        total = len(self.authorities)
        accepted = sum(1 for answer in post.answers.values() if answer is None)
        if len(post.answers) < total:
            raise AuthorityUnreachableError(
                f"pki: descriptor for epoch {epoch} accepted by {accepted} of {total} "
                f"authorities, {total - len(post.answers)} not reached yet")
        refusals = [a for a in post.answers.values() if a is not None]
        if any(not isinstance(a, PostConflictError) for a in refusals):
            raise PostRejectedError(f"pki: descriptor for epoch {epoch} refused by "
                                    f"{len(refusals)} of {total} authorities")
        if refusals:
            raise PostConflictError(f"pki: descriptor for epoch {epoch} conflicts at "
                                    f"{len(refusals)} of {total} authorities")
