"""Delivery of terminal packets into the spool: recipient fix-up, payload parsing, one group
commit for everything pending, then the SURB-ACKs of what was committed (never before: a
SURB-ACK tells the sender the message is safe). Runs on the I/O thread; the storage calls run
on the storage threads."""
from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass, field

import numpy as np

from katzenpost import sphinx
from katzenpost.provider.payload import PayloadError, parse_forward_payload, surb_ack_payload
from katzenpost.provider.spool.base import SpoolRecord
from katzenpost.provider.usernames import InvalidUsername, UsernamePolicy
from katzenpost.server import workers
from katzenpost.sphinx.geometry import HEADER_LENGTH, NODE_ID_LENGTH, PACKET_LENGTH, PAYLOAD_TAG_LENGTH

MAX_PENDING = 8192  # rows waiting for the spool; above it new rows are dropped (no SURB-ACK)
_FORWARD_PAYLOAD_OFFSET = HEADER_LENGTH + PAYLOAD_TAG_LENGTH  # 476: the decrypted 2048 bytes
log = logging.getLogger("katzenpost.provider")


@dataclass(slots=True)
class Pending:
    """Rows of one or more local batches waiting for the same commit."""

    records: list[SpoolRecord] = field(default_factory=list)
    acks: list[tuple[int, bytes, int]] = field(default_factory=list)  # (record index, SURB, delay ms)


class SpoolWriter:
    """Collects deliveries, commits them in batches, hands SURB-ACKs to `schedule`."""

    def __init__(self, storage, policy: UsernamePolicy, schedule, drops: collections.Counter):
        self._storage, self._policy, self._schedule, self.drops = storage, policy, schedule, drops
        self._pending = Pending()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.stored = 0
        self.acks_sent = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="katzenpost-spool-writer")

    def add(self, batch: workers.LocalBatch, rows) -> None:
        """Queue the TO_USER / UNRELIABLE_TO_USER / SURB_REPLY rows `rows` of `batch`."""
        for row in rows:
            if len(self._pending.records) >= MAX_PENDING:
                self.drops["spool_backlog"] += 1
                continue
            self._add_row(batch, int(row))
        if self._pending.records:
            self._idle.clear()
            self._wake.set()

    def _add_row(self, batch, row: int) -> None:
        kind = int(batch.kind[row])
        try:
            user = self._policy.fix_recipient(bytes(batch.recipient[row]))
        except InvalidUsername as err:
            log.debug("dropping a packet: invalid recipient: %s", err)
            self.drops["invalid_recipient"] += 1
            return
        packet = batch.packets[row]
        if kind == workers.KIND_SURB_REPLY:
            self._pending.records.append(SpoolRecord(user, bytes(batch.surb_id[row]),
                                                     bytes(packet[HEADER_LENGTH:PACKET_LENGTH])))
            return
        try:
            surb, body = parse_forward_payload(packet[_FORWARD_PAYLOAD_OFFSET:PACKET_LENGTH])
        except PayloadError as err:
            log.debug("dropping a packet: %s", err)
            self.drops["malformed_payload"] += 1
            return
        self._pending.records.append(SpoolRecord(user, None, body))
        if surb is not None and kind == workers.KIND_TO_USER:
            self._pending.acks.append((len(self._pending.records) - 1, surb, int(batch.delay_ms[row])))

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, Pending()
            if pending.records:
                await self._commit(pending)
            if not self._pending.records:
                self._idle.set()

    async def _commit(self, pending: Pending) -> None:
        try:
            stored, acks = await self._storage.run(_store_and_build_acks, self._storage, pending)
        except Exception as err:
            self.drops["spool_write_failed"] += len(pending.records)
            log.warning("spool write failed, %d packets lost (no SURB-ACK): %s", len(pending.records), err)
            return
        self.drops["unknown_recipient"] += len(pending.records) - stored
        self.stored += stored
        if acks is not None:
            self._schedule(*acks)
            self.acks_sent += len(acks[0])

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far is committed (or failed)."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def halt(self) -> None:
        try:
            await self.flush(10.0)
        except asyncio.TimeoutError:
            log.warning("halt: %d deliveries not committed", len(self._pending.records))
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _store_and_build_acks(storage, pending: Pending):
    """On a storage thread: drop unknown users, commit the rest, build their SURB-ACKs."""
    known: dict[bytes, bool] = {}
    keep = []
    for record in pending.records:
        if record.user not in known:
            known[record.user] = storage.userdb.exists(record.user)
        keep.append(known[record.user])
    storage.spool.store_batch([r for r, ok in zip(pending.records, keep) if ok])
    # Committed: now, and only now, the SURB-ACKs.
    acked = [(surb, delay) for index, surb, delay in pending.acks if keep[index]]
    return sum(keep), _ack_packets(acked)


def _ack_packets(acked):
    if not acked:
        return None
    packets = np.empty((len(acked), PACKET_LENGTH), np.uint8)
    hops = np.empty((len(acked), NODE_ID_LENGTH), np.uint8)
    delays = np.empty(len(acked), np.uint32)
    built = 0
    for surb, delay in acked:
        try:
            packet, first_hop = sphinx.new_packet_from_surb(surb, surb_ack_payload())
        except sphinx.SphinxError as err:  # a malformed SURB from the sender: no ACK
            log.debug("no SURB-ACK: %s", err)
            continue
        packets[built] = np.frombuffer(packet, np.uint8)
        hops[built] = np.frombuffer(first_hop, np.uint8)
        delays[built] = delay
        built += 1
    return (packets[:built], delays[:built], hops[:built]) if built else None
