"""The connector: one outgoing wire session per next-hop node (spec: Katzenpost mix server,
outgoing connections; docs/node.md).

The PKI worker says which nodes are next hops (`outgoing_destinations()`); the connector keeps a
dialler per node, re-evaluated on every new document and by a periodic sweep, and tears down the
ones that left. A live session is the pipeline's sender for its node; a node without one is not
a destination, so packets for it are dropped and counted (`no_route` in the crypto workers,
`destination_gone` for packets already in the timer wheel), never queued until it returns.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from katzenpost import config as config_module
from katzenpost.pki.descriptor import MixDescriptor
from katzenpost.pki.epochtime import EpochClock
from katzenpost.tasks import STOP_TIMEOUT, cancel_and_wait
from katzenpost.wire import ConnectionClosed, PeerCredentials, Session, WireError, connect

log = logging.getLogger("katzenpost.connector")

REFERENCE_PERIOD = 1200.0
REFERENCE_BACKOFF_STEP = 15.0     # +15 s per failed attempt ...
REFERENCE_BACKOFF_MAX = 120.0     # ... up to 2 minutes
REFERENCE_SWEEP = 180.0           # re-evaluate the destinations every 3 minutes
REFERENCE_FIRST_SWEEP = 15.0
INTERNAL_TRANSPORTS = ("tcp4", "tcp6")


@dataclass(frozen=True)
class ConnectorSettings:
    # No defaults here: the [Debug] configuration is the one source of these timeouts.
    connect_timeout: float
    handshake_timeout: float
    reauth_interval: float
    backoff_step: float = REFERENCE_BACKOFF_STEP
    backoff_max: float = REFERENCE_BACKOFF_MAX
    sweep_interval: float = REFERENCE_SWEEP
    first_sweep: float = REFERENCE_FIRST_SWEEP

    @classmethod
    def from_config(cls, debug, clock: EpochClock) -> "ConnectorSettings":
        """The reference's timings; on a test network with a shorter epoch they shrink in
        proportion to the period, so a restarted peer is redialled within the epoch."""
        scale = min(1.0, clock.period / REFERENCE_PERIOD)
        return cls(connect_timeout=debug.connect_timeout / 1000,
                   handshake_timeout=debug.handshake_timeout / 1000,
                   reauth_interval=debug.reauth_interval / 1000,
                   backoff_step=REFERENCE_BACKOFF_STEP * scale,
                   backoff_max=REFERENCE_BACKOFF_MAX * scale,
                   sweep_interval=REFERENCE_SWEEP * scale,
                   first_sweep=REFERENCE_FIRST_SWEEP * scale)


def dial_addresses(desc: MixDescriptor) -> list[tuple[str, int]]:
    """The descriptor's tcp4 addresses, then its tcp6 ones (the reference's internal transports)."""
    found = []
    for transport in INTERNAL_TRANSPORTS:
        for address in desc.addresses.get(transport, ()):
            try:
                found.append(config_module.split_host_port(address))
            except ValueError:
                log.debug("Skipping the unusable address %r of %s", address, desc.name)
    return found


class SessionSender:
    """The pipeline's sender for one live outgoing session (docs/interfaces.md, Pipeline)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def can_send(self) -> bool:
        return self.session.can_send and self.session.is_writable()

    def send_packets(self, packets) -> None:
        self.session.write_packets(packets)

    async def wait_writable(self) -> None:
        session = self.session
        if not session.can_send:
            # Not yet allowed to send (a peer only in the next document): wait for the
            # re-authentication that lets it, or for the session to end.
            while not session.can_send:
                if session.closed:
                    raise ConnectionClosed("wire: session closed")
                await asyncio.sleep(0.05)
        await session.wait_writable()

    def __repr__(self) -> str:
        return f"<SessionSender {self.session!r}>"


