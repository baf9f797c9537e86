"""The provider role of a running node (`Server.IsProvider = true`; spec: Katzenpost mix server,
provider; docs/provider.md).

`ProviderRole` builds `katzenpost.provider.provider.Provider` with the node's pipeline and PKI
worker behind its callables, and keeps what the node does for it at epoch changes: the
document's `SendRatePerMinute` (when it changed), `EnableEphemeralClients` vacuuming and the
plugins' descriptor parameters. The node passes `role.provider` to the listeners as their client
service (authentication first, RetrieveMessage / GetConsensus, the per-client send gate).
"""
from __future__ import annotations

import asyncio
import logging
import time

from katzenpost.provider.provider import Provider, ProviderError
from katzenpost.tasks import cancel_and_wait
from katzenpost.wire.commands import ConsensusStatus

log = logging.getLogger("katzenpost.provider")


class ProviderRole:
    """The provider's place in the node's start, epoch-change and halt steps."""

    def __init__(self, node) -> None:
        self._node = node
        self.provider = Provider(node.config, schedule=self._schedule,
                                 get_raw_consensus=self._raw_consensus, submit_packet=self._submit)
        self._document_rate: int | None = None      # the last SendRatePerMinute a document gave
        self._tasks: set[asyncio.Task] = set()

    # --- the provider's callables (resolved at call time: the pipeline and the PKI worker are
    # built after the provider, in the reference's start order) -----------------------------

    def _schedule(self, packets, delay_ms, node_ids) -> None:
        pipeline = self._node.pipeline
        if pipeline is None:
            log.debug("dropping %d locally made packets: no pipeline", len(packets))
            return
        pipeline.schedule(packets, delay_ms, node_ids)

    def _raw_consensus(self, epoch: int) -> tuple[ConsensusStatus, bytes]:
        pki = self._node.pki
        if pki is None:
            return ConsensusStatus.NOT_FOUND, b""
        return pki.get_raw_consensus(epoch)

    def _submit(self, packet) -> None:
        self._node.pipeline.submit(packet, time.monotonic_ns(), True)

    # --- start / epoch change / halt -----------------------------------------------------

    async def start(self) -> None:
        """Step 9: databases (schema checked), spool vacuum, Kaetzchen and plugins."""
        await self.provider.start()

    def attach(self, pipeline) -> None:
        """After the pipeline started: Kaetzchen recipients go to the Kaetzchen, not the spool."""
        pipeline.set_kaetzchen_endpoints(self.provider.kaetzchen_endpoints())

    def on_epoch_change(self, doc) -> None:
        rate = int(doc.send_rate_per_minute)
        if rate != self._document_rate:
            # Only a change: a SEND_RATE from the operator stands until the document changes.
            self._document_rate = rate
            self.provider.set_send_rate(rate)
        self._spawn(self._epoch_work(), "provider-epoch")

    async def _epoch_work(self) -> None:
        try:
            removed = await self.provider.vacuum_expired()
        except Exception as exc:            # a database that went away: next epoch again
            log.warning("ephemeral clients not vacuumed: %s", exc)
        else:
            if removed:
                log.info("Removed %d ephemeral users that were not connected", removed)
        await self.provider.refresh_plugin_parameters()

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def halt(self) -> None:
        """Between the crypto workers and the scheduler: commit what is queued (its SURB-ACKs
        still reach the scheduler), stop plugins, close the databases."""
        await cancel_and_wait(list(self._tasks), "provider epoch work")
        await self.provider.halt()

    def status(self) -> dict:
        provider = self.provider
        return {"stored": provider.writer.stored, "surb_acks": provider.writer.acks_sent,
                "clients": len(provider.clients.connected_users()),
                "kaetzchen_replies": provider.kaetzchen.replies,
                "drops": {k: v for k, v in dict(provider.drops).items() if v}}


__all__ = ["ProviderRole", "ProviderError"]
