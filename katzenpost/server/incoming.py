"""The node's listeners and incoming sessions (spec: Katzenpost mix server, incoming connections;
docs/node.md).

One TCP listener per `Server.Addresses` entry. Each accepted connection runs the wire handshake
as responder, is authenticated (on a provider as a client first unless already known as a mix,
then against the PKI), and then runs the command loop: SendPacket into the pipeline (a client's
through its send gate, the provider's token bucket), NoOp ignored, Disconnect closes, a client's
RetrieveMessage and GetConsensus to the provider, anything else closes. Commands are read a whole socket read at a time and the
pipeline is flushed once per read. Bounds: concurrent connections and connections still in the
handshake (`[Debug] MaxIncomingConnections`, `MaxPendingHandshakes`).
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from katzenpost import config as config_module
from katzenpost import log as kp_log
from katzenpost.sphinx.geometry import PACKET_LENGTH
from katzenpost.tasks import cancel_and_wait
from katzenpost.wire import PeerCredentials, Session, WireError, accept
from katzenpost.wire.commands import Disconnect, GetConsensus, NoOp, RetrieveMessage, SendPacket

log = logging.getLogger("katzenpost.listener")

COMMANDS_PER_READ = 64
CLIENT_COMMANDS = (RetrieveMessage, GetConsensus)



class ClientService(Protocol):
    """What a provider offers the listeners (katzenpost.provider.provider.Provider)."""

    async def authenticate_client(self, creds: PeerCredentials) -> tuple[bool, bool]:
        """(valid, can_send) for a peer tried as a client; not valid: the PKI decides."""

    async def reauthenticate_client(self, session: Session) -> bool:
        """Still valid (its rate limiter refreshed)? Every ReauthInterval and new document."""

    async def handle_client_command(self, session: Session, command) -> bool:
        """RetrieveMessage or GetConsensus; False closes the connection."""

    def client_send_gate(self, session: Session) -> Callable[[], bool]:
        """The per-packet SendPacket admission of one session (False: dropped silently)."""

    def client_closed(self, session: Session) -> None:
        """The session ended: forget its state."""


class ListenerError(Exception):
    """A listener could not be opened (the node does not start)."""


@dataclass(frozen=True)
class ListenerSettings:
    handshake_timeout: float = 30.0         # seconds
    reauth_interval: float = 30.0           # seconds
    max_connections: int = 4096
    max_handshakes: int = 128

    @classmethod
    def from_config(cls, debug) -> "ListenerSettings":
        return cls(handshake_timeout=debug.handshake_timeout / 1000,
                   reauth_interval=debug.reauth_interval / 1000,
                   max_connections=debug.max_incoming_connections,
                   max_handshakes=debug.max_pending_handshakes)


class IncomingConnection:
    """One accepted connection: its session and what authentication decided about the peer."""

    _serial = itertools.count()

    def __init__(self, listeners: "Listeners") -> None:
        self._listeners = listeners
        self.serial = next(self._serial)        # newer connections have larger serials
        self.session: Session | None = None
        self.from_client = False
        self.is_mix = False

    async def authenticate(self, creds: PeerCredentials) -> tuple[bool, bool]:
        """IsPeerValid for an incoming peer: the provider's clients first, then the PKI."""
        listeners = self._listeners
        if listeners.clients is not None and not self.is_mix:
            valid, can_send = await listeners.clients.authenticate_client(creds)
            if valid:
                self.from_client = True
                return True, bool(can_send)
            if self.from_client:
                return False, False             # a client that is no longer valid
        valid, can_send = listeners.pki.authenticate_connection(creds, False)
        if valid:
            self.is_mix = True
        return bool(valid), bool(valid and can_send)

    async def reauthenticate(self) -> None:
        session = self.session
        if session is None or session.closed:
            return
        if self.from_client:
            valid = await self._listeners.clients.reauthenticate_client(session)
            can_send = valid
        else:
            valid, can_send = await self.authenticate(session.peer_credentials)
        if not valid:
            log.info("Incoming peer is no longer valid; disconnecting")
            await session.close("re-authentication failed", level=logging.INFO)
            return
        session.can_send = can_send


