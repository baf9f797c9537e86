"""Link-layer session over asyncio streams: handshake, peer authentication, framed commands.

``connect()`` (initiator) and ``accept()`` (responder) run the XXhfs handshake under one
deadline, ask the caller's authenticator about the peer, perform the NoOp finalisation and
return a ``Session``. Every failure closes the connection, logs its reason on
``katzenpost.wire`` and raises a ``WireError`` subclass (ValueError only for a bad local key or
AD); no other exception escapes and no task is left behind.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import time
from typing import Any, Protocol

from .commands import Command, NoOp, SendPacket, parse_command
from .errors import (AuthenticationError, CommandError, ConnectError, ConnectionClosed,
                     FrameError, HandshakeError, HandshakeTimeout, WireError, WireTimeout)
from .framing import HEADER_LENGTH, FrameOpener, FrameSealer
from .handshake import Clock, Handshake, PeerCredentials, RandomBytes
from .kem import KEM

log = logging.getLogger("katzenpost.wire")

DEFAULT_HANDSHAKE_TIMEOUT = 30.0
KEEPALIVE_PERIOD = 180  # seconds; the reference's 3-minute TCP keepalive
CLOSE_FLUSH_TIMEOUT = 5.0  # how long close() lets buffered bytes drain before aborting


class PeerAuthenticator(Protocol):
    def is_peer_valid(self, creds: PeerCredentials) -> bool | tuple[bool, bool]:
        """Is this AD + link key allowed (and may it send)? May also return an awaitable."""
        ...


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer) if peer else "?"


def _log_event(level: int, event: str, peer_name: str, detail: str) -> None:
    """Operators' rule: peer addresses and keys only at DEBUG. ``event`` and ``detail`` carry
    neither; at ``level`` above DEBUG the line omits the peer, which a DEBUG line then names."""
    if level > logging.DEBUG:
        log.log(level, "wire: %s: %s", event, detail)
    log.debug("wire: %s with %s: %s", event, peer_name, detail)


def _os_error_text(exc: BaseException) -> str:
    """An OSError without its message: asyncio's connect errors name the peer's address."""
    strerror = getattr(exc, "strerror", None)
    return f"{type(exc).__name__}({strerror})" if strerror else type(exc).__name__


def _enable_keepalive(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_PERIOD)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_PERIOD)
    except OSError:  # keepalive is best effort; the session works without it
        pass


async def _close_writer(writer: asyncio.StreamWriter, abort: bool = False) -> None:
    """Close gracefully (flush, then FIN), but never wait long on a peer that stopped reading."""
    if abort:
        writer.transport.abort()
        return
    try:
        writer.close()
        async with asyncio.timeout(CLOSE_FLUSH_TIMEOUT):
            await writer.wait_closed()
    except (OSError, asyncio.TimeoutError, RuntimeError):
        writer.transport.abort()
    except asyncio.CancelledError:
        writer.transport.abort()
        raise


async def _ask_authenticator(authenticator: Any, creds: PeerCredentials) -> tuple[bool, bool]:
    """Normalise the authenticator's answer to (valid, can_send); an exception rejects."""
    check = getattr(authenticator, "is_peer_valid", authenticator)
    answer = check(creds)
    if inspect.isawaitable(answer):
        answer = await answer
    if isinstance(answer, tuple):
        valid, can_send = answer
        return bool(valid), bool(valid) and bool(can_send)
    return bool(answer), bool(answer)


