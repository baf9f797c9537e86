"""The provider as the node sees it: built from the configuration, it owns the storage, the
Kaetzchen services and plugins, client state and the spool writer. The node hands it client
credentials and commands, terminal packets (`on_local`) and management lines; it hands back
reply packets through `schedule` and client packets through `submit_packet`."""
from __future__ import annotations

import collections
import logging
import time
from typing import Callable

import numpy as np

from katzenpost.provider.clients import ClientHandler
from katzenpost.provider.delivery import SpoolWriter
from katzenpost.provider.kaetzchen.cborplugin import CBORPluginService, PluginError
from katzenpost.provider.kaetzchen.dispatcher import KaetzchenDispatcher
from katzenpost.provider.kaetzchen.echo import EchoService
from katzenpost.provider.kaetzchen.keyserver import KeyserverService
from katzenpost.provider.kaetzchen.loop import LoopService
from katzenpost.provider.ratelimit import RateSettings
from katzenpost.provider.registration import RegistrationService
from katzenpost.provider.storage import Storage
from katzenpost.provider.user_commands import UserCommands
from katzenpost.provider.userdb.base import UserDBError
from katzenpost.provider.usernames import UsernamePolicy
from katzenpost.server import workers
from katzenpost.sphinx.geometry import HEADER_LENGTH, PACKET_LENGTH, PAYLOAD_TAG_LENGTH

BUILT_IN = {"loop": LoopService, "keyserver": KeyserverService, "echo": EchoService}
_DELIVERY_KINDS = (workers.KIND_TO_USER, workers.KIND_UNRELIABLE_TO_USER, workers.KIND_SURB_REPLY)
log = logging.getLogger("katzenpost.provider")


class ProviderError(Exception):
    """The provider cannot start (a database, a Kaetzchen or a plugin)."""