class OutgoingConnection:
    """The dialler and session of one next-hop node."""

    def __init__(self, connector: "Connector", node_id: bytes, desc: MixDescriptor) -> None:
        self.connector = connector
        self.node_id = node_id
        self.desc = desc
        self.session: Session | None = None
        self.sender: SessionSender | None = None
        self.retry_delay = 0.0
        self.attempts = 0
        self.connects = 0
        self._task: asyncio.Task | None = None
        self._recheck = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"outgoing-{self.desc.name}")

    def reauthenticate_soon(self) -> None:
        """Re-check the live session with the PKI now, not at the next ReauthInterval: a new
        document or an epoch boundary can change its verdict (a peer listed only in the next
        epoch's document may send once that epoch starts)."""
        self._recheck.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait([task], f"outgoing connection to {self.desc.name}")
        if self.session is not None:
            await self.session.close("node halting or peer left the PKI", abort=True)

    def _authenticate(self, creds: PeerCredentials) -> tuple[bool, bool]:
        """IsPeerValid as initiator: the expected identity and link key, and the PKI's verdict."""
        if creds.additional_data != self.node_id or creds.public_key != self.desc.link_key:
            return False, False
        return self.connector.pki.authenticate_connection(creds, True)

    def _refresh_descriptor(self) -> bool:
        """Re-check the node with the PKI before a dial; False if it is no longer a next hop."""
        desc = self.connector.pki.outgoing_destinations().get(self.node_id)
        if desc is None:
            return False
        self.desc = desc
        return True

    async def _run(self) -> None:
        settings = self.connector.settings
        while True:
            if not self._refresh_descriptor():
                log.debug("%s is no longer a next hop; its dialler stops", self.desc.name)
                self.connector.forget(self)
                return
            session = await self._dial()
            if session is None:
                continue
            started = time.monotonic()
            self.retry_delay = 0.0
            try:
                await self._serve(session)
            finally:
                self.connector.session_ended(self)
                self.session = self.sender = None
                await session.close("outgoing session ended")
            if time.monotonic() - started < settings.backoff_step:
                self.retry_delay = settings.backoff_step   # a short-lived session: do not hammer

    async def _dial(self) -> Session | None:
        """One round over the node's addresses, after the back-off; None if all failed."""
        settings = self.connector.settings
        if self.retry_delay:
            await asyncio.sleep(self.retry_delay)
        self.retry_delay = min(self.retry_delay + settings.backoff_step, settings.backoff_max)
        for host, port in dial_addresses(self.desc):
            self.attempts += 1
            try:
                session = await connect(host, port, link_key=self.connector.link_key,
                                        additional_data=self.connector.identity_public,
                                        authenticator=self._authenticate,
                                        handshake_timeout=settings.handshake_timeout,
                                        connect_timeout=settings.connect_timeout)
            except (WireError, ValueError, OSError) as exc:
                log.debug("Dialling %s at %s:%d failed: %s", self.desc.name, host, port, exc)
                continue
            self.connects += 1
            log.info("Connected to %s", self.desc.name)
            return session
        return None

    async def _serve(self, session: Session) -> None:
        """Connected state: the session is the pipeline's sender until it ends. Any reverse
        traffic or EOF closes it; the PKI re-checks the peer every ReauthInterval and whenever
        reauthenticate_soon() asks (new document, epoch boundary, early-send window)."""
        self.session = session
        self.sender = SessionSender(session)
        self.connector.session_started(self)
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._watch_reverse_traffic(session))
        self._recheck.clear()                    # the handshake has just asked the PKI
        try:
            while not reader.done():
                recheck = loop.create_task(self._recheck.wait())
                try:
                    await asyncio.wait({reader, recheck}, return_when=asyncio.FIRST_COMPLETED,
                                       timeout=self.connector.settings.reauth_interval)
                finally:
                    recheck.cancel()
                if reader.done():
                    break
                self._recheck.clear()
                valid, can_send = self.connector.pki.authenticate_connection(
                    session.peer_credentials, True)
                if not valid:
                    log.info("%s is no longer valid; disconnecting", self.desc.name)
                    return
                session.can_send = can_send
        finally:
            await cancel_and_wait([reader], f"reader of the session to {self.desc.name}")

    async def _watch_reverse_traffic(self, session: Session) -> None:
        try:
            command = await session.recv_command()
        except WireError:
            return                               # EOF or a broken frame: the session is over
        log.info("%s sent %s on an outgoing connection; closing it", self.desc.name,
                 type(command).__name__)


class Connector:
    """Outgoing connections to the next layer; the pipeline's destinations are its live sessions."""

    def __init__(self, *, pki, pipeline, link_key: bytes, identity_public: bytes,
                 settings: ConnectorSettings) -> None:
        self.pki = pki
        self.pipeline = pipeline
        self.link_key = link_key
        self.identity_public = identity_public
        self.settings = settings
        self.connections: dict[bytes, OutgoingConnection] = {}
        self._live: dict[bytes, SessionSender] = {}
        self._sweeper: asyncio.Task | None = None
        self._teardowns: set[asyncio.Task] = set()
        self._stopping = False

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever(), name="connector-sweep")

    async def stop(self) -> None:
        """Close every outgoing connection (halt step "connector")."""
        self._stopping = True
        sweeper, self._sweeper = self._sweeper, None
        await cancel_and_wait([sweeper], "connector sweep")
        conns = list(self.connections.values())
        self.connections.clear()
        await asyncio.gather(*(c.stop() for c in conns), return_exceptions=True)
        if self._teardowns:   # each is a bounded OutgoingConnection.stop(): let them finish
            await asyncio.wait(list(self._teardowns), timeout=STOP_TIMEOUT)

    async def _sweep_forever(self) -> None:
        await asyncio.sleep(self.settings.first_sweep)
        while True:
            self.update()
            await asyncio.sleep(self.settings.sweep_interval)

    def update(self) -> None:
        """Dial new next hops, drop the ones that left (ForceUpdate: on every new document)."""
        if self._stopping:
            return
        wanted = self.pki.outgoing_destinations()
        for node_id, desc in wanted.items():
            conn = self.connections.get(node_id)
            if conn is None:
                conn = self.connections[node_id] = OutgoingConnection(self, node_id, desc)
                conn.start()
            else:
                conn.desc = desc
        for node_id in [n for n in self.connections if n not in wanted]:
            conn = self.connections.pop(node_id)
            log.debug("Tearing down the connection to %s: it left the PKI", conn.desc.name)
            task = asyncio.get_running_loop().create_task(conn.stop())
            self._teardowns.add(task)                  # the loop keeps only weak references
            task.add_done_callback(self._teardowns.discard)

    def reauthenticate_soon(self) -> None:
        """Every live outgoing session re-checks its peer with the PKI now."""
        for conn in self.connections.values():
            conn.reauthenticate_soon()

    def forget(self, conn: OutgoingConnection) -> None:
        if self.connections.get(conn.node_id) is conn:
            del self.connections[conn.node_id]

    def session_started(self, conn: OutgoingConnection) -> None:
        self._live[conn.node_id] = conn.sender
        self._push_destinations()

    def session_ended(self, conn: OutgoingConnection) -> None:
        if self._live.get(conn.node_id) is conn.sender:
            del self._live[conn.node_id]
            if not self._stopping:
                self._push_destinations()

    def _push_destinations(self) -> None:
        self.pipeline.set_destinations(dict(self._live))

    def status(self) -> dict:
        return {"up": sorted(c.desc.name for c in self.connections.values() if c.session is not None),
                "down": sorted(c.desc.name for c in self.connections.values() if c.session is None)}
