"""The node's client of a non-voting authority (the Katzenpost PKI specification): one request per connection,
and `PKIClient`, the interface the PKI worker uses (the voting client: `voting_client.py`).

Fetches and verifies documents, posts signed descriptors. It keeps no state between requests;
scheduling, caching and retries belong to the PKI worker (`worker.py`).
"""
from __future__ import annotations

import logging
import os
from typing import Protocol

from katzenpost.pki.descriptor import MixDescriptor, check_well_formed, sign_descriptor
from katzenpost.pki.document import Document, DocumentError, verify_and_parse_document
from katzenpost.pki.epochtime import DEFAULT_CLOCK, EpochClock
from katzenpost.pki.keyconv import (
    x25519_private_from_ed25519_seed,
    x25519_public_from_ed25519_public,
)
from katzenpost.wire import session as wire_session
from katzenpost.wire.commands import (
    Consensus,
    ConsensusStatus,
    DescriptorStatus,
    GetConsensus,
    PostDescriptor,
    PostDescriptorStatus,
)
from katzenpost.wire.errors import WireError
from katzenpost.wire.handshake import PeerCredentials

log = logging.getLogger("katzenpost.pki")

CONNECT_TIMEOUT = 60.0
HANDSHAKE_TIMEOUT = 30.0
RESPONSE_TIMEOUT = 60.0


class PKIClientError(Exception):
    """A request to the authority failed; `retryable` says whether trying later may help."""

    retryable = True


class AuthorityUnreachableError(PKIClientError):
    """Connect, handshake or transport failure."""


class DocumentNotFoundError(PKIClientError):
    """The authority has no document for the epoch yet (Consensus NotFound)."""


class DocumentGoneError(PKIClientError):
    """The authority will never have this document (Consensus Gone): ErrNoDocument."""

    retryable = False


class InvalidDocumentError(PKIClientError):
    """The document does not verify, does not parse, or is for another epoch."""


class PostConflictError(PKIClientError):
    """A descriptor is already stored for the epoch, or the document exists (ErrInvalidPostEpoch)."""

    retryable = False


class PostRejectedError(PKIClientError):
    """The authority answered Invalid or Forbidden."""


class PKIClient(Protocol):
    """What the PKI worker asks of a directory: `AuthorityClient` (one non-voting authority) and
    `voting_client.VotingClient` (a set of voting authorities) both provide it."""

    async def get_document(self, epoch: int, now: float | None = None) -> Document:
        """The verified document for `epoch`, or a PKIClientError saying why not."""
        ...

    async def post_descriptor(self, epoch: int, identity_seed: bytes, desc: MixDescriptor,
                              now: float | None = None) -> None:
        """Sign and post this node's descriptor, or a PKIClientError saying why it failed."""
        ...


class AuthorityAuthenticator:
    """The authority must present AD = its identity key and static key = its link key: a voting
    authority's own X25519 key, or ToECDH(identity) for the non-voting one."""

    def __init__(self, authority_identity: bytes, link_public: bytes | None = None) -> None:
        self._identity = bytes(authority_identity)
        self._link_public = (x25519_public_from_ed25519_public(self._identity)
                             if link_public is None else bytes(link_public))

    def is_peer_valid(self, creds: PeerCredentials) -> bool:
        return (creds.additional_data == self._identity
                and creds.public_key == self._link_public)


class AuthorityClient:
    def __init__(self, host: str, port: int, authority_identity: bytes, *,
                 clock: EpochClock = DEFAULT_CLOCK, connect_timeout: float = CONNECT_TIMEOUT,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT,
                 response_timeout: float = RESPONSE_TIMEOUT, link_public: bytes | None = None) -> None:
        self.host, self.port = host, port
        self.authority_identity = bytes(authority_identity)
        self.clock = clock
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        self.response_timeout = response_timeout
        self._authenticator = AuthorityAuthenticator(self.authority_identity, link_public)

    async def _round_trip(self, request, link_key: bytes, additional_data: bytes):
        try:
            session = await wire_session.connect(
                self.host, self.port, link_key=link_key, additional_data=additional_data,
                authenticator=self._authenticator, handshake_timeout=self.handshake_timeout,
                connect_timeout=self.connect_timeout)
        except (WireError, OSError) as exc:
            raise AuthorityUnreachableError(
                f"pki: authority {self.host}:{self.port} unreachable: {exc}") from None
        try:
            session.write_timeout = self.response_timeout
            await session.send_command(request)
            return await session.recv_command(timeout=self.response_timeout)
        except WireError as exc:
            raise AuthorityUnreachableError(f"pki: request to the authority failed: {exc}") from None
        finally:
            await session.close()

    async def get_document(self, epoch: int, now: float | None = None) -> Document:
        """Fetch, verify and parse the document for `epoch` (anonymous, fresh link key)."""
        now = self.clock.unix_now() if now is None else now
        raw = await self.fetch_consensus(epoch)
        try:
            doc = verify_and_parse_document(raw, self.authority_identity, now)
        except DocumentError as exc:
            raise InvalidDocumentError(f"pki: document for epoch {epoch} rejected: {exc}") from None
        if doc.epoch != epoch:
            raise InvalidDocumentError(
                f"pki: asked for epoch {epoch}, the document is for epoch {doc.epoch}")
        return doc

    async def fetch_consensus(self, epoch: int) -> bytes:
        """The raw, unverified certificate the authority serves for `epoch` (Consensus Ok)."""
        reply = await self._round_trip(GetConsensus(epoch=epoch), os.urandom(32), b"")
        if not isinstance(reply, Consensus):
            raise InvalidDocumentError(f"pki: unexpected reply {type(reply).__name__}")
        if reply.error_code == ConsensusStatus.GONE:
            raise DocumentGoneError(f"pki: no document for epoch {epoch} (Gone)")
        if reply.error_code == ConsensusStatus.NOT_FOUND:
            raise DocumentNotFoundError(f"pki: document for epoch {epoch} not found yet")
        if reply.error_code != ConsensusStatus.OK:
            raise InvalidDocumentError(f"pki: unknown Consensus code {reply.error_code}")
        return reply.payload

    async def post_descriptor(self, epoch: int, identity_seed: bytes, desc: MixDescriptor,
                              now: float | None = None) -> None:
        """Check locally, sign with the identity key and post over a ToECDH(identity) link."""
        check_well_formed(desc, epoch)
        current = self.clock.unix_now() if now is None else now
        raw = sign_descriptor(identity_seed, desc, self.clock, current)
        await self.post_signed_descriptor(epoch, identity_seed, desc.identity_key, raw)

    async def post_signed_descriptor(self, epoch: int, identity_seed: bytes,
                                     identity_public: bytes, raw: bytes) -> None:
        """Post an already signed descriptor over a ToECDH(identity) link; status to errors."""
        request = PostDescriptor(epoch=epoch, payload=raw)
        reply = await self._round_trip(request, x25519_private_from_ed25519_seed(identity_seed),
                                       identity_public)
        if not isinstance(reply, PostDescriptorStatus):
            raise AuthorityUnreachableError(f"pki: unexpected reply {type(reply).__name__}")
        if reply.error_code == DescriptorStatus.OK:
            return
        if reply.error_code == DescriptorStatus.CONFLICT:
            raise PostConflictError(f"pki: descriptor for epoch {epoch} conflicts (already "
                                    "posted, or the document exists)")
        try:
            name = DescriptorStatus(reply.error_code).name.capitalize()
        except ValueError:
            name = f"code {reply.error_code}"
        raise PostRejectedError(f"pki: descriptor for epoch {epoch} rejected by authority: {name}")
