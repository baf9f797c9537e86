"""The non-voting authority daemon's network side: listeners, one command per connection, worker.

Speaks the wire protocol as responder (AD = identity key, static key = ToECDH(identity)),
serves GetConsensus to anyone and PostDescriptor to whitelisted nodes. Connections are handled
concurrently and bounded; a bad or silent peer can only lose its own connection.
"""
from __future__ import annotations

import asyncio
import logging

from katzenpost.log import NOTICE
from katzenpost.authority.state import AuthorityState
from katzenpost.authority.store import StoreError
from katzenpost.pki.keyconv import x25519_public_from_ed25519_public
from katzenpost.sphinx.geometry import NODE_ID_LENGTH
from katzenpost.wire import session as wire_session
from katzenpost.wire.commands import Consensus, GetConsensus, PostDescriptor, PostDescriptorStatus
from katzenpost.wire.errors import WireError
from katzenpost.wire.handshake import PeerCredentials

log = logging.getLogger("katzenpost.authority")
# Woken this long after a deadline, so `till` is strictly below it despite clock rounding.
DEADLINE_MARGIN = 0.01

HANDSHAKE_TIMEOUT = 30.0  # handshake plus the first command
RESPONSE_TIMEOUT = 60.0
MAX_CONNECTIONS = 256


class NodeAuthenticator:
    """Anonymous peers (empty AD) may fetch; a 32-byte AD must be a whitelisted node whose
    static key is ToECDH of that identity; any other AD fails the handshake."""

    def __init__(self, state: AuthorityState) -> None:
        self._state = state

    def is_peer_valid(self, creds: PeerCredentials) -> bool:
        ad = creds.additional_data
        if len(ad) == 0:
            return True
        if len(ad) != NODE_ID_LENGTH or not self._state.is_whitelisted(ad):
            return False
        try:
            return creds.public_key == x25519_public_from_ed25519_public(ad)
        except ValueError:
            return False


class AuthorityServer:
    def __init__(self, state: AuthorityState, identity_seed: bytes, identity_public: bytes,
                 link_private: bytes, *, handshake_timeout: float = HANDSHAKE_TIMEOUT,
                 response_timeout: float = RESPONSE_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.state = state
        self._identity_public = identity_public
        self._link_private = link_private
        self._authenticator = NodeAuthenticator(state)
        self.handshake_timeout = handshake_timeout
        self.response_timeout = response_timeout
        self._slots = max_connections
        self._servers: list[asyncio.base_events.Server] = []
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._connections: set[asyncio.Task] = set()
        self.fatal_error: BaseException | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, addresses: list[tuple[str, int]]) -> list[tuple[str, int]]:
        bound = []
        for host, port in addresses:
            server = await asyncio.start_server(self._on_connection, host, port,
                                                reuse_address=True)
            self._servers.append(server)
            for sock in server.sockets:
                name = sock.getsockname()
                bound.append((name[0], name[1]))
                log.log(NOTICE, "Listening on %s:%d", name[0], name[1])
        self._worker = asyncio.create_task(self._run_worker(), name="authority-worker")
        return bound

    def request_stop(self) -> None:
        """Ask the daemon to stop (safe from a signal handler callback)."""
        self._stopping.set()

    @property
    def active_connections(self) -> int:
        """Connections being served now (at most `max_connections`)."""
        return len(self._connections)

    async def wait_stopped(self) -> None:
        await self._stopping.wait()

    async def stop(self) -> None:
        self._stopping.set()
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    def _fatal(self, exc: BaseException) -> None:
        log.error("Fatal error, shutting down: %s", exc)
        self.fatal_error = exc
        self._stopping.set()

    # --- worker ----------------------------------------------------------------------------

    async def _run_worker(self) -> None:
        tick = self.state.clock.worker_tick()
        while not self._stopping.is_set():
            try:
                self.state.tick(self.state.clock.unix_now())
            except StoreError as exc:
                self._fatal(exc)
                return
            except Exception as exc:  # a bug in one tick must not end document generation unseen
                log.error("Authority worker tick failed (retrying next tick): %r", exc)
            try:
                await asyncio.wait_for(self._wake.wait(), self._next_wait(tick))
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    def _next_wait(self, tick: float) -> float:
        """Until the next tick, or just past the next generation deadline if that comes first
        (a short test epoch may have less than one tick between P/2 and 3P/8)."""
        deadline = self.state.next_deadline(self.state.clock.unix_now())
        return min(tick, deadline + DEADLINE_MARGIN)

    # --- connections -----------------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        if self._slots <= 0 or self._stopping.is_set():
            log.warning("Too many connections; refusing one")
            log.debug("Refused the connection from %s", writer.get_extra_info("peername"))
            writer.transport.abort()
            return
        self._slots -= 1
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            await self._serve_one(reader, writer)
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
        except Exception as exc:  # one connection's bug must not take the daemon down
            log.error("Unexpected error on a connection: %r", exc)
            writer.transport.abort()
        finally:
            self._slots += 1
            self._connections.discard(task)

    async def _serve_one(self, reader, writer) -> None:
        deadline = asyncio.get_running_loop().time() + self.handshake_timeout
        try:
            session = await wire_session.accept(
                reader, writer, link_key=self._link_private,
                additional_data=self._identity_public, authenticator=self._authenticator,
                handshake_timeout=self.handshake_timeout)
        except (WireError, ValueError) as exc:
            log.debug("Handshake failed: %s", exc)
            return
        try:
            remaining = max(0.01, deadline - asyncio.get_running_loop().time())
            command = await session.recv_command(timeout=remaining)
            reply = self._dispatch(command, session.peer_credentials)
            if reply is not None:
                session.write_timeout = self.response_timeout
                await session.send_command(reply)
        except WireError as exc:
            log.debug("Connection ended: %s", exc)
        finally:
            await session.close()

    def _dispatch(self, command, creds: PeerCredentials):
        now = self.state.clock.unix_now()
        if isinstance(command, GetConsensus):
            status, payload = self.state.document_for_epoch(command.epoch, now)
            log.debug("GetConsensus(%d) -> %s", command.epoch, status.name)
            return Consensus(error_code=int(status), payload=payload)
        if isinstance(command, PostDescriptor):
            if len(creds.additional_data) != NODE_ID_LENGTH:
                log.debug("PostDescriptor from an anonymous peer: closing")
                return None
            try:
                result = self.state.post_descriptor(command.epoch, command.payload,
                                                    creds.additional_data, now)
            except StoreError as exc:
                self._fatal(exc)
                return None
            log.info("PostDescriptor(%d) from %s: %s (%s)", command.epoch,
                     creds.additional_data.hex()[:16], result.status.name, result.reason)
            if result.stored:
                self._wake.set()
            return PostDescriptorStatus(error_code=int(result.status))
        log.debug("Unexpected %s: closing", type(command).__name__)
        return None