class Provider:
    def __init__(self, cfg, *, schedule: Callable, get_raw_consensus: Callable, submit_packet: Callable,
                 clock_ns: Callable[[], int] = time.monotonic_ns):
        """`schedule(packets uint8[k, L], delay_ms uint32[k], node_ids uint8[k, 32])` sends reply
        packets (SURB-ACKs, Kaetzchen answers) after their delay; `get_raw_consensus(epoch)` →
        (status, bytes); `submit_packet(packet)` takes a client's SendPacket into the pipeline."""
        if cfg.provider is None:
            raise ProviderError("provider: the configuration is not a provider's (Server.IsProvider)")
        self.cfg = cfg
        self.policy = UsernamePolicy.from_config(cfg.provider)
        self.drops: collections.Counter = collections.Counter()
        self.rate = RateSettings(disabled=cfg.debug.disable_rate_limit)
        self.storage = Storage(cfg.provider, cfg.debug.num_provider_workers)
        self._schedule, self._clock_ns = schedule, clock_ns
        self._delay_ns = cfg.debug.provider_delay * 1_000_000
        self.clients = ClientHandler(self.storage, self.policy, self.rate,
                                     trust_on_first_use=cfg.provider.trust_on_first_use,
                                     get_raw_consensus=get_raw_consensus, submit_packet=submit_packet,
                                     drops=self.drops)
        self.writer = SpoolWriter(self.storage, self.policy, schedule, self.drops)
        self.kaetzchen = KaetzchenDispatcher(self._services(), kaetzchen_delay_ms=cfg.debug.kaetzchen_delay,
                                             schedule=schedule, drops=self.drops, clock_ns=clock_ns)
        self.user_commands = UserCommands(self.storage, self.policy)
        self.registration = None
        if cfg.provider.enable_user_registration_http:
            self.registration = RegistrationService(cfg.provider.user_registration_http_addresses,
                                                    self.storage, self.policy)
        self._started = False

    def _services(self):
        services = []
        for entry in self.cfg.provider.kaetzchen:
            if entry.disable:
                log.info("Skipping disabled Kaetzchen: '%s'.", entry.capability)
                continue
            kind = BUILT_IN.get(entry.capability)
            if kind is None:
                raise ProviderError(f"provider: Kaetzchen: Unsupported capability '{entry.capability}'")
            workers_n = self.cfg.debug.num_kaetzchen_workers
            services.append(KeyserverService(entry.endpoint, self._lookup_identity, workers_n)
                            if kind is KeyserverService else kind(entry.endpoint, workers_n))
        for entry in self.cfg.provider.cbor_plugin_kaetzchen:
            if entry.disable:
                log.info("Skipping disabled Kaetzchen: '%s'.", entry.capability)
                continue
            services.append(CBORPluginService.from_config(entry))
        return services

    async def _lookup_identity(self, user: bytes) -> bytes | None:
        try:
            return await self.storage.run(self.storage.userdb.identity, user)
        except UserDBError:
            return None

    # ------------------------------------------------------------------ start / halt

    async def start(self) -> None:
        """Open the databases (schema checked), vacuum the spool, start Kaetzchen and plugins."""
        try:
            await self.storage.run(self.storage.open)
            removed = await self.storage.run(self.storage.spool.vacuum, self.storage.userdb)
            if removed:
                log.info("spool: removed the spools of %d users no longer in the user database", removed)
            await self.kaetzchen.start()
            if self.registration is not None:
                await self._start_registration()
        except ProviderError:
            await self._close_storage()
            raise
        except Exception as err:  # a database, a plugin that cannot start, ...
            await self._close_storage()
            raise ProviderError(f"provider: {err}") from err
        self.writer.start()
        self._started = True

    async def _start_registration(self) -> None:
        try:
            await self.registration.start()
        except BaseException:
            await self.registration.halt()
            await self.kaetzchen.halt()
            raise

    async def halt(self) -> None:
        """Commit what is queued, stop Kaetzchen and plugins, close the databases; idempotent."""
        if self.registration is not None:
            await self.registration.halt()
        if self._started:
            await self.writer.halt()
            await self.kaetzchen.halt()
            self._started = False
        await self._close_storage()

    async def _close_storage(self) -> None:
        self.storage.shutdown()

    # ------------------------------------------------------------------ clients

    async def authenticate_client(self, creds) -> tuple[bool, bool]:
        return await self.clients.authenticate(creds)

    async def reauthenticate_client(self, session) -> bool:
        return await self.clients.reauthenticate(session)

    async def handle_client_command(self, session, cmd) -> bool:
        return await self.clients.handle(session, cmd)

    def client_send_gate(self, session) -> Callable[[], bool]:
        """The per-packet rate check of a client session's SendPackets (the node's command loop
        submits them itself)."""
        return self.clients.send_gate(session)

    def client_closed(self, session) -> None:
        self.clients.forget(session)

    # ------------------------------------------------------------------ delivery

    def on_local(self, batch: workers.LocalBatch) -> None:
        """Terminal packets from the pipeline (I/O thread, never blocks)."""
        if not len(batch):
            return
        kinds = np.asarray(batch.kind)
        kaetzchen_rows = np.flatnonzero(kinds == workers.KIND_KAETZCHEN)
        delivery_rows = np.flatnonzero(np.isin(kinds, _DELIVERY_KINDS))
        for row in kaetzchen_rows:
            payload = batch.packets[row, HEADER_LENGTH + PAYLOAD_TAG_LENGTH:PACKET_LENGTH]
            # The worker's classification does not tell a request without NodeDelay apart;
            # its delay (0) is then reused for the reply.
            self.kaetzchen.submit(bytes(batch.recipient[row]), bytes(payload), int(batch.delay_ms[row]),
                                  True, batch.dispatch_ns)
        if len(delivery_rows) == 0:
            return
        if self._clock_ns() - batch.dispatch_ns > self._delay_ns:
            self.drops["provider_delay"] += len(delivery_rows)
            return
        self.writer.add(batch, delivery_rows)

    # ------------------------------------------------------------------ PKI and management

    def kaetzchen_for_pki(self) -> dict[str, dict]:
        return self.kaetzchen.kaetzchen_for_pki()

    def kaetzchen_endpoints(self) -> list[bytes]:
        """The 64-byte recipient IDs for `Pipeline.set_kaetzchen_endpoints`."""
        return self.kaetzchen.endpoint_ids()

    async def refresh_plugin_parameters(self) -> None:
        """Before a descriptor publication; a failing plugin keeps its last parameters."""
        for service in self.kaetzchen.services:
            if isinstance(service, CBORPluginService):
                try:
                    await service.refresh_parameters()
                except PluginError as err:
                    log.warning("plugin %s: parameters not refreshed: %s", service.capability, err)

    async def vacuum_expired(self) -> int:
        """`EnableEphemeralClients`: once an epoch, forget every user that has a spool and is
        not connected now (user and spool). Returns how many; 0 when the option is off."""
        if not self.cfg.provider.enable_ephemeral_clients:
            return 0
        return await self.storage.run(_remove_disconnected, self.storage, self.clients.connected_users())

    def set_send_rate(self, per_minute: int) -> None:
        """SEND_RATE, or the document's SendRatePerMinute; connections see it at re-authentication."""
        self.rate.send_rate_per_minute = int(per_minute)

    def set_send_burst(self, burst: int) -> None:
        self.rate.send_burst = int(burst)


def _remove_disconnected(storage, connected: set[bytes]) -> int:
    removed = 0
    for user in storage.spool.spooled_users():
        if user in connected:
            continue
        try:
            storage.userdb.remove(user)
        except UserDBError:
            pass  # already gone (or an extern database): the spool goes anyway
        storage.spool.remove(user)
        removed += 1
    return removed