class Listeners:
    """All listeners of the node and their connections (the reference's Listener glue)."""

    def __init__(self, addresses, *, link_key: bytes, identity_public: bytes, pki, pipeline,
                 settings: ListenerSettings, clients: ClientService | None = None) -> None:
        self.addresses = list(addresses)
        self.link_key = link_key
        self.identity_public = identity_public
        self.pki = pki
        self.pipeline = pipeline
        self.settings = settings
        self.clients = clients                  # a provider's client service; None on a mix
        self.connections: set[IncomingConnection] = set()
        self.by_credentials: dict[PeerCredentials, IncomingConnection] = {}
        self.handshaking = 0
        self.refused = 0                        # connections closed at once by the bounds
        self._servers: list[asyncio.base_events.Server] = []
        self._tasks: set[asyncio.Task] = set()
        self._reauth_task: asyncio.Task | None = None
        self.bound: list[tuple[str, int]] = []

    # --- start / stop ----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every address now; any failure closes what was opened and raises ListenerError."""
        try:
            for index, address in enumerate(self.addresses):
                host, port = config_module.split_host_port(address)
                try:
                    server = await asyncio.start_server(self._on_connection, host, port,
                                                        reuse_address=True, backlog=1024)
                except OSError as exc:
                    raise ListenerError(f"listener: cannot listen on {address}: "
                                        f"{exc.strerror or exc}") from None
                self._servers.append(server)
                sockname = server.sockets[0].getsockname()
                self.bound.append((sockname[0], sockname[1]))
                kp_log.notice(logging.getLogger(f"katzenpost.listener:{index}"), "Listening on: %s", address)
        except BaseException:
            await self.stop()
            raise
        self._reauth_task = asyncio.create_task(self._reauth_forever(), name="listener-reauth")

    async def stop(self) -> None:
        """Close the listeners, then every incoming connection (halt step "listeners")."""
        reauth, self._reauth_task = self._reauth_task, None
        await cancel_and_wait([reauth], "listener re-authentication")
        for server in self._servers:
            server.close()
        self._servers = []
        await cancel_and_wait(list(self._tasks), "incoming connections")
        for conn in list(self.connections):
            if conn.session is not None:
                await conn.session.close("node halting", abort=True)
        self.connections.clear()
        self.by_credentials.clear()

    # --- connections -----------------------------------------------------------------------

    def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        settings = self.settings
        if (len(self.connections) + self.handshaking >= settings.max_connections
                or self.handshaking >= settings.max_handshakes):
            self.refused += 1
            log.debug("Refusing a connection from %s: %d connected, %d in the handshake",
                      writer.get_extra_info("peername"), len(self.connections), self.handshaking)
            writer.transport.abort()
            return
        self._spawn(self._serve(reader, writer))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = IncomingConnection(self)
        self.handshaking += 1
        try:
            conn.session = await accept(reader, writer, link_key=self.link_key,
                                        additional_data=self.identity_public,
                                        authenticator=conn.authenticate,
                                        handshake_timeout=self.settings.handshake_timeout)
        except (WireError, ValueError):
            return                               # the wire layer logged why and closed
        finally:
            self.handshaking -= 1
        log.debug("Accepted a %s connection from %s", "client" if conn.from_client else "peer",
                  conn.session.peer_name)
        self.connections.add(conn)
        self._close_old_connections(conn)
        try:
            await self._command_loop(conn)
        except WireError:
            pass                                 # closed (EOF, MAC failure...), logged by the wire
        except Exception:
            log.exception("Incoming connection handler failed")
        finally:
            self.connections.discard(conn)
            creds = conn.session.peer_credentials
            if self.by_credentials.get(creds) is conn:
                del self.by_credentials[creds]
            if conn.from_client:
                self.clients.client_closed(conn.session)
            await conn.session.close("connection handler finished")

    def _close_old_connections(self, conn: IncomingConnection) -> None:
        """CloseOldConns: the newest connection with the same AD and link key wins."""
        creds = conn.session.peer_credentials
        old = self.by_credentials.get(creds)
        self.by_credentials[creds] = conn
        if old is not None and old is not conn and old.session is not None:
            log.debug("Closing an older connection of the same peer")
            self._spawn(old.session.close("replaced by a newer connection", level=logging.DEBUG))

    def _spawn(self, coro) -> None:
        """A background task of the listeners, referenced until done and cancelled at stop."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _command_loop(self, conn: IncomingConnection) -> None:
        session = conn.session
        pipeline = self.pipeline
        submit = pipeline.submit
        from_client = conn.from_client
        # A client's packets pass its token bucket; on a mix's session `admit` is None and the
        # per-packet cost is that one test (no call, no lookup).
        admit = self.clients.client_send_gate(session) if from_client else None
        while True:
            commands = await session.recv_commands(COMMANDS_PER_READ)
            recv_at = time.monotonic_ns()
            submitted = False
            try:
                for command in commands:
                    if not session.can_send:
                        continue                 # the reference ignores every command then
                    kind = type(command)
                    if kind is SendPacket:
                        if len(command.sphinx_packet) != PACKET_LENGTH:
                            await session.close(f"SendPacket of {len(command.sphinx_packet)} bytes",
                                                level=logging.INFO)
                            return
                        if admit is not None and not admit():
                            continue             # over the client's rate: dropped silently
                        submit(command.sphinx_packet, recv_at, from_client, caller_flushes=True)
                        submitted = True
                    elif kind is NoOp:
                        continue
                    elif kind is Disconnect:
                        await session.close("peer sent Disconnect")
                        return
                    elif from_client and kind in CLIENT_COMMANDS:
                        if submitted:            # do not hold packets behind a spool read
                            pipeline.end_of_read()
                            submitted = False
                        if not await self.clients.handle_client_command(session, command):
                            await session.close(f"{kind.__name__} failed", level=logging.INFO)
                            return
                    else:
                        await session.close(f"unexpected command {kind.__name__}", level=logging.INFO)
                        return
            finally:
                if submitted:
                    pipeline.end_of_read()

    # --- re-authentication -----------------------------------------------------------------

    async def _reauth_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reauth_interval)
            await self.reauthenticate_all()

    def reauthenticate_soon(self) -> None:
        """reauthenticate_all() in the background (a new document arrived)."""
        self._spawn(self.reauthenticate_all())

    async def reauthenticate_all(self) -> None:
        """Re-check every connection against the PKI (every ReauthInterval, and when a new
        document arrives); a peer that is no longer valid is disconnected."""
        for conn in list(self.connections):
            try:
                await conn.reauthenticate()
            except Exception:
                log.exception("Re-authentication of an incoming peer failed")
