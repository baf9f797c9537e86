"""Who is on the other end of a voting authority's connection, both ways.

As responder, after the handshake: an empty AD is an anonymous client; a 32-byte AD is a
whitelisted node (checked first; its static key must be ToECDH of its identity) or a
configured peer authority (its static key must be its configured link key); anything else
fails the handshake. As initiator, the dialled peer must present exactly its configured
identity and link key (the reference accepts any configured authority's AD and never checks
the link key).
"""
from __future__ import annotations

import enum
import logging

from katzenpost.authority.config import Peer
from katzenpost.pki.keyconv import x25519_public_from_ed25519_public
from katzenpost.wire.handshake import PeerCredentials

log = logging.getLogger("katzenpost.authority")
IDENTITY_LEN = 32


class PeerClass(enum.Enum):
    CLIENT = "client"
    NODE = "mix"
    AUTHORITY = "authority"
    REJECTED = "rejected"


class Classifier:
    """The responder's authenticator (the wire session's `is_peer_valid` hook) and the
    class of an accepted peer, derived from the same credentials."""

    def __init__(self, is_whitelisted, peers: dict[bytes, Peer]) -> None:
        self._is_whitelisted = is_whitelisted
        self._peers = peers

    def classify(self, creds: PeerCredentials) -> PeerClass:
        ad = creds.additional_data
        if len(ad) == 0:
            return PeerClass.CLIENT
        if len(ad) != IDENTITY_LEN:
            log.info("Rejecting authentication, invalid AD size.")
            return PeerClass.REJECTED
        if self._is_whitelisted(ad):
            try:
                if creds.public_key == x25519_public_from_ed25519_public(ad):
                    return PeerClass.NODE
            except ValueError:
                pass
            log.info("Rejecting mix authentication, public key mismatch.")
            return PeerClass.REJECTED
        peer = self._peers.get(ad)
        if peer is not None and creds.public_key == peer.link_public_key:
            return PeerClass.AUTHORITY
        log.info("Rejecting authority authentication, public key mismatch.")
        return PeerClass.REJECTED

    def is_peer_valid(self, creds: PeerCredentials) -> bool:
        return self.classify(creds) is not PeerClass.REJECTED


class PinnedPeer:
    """The initiator's authenticator when dialling one peer authority."""

    def __init__(self, peer: Peer) -> None:
        self._peer = peer

    def is_peer_valid(self, creds: PeerCredentials) -> bool:
        return (creds.additional_data == self._peer.identity_public_key
                and creds.public_key == self._peer.link_public_key)