class Session:
    """An authenticated link: framed, rekeyed commands in both directions.

    ``send_command`` may be called from several tasks (each frame is sealed and written
    without yielding in between); ``recv_command`` from one task at a time. ``write_packets``,
    ``is_writable`` and ``wait_writable`` form a non-blocking packet sender. ``can_send`` is
    the authenticator's verdict and may be updated by the owner (re-authentication).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 sealer: FrameSealer, opener: FrameOpener, *, initiator: bool,
                 peer_credentials: PeerCredentials, can_send: bool, handshake_hash: bytes,
                 clock_skew: float | None, peer_name: str) -> None:
        self._reader = reader
        self._writer = writer
        self._sealer = sealer
        self._opener = opener
        self._receiving = False
        self._pending_body = 0  # body length of a header opened by recv_commands, body unread
        self.initiator = initiator
        self.peer_credentials = peer_credentials
        self.can_send = can_send
        self.handshake_hash = handshake_hash
        self.clock_skew = clock_skew  # initiator only: local time − responder's unix_time
        self.peer_name = peer_name
        self.write_timeout: float | None = None
        self.closed = False
        self.close_reason: str | None = None

    def __repr__(self) -> str:
        role = "initiator" if self.initiator else "responder"
        return f"<Session {role} peer={self.peer_name} closed={self.closed}>"

    async def send_command(self, command: Command) -> None:
        """Frame, encrypt and send one command; a write failure closes the session."""
        if self.closed:
            raise ConnectionClosed(f"wire: send on closed session ({self.close_reason})")
        frame = self._sealer.seal(command.to_bytes())  # encode errors leave the session intact
        try:
            self._writer.write(frame)
            if self.write_timeout is None:
                await self._writer.drain()
            else:
                async with asyncio.timeout(self.write_timeout):
                    await self._writer.drain()
        except asyncio.TimeoutError:
            raise await self._close_with(f"write stalled for more than {self.write_timeout} s",
                                         WireTimeout, abort=True) from None
        except (OSError, RuntimeError) as exc:
            raise await self._close_with(f"write failed: {_os_error_text(exc)}",
                                         ConnectionClosed) from None

    def write_packets(self, packets) -> None:
        """Seal one SendPacket per packet (bytes-like rows, e.g. a uint8[k, L] array) and hand
        all frames to the transport in one write, without waiting: the non-blocking sender the
        node's outgoing queue needs. Check ``is_writable()`` / ``await wait_writable()`` for
        back-pressure. Raises ConnectionClosed if the session or transport is closed, FrameError
        for a packet over the frame limit (the packets before it are still sent)."""
        if self.closed:
            raise ConnectionClosed(f"wire: send on closed session ({self.close_reason})")
        if self._writer.transport.is_closing():
            self._abort("transport closed under the sender")
            raise ConnectionClosed("wire: transport closed under the sender")
        frames = []
        try:
            for packet in packets:
                frames.append(self._sealer.seal(SendPacket(bytes(packet)).to_bytes()))
        finally:  # a packet refused mid-batch: still send what was sealed, or the counters drift
            if frames:
                self._writer.write(b"".join(frames))

    def is_writable(self) -> bool:
        """True while the transport's write buffer is below its high-water mark."""
        if self.closed:
            return False
        transport = self._writer.transport
        if transport.is_closing():
            return False
        return transport.get_write_buffer_size() <= transport.get_write_buffer_limits()[1]

    async def wait_writable(self) -> None:
        """Wait until the write buffer drains below the low-water mark; errors close."""
        if self.closed:
            raise ConnectionClosed(f"wire: send on closed session ({self.close_reason})")
        try:
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            raise await self._close_with(f"write failed: {_os_error_text(exc)}",
                                         ConnectionClosed) from None

    async def recv_command(self, timeout: float | None = None) -> Command:
        """Receive one command. Any failure (EOF, I/O, MAC, length, bad command, timeout)
        closes the session and raises a WireError subclass."""
        if self.closed:
            raise ConnectionClosed(f"wire: receive on closed session ({self.close_reason})")
        if self._receiving:
            raise RuntimeError("wire: recv_command called concurrently on one session")
        self._receiving = True
        try:
            # asyncio.timeout, not wait_for: in Python 3.11 wait_for returns a frame that arrived
            # together with a cancellation and drops the cancellation, so a task stopped while
            # a reply comes in would keep running (and a halt waiting for it would hang).
            async with asyncio.timeout(timeout):
                return await self._recv_frame()
        except TimeoutError:
            raise await self._close_with(f"no command within {timeout} s", WireTimeout) from None
        finally:
            self._receiving = False

    async def recv_commands(self, max_commands: int = 64,
                            timeout: float | None = None) -> list[Command]:
        """Receive one command, waiting for it as ``recv_command`` does, then every further
        complete frame already buffered (up to ``max_commands`` in all) without waiting: one
        await per read instead of one per command. Failures as in ``recv_command``; a failure
        after the first command closes the session and drops the commands of that call."""
        commands = [await self.recv_command(timeout)]
        self._receiving = True
        try:
            while len(commands) < max_commands:
                command = self._buffered_command()
                if command is None:
                    break
                commands.append(command)
        except (FrameError, CommandError) as exc:
            raise await self._close_with(str(exc).removeprefix("wire: "), type(exc)) from None
        finally:
            self._receiving = False
        return commands

    def _buffered_command(self) -> Command | None:
        """The next command if its whole frame is already in the reader's buffer, else None
        (a decrypted header whose body is still in flight is kept for the next read)."""
        buffer = getattr(self._reader, "_buffer", None)   # asyncio.StreamReader's bytearray
        if buffer is None:
            return None
        if not self._pending_body:
            if len(buffer) < HEADER_LENGTH:
                return None
            self._pending_body = self._opener.open_header(bytes(buffer[:HEADER_LENGTH]))
            del buffer[:HEADER_LENGTH]
        if len(buffer) < self._pending_body:
            return None
        body = bytes(buffer[:self._pending_body])
        del buffer[:self._pending_body]
        self._pending_body = 0
        self._reader._maybe_resume_transport()
        return parse_command(self._opener.open_body(body))

    async def _recv_frame(self) -> Command:
        reading = "header"
        try:
            if self._pending_body:
                reading = "body"
                length, self._pending_body = self._pending_body, 0
                body = await self._reader.readexactly(length)
                return parse_command(self._opener.open_body(body))
            header = await self._reader.readexactly(HEADER_LENGTH)
            reading = "body"
            body = await self._reader.readexactly(self._opener.open_header(header))
            return parse_command(self._opener.open_body(body))
        except asyncio.IncompleteReadError as exc:
            if self.closed:
                raise ConnectionClosed(f"wire: session closed ({self.close_reason})") from None
            if reading == "header" and not exc.partial:
                raise await self._close_with("peer closed the connection", ConnectionClosed,
                                             logging.DEBUG) from None
            raise await self._close_with(f"truncated frame {reading} ({len(exc.partial)} of "
                                         f"{exc.expected} bytes)", FrameError) from None
        except (FrameError, CommandError) as exc:
            raise await self._close_with(str(exc).removeprefix("wire: "), type(exc)) from None
        except (OSError, RuntimeError) as exc:
            if self.closed:
                raise ConnectionClosed(f"wire: session closed ({self.close_reason})") from None
            raise await self._close_with(f"read failed: {_os_error_text(exc)}",
                                         ConnectionClosed) from None
        except asyncio.CancelledError:
            if reading == "body":  # the stream is mid-frame: it can never be read again
                self._abort("receive cancelled in the middle of a frame")
            raise

    def _abort(self, reason: str) -> None:
        """Synchronous close for paths that cannot await (cancellation)."""
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            _log_event(logging.INFO, "session closed", self.peer_name, reason)
            self._writer.transport.abort()

    async def _close_with(self, reason: str, error: type[WireError],
                          level: int = logging.INFO, abort: bool = False) -> WireError:
        """Close for ``reason`` and return the error to raise."""
        await self.close(reason, level=level, abort=abort)
        return error(f"wire: {reason}")

    async def close(self, reason: str = "closed locally", *, level: int = logging.DEBUG,
                    abort: bool = False) -> None:
        """Close the connection (idempotent); the reason is logged once. ``abort`` drops
        unsent bytes instead of flushing them for up to CLOSE_FLUSH_TIMEOUT seconds."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        _log_event(level, "session closed", self.peer_name, reason)
        await _close_writer(self._writer, abort)


async def _run_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         handshake: Handshake, authenticator: Any) -> bool:
    """Drive the three messages; ask the authenticator as soon as the peer's credentials are
    known (before msg 3 as initiator, before any frame as responder). Returns can_send."""
    can_send = None
    while not handshake.is_complete:
        if handshake.wants_write:
            writer.write(handshake.write_message())
            await writer.drain()
            continue
        handshake.read_message(await reader.readexactly(handshake.next_read_length))
        if can_send is None and handshake.peer_credentials is not None:
            can_send = await _authenticate(authenticator, handshake.peer_credentials)
    return bool(can_send)


async def _authenticate(authenticator: Any, creds: PeerCredentials) -> bool:
    try:
        valid, can_send = await _ask_authenticator(authenticator, creds)
    except Exception as exc:  # a broken callback must not leak out of the session layer
        log.warning("wire: peer authenticator raised %r; rejecting the peer", exc)
        valid = can_send = False
    if not valid:  # the peer's AD and key are identifying: DEBUG only
        log.debug("wire: peer rejected: AD %s, link key %s", creds.additional_data.hex()[:64],
                  creds.public_key.hex())
        raise AuthenticationError("wire: peer authentication failed")
    return can_send


async def _establish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     handshake: Handshake, authenticator: Any,
                     handshake_timeout: float) -> Session:
    """Handshake + NoOp finalisation under one deadline; closes the connection on failure."""
    peer_name = _peer_name(writer)
    error: WireError
    role = "initiator" if handshake.initiator else "responder"
    try:
        async with asyncio.timeout(handshake_timeout):
            can_send = await _run_handshake(reader, writer, handshake, authenticator)
            tx_key, rx_key = handshake.split()
            session = Session(reader, writer, FrameSealer(tx_key), FrameOpener(rx_key),
                              initiator=handshake.initiator,
                              peer_credentials=handshake.peer_credentials, can_send=can_send,
                              handshake_hash=handshake.handshake_hash,
                              clock_skew=handshake.clock_skew, peer_name=peer_name)
            await _finalise(session)
            return session
    except WireError as exc:  # first: some WireErrors are also OSError or TimeoutError
        error = exc if isinstance(exc, HandshakeError) else HandshakeError(str(exc))
    except TimeoutError:
        error = HandshakeTimeout(f"wire: handshake did not finish within {handshake_timeout} s")
    except asyncio.IncompleteReadError as exc:
        error = HandshakeError(f"wire: the peer closed the connection during the handshake "
                               f"({len(exc.partial)} of {exc.expected} bytes)")
    except (OSError, RuntimeError) as exc:
        error = HandshakeError(f"wire: I/O error in the handshake: {_os_error_text(exc)}")
    except BaseException:  # cancellation: never leave the socket open, never wait on it
        await _close_writer(writer, abort=True)
        raise
    _log_event(logging.INFO, f"{role} handshake failed", peer_name,
               str(error).removeprefix("wire: "))
    await _close_writer(writer)
    raise error


async def _finalise(session: Session) -> None:
    """The responder's first frame is a NoOp; the initiator requires exactly that."""
    if not session.initiator:
        await session.send_command(NoOp())
        return
    first = await session.recv_command()
    if not isinstance(first, NoOp):
        raise HandshakeError(f"wire: expected NoOp to finalise the handshake, got "
                             f"{type(first).__name__}")


