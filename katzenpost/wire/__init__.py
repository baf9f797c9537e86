"""Katzenpost link layer (2021 suite): Noise XXhfs + Kyber1024 handshake, framed sessions, commands.

Import the session API from here (``connect``, ``accept``, ``Session``, ``PeerCredentials``)
and the command classes from ``katzenpost.wire.commands``. Nothing here knows about PKI or users.
"""
from .errors import (AuthenticationError, CommandError, ConnectError, ConnectionClosed, FrameError,
                     HandshakeError, HandshakeTimeout, WireError, WireTimeout)
from .handshake import PeerCredentials
from .session import PeerAuthenticator, Session, accept, connect

__all__ = [
    "AuthenticationError", "CommandError", "ConnectError", "ConnectionClosed", "FrameError",
    "HandshakeError", "HandshakeTimeout", "PeerAuthenticator", "PeerCredentials", "Session",
    "WireError", "WireTimeout", "accept", "connect",
]
