"""Exception classes of the link layer (codec, handshake, framing, session).

Every failure the wire package reports is a ``WireError`` subclass, so callers catch one
type; nothing here carries key material in its message.
"""


class WireError(Exception):
    """Base class of every link-layer error."""


class CommandError(WireError, ValueError):
    """A wire command could not be encoded or decoded (the Wire Protocol Specification)."""


class HandshakeError(WireError):
    """The Noise XXhfs handshake failed (bad message, bad MAC, bad prologue, bad key)."""


class WireTimeout(WireError, TimeoutError):
    """A deadline passed; the session (or half-made connection) is closed."""


class HandshakeTimeout(HandshakeError, WireTimeout):
    """The handshake (including the NoOp finalisation) did not finish in time."""


class AuthenticationError(HandshakeError):
    """The peer authenticator rejected the peer, or the peer rejected us."""


class FrameError(WireError):
    """A transport frame was malformed: bad MAC, length out of bounds, truncated."""


class ConnectionClosed(WireError):
    """The session is closed (by us, by the peer, or after an error)."""


class ConnectError(WireError, OSError):
    """Opening the TCP connection failed (refused, unreachable, timed out)."""