async def connect(host: str, port: int, *, link_key: bytes, additional_data: bytes,
                  authenticator: Any, handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
                  connect_timeout: float | None = None, kem: KEM | None = None,
                  rng: RandomBytes = os.urandom, clock: Clock = time.time) -> Session:
    """Dial ``host:port`` and run the handshake as initiator.

    Raises ValueError for a bad key or AD (before dialling), ConnectError if the TCP connect
    fails, HandshakeError (HandshakeTimeout, AuthenticationError) if the handshake does.
    ``kem``, ``rng`` and ``clock`` exist for tests and vector replay.
    """
    handshake = Handshake(initiator=True, link_key=link_key,
                          additional_data=additional_data,
                          kem=kem, rng=rng, clock=clock)
    timeout = handshake_timeout if connect_timeout is None else connect_timeout
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
    except (OSError, asyncio.TimeoutError) as exc:
        _log_event(logging.INFO, "connecting failed", f"{host}:{port}", _os_error_text(exc))
        raise ConnectError(f"wire: connecting to {host}:{port} failed: {exc!r}") from None
    _enable_keepalive(writer)
    return await _establish(reader, writer, handshake, authenticator, handshake_timeout)


async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 link_key: bytes, additional_data: bytes, authenticator: Any,
                 handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT, kem: KEM | None = None,
                 rng: RandomBytes = os.urandom, clock: Clock = time.time) -> Session:
    """Run the handshake as responder on an accepted stream pair.

    On any failure the connection is closed and a HandshakeError subclass is raised (a bad
    local key or AD raises ValueError, also after closing the connection).
    """
    try:
        handshake = Handshake(initiator=False, link_key=link_key,
                              additional_data=additional_data,
                              kem=kem, rng=rng, clock=clock)
    except ValueError:
        await _close_writer(writer)
        raise
    _enable_keepalive(writer)
    return await _establish(reader, writer, handshake, authenticator, handshake_timeout)
