"""Delivery of terminal packets into the spool: recipient fix-up, payload parsing, one group
commit for everything pending, then the SURB-ACKs of what was committed (never before: a
SURB-ACK tells the sender the message is safe). The I/O thread only copies the rows; all
per-packet work runs on a storage thread."""
from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass

import numpy as np

from katzenpost import sphinx
from katzenpost.tasks import cancel_and_wait
from katzenpost.provider.payload import PayloadError, parse_forward_payload, surb_ack_payload
from katzenpost.provider.spool.base import SpoolRecord
from katzenpost.provider.usernames import InvalidUsername, UsernamePolicy
from katzenpost.server import workers
from katzenpost.sphinx.geometry import HEADER_LENGTH, NODE_ID_LENGTH, PACKET_LENGTH, PAYLOAD_TAG_LENGTH

MAX_PENDING = 8192  # rows waiting for the spool; above it new rows are dropped (no SURB-ACK)
_FORWARD_PAYLOAD_OFFSET = HEADER_LENGTH + PAYLOAD_TAG_LENGTH  # 476: the decrypted 2048 bytes
log = logging.getLogger("katzenpost.provider")


@dataclass(slots=True)
class Rows:
    """Copies of the delivery rows of one local batch (the batch's arrays are borrowed)."""

    kind: np.ndarray        # uint8[k]
    delay_ms: np.ndarray    # uint32[k]
    recipient: np.ndarray   # uint8[k, 64]
    surb_id: np.ndarray     # uint8[k, 16]
    payload: np.ndarray     # uint8[k, 2064]: the packet after its header

    @classmethod
    def take(cls, batch: workers.LocalBatch, rows: np.ndarray) -> "Rows":
        return cls(batch.kind[rows], batch.delay_ms[rows], batch.recipient[rows], batch.surb_id[rows],
                   batch.packets[rows, HEADER_LENGTH:PACKET_LENGTH])  # fancy indexing copies

    def __len__(self):
        return len(self.kind)


class SpoolWriter:
    """Collects deliveries, commits them in batches, hands SURB-ACKs to `schedule`."""

    def __init__(self, storage, policy: UsernamePolicy, schedule, drops: collections.Counter):
        self._storage, self._policy, self._schedule, self.drops = storage, policy, schedule, drops
        self._pending: list[Rows] = []
        self._pending_rows = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task | None = None
        self.stored = 0
        self.acks_sent = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="katzenpost-spool-writer")

    def add(self, batch: workers.LocalBatch, rows: np.ndarray) -> None:
        """Queue the TO_USER / UNRELIABLE_TO_USER / SURB_REPLY rows `rows` of `batch`."""
        room = MAX_PENDING - self._pending_rows
        if len(rows) > room:
            self.drops["spool_backlog"] += len(rows) - max(room, 0)
            rows = rows[:max(room, 0)]
        if len(rows) == 0:
            return
        self._pending.append(Rows.take(batch, rows))
        self._pending_rows += len(rows)
        self._idle.clear()
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending, self._pending_rows = self._pending, [], 0
            if pending:
                await self._commit(pending)
            if not self._pending:
                self._idle.set()

    async def _commit(self, pending: list[Rows]) -> None:
        total = sum(len(rows) for rows in pending)
        try:
            stored, drops, acks = await self._storage.run(deliver, self._storage, self._policy, pending)
        except Exception as err:
            self.drops["spool_write_failed"] += total
            log.warning("spool write failed, %d packets lost (no SURB-ACK): %s", total, err)
            return
        self.drops.update(drops)
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
            log.warning("halt: %d deliveries not committed", self._pending_rows)
        await cancel_and_wait([self._task], "spool writer")


def deliver(storage, policy: UsernamePolicy, pending: list[Rows]):
    """On a storage thread: parse and check every row, commit the good ones in one transaction,
    then build their SURB-ACKs. Returns (stored, drop counts, ack arrays or None)."""
    drops: collections.Counter = collections.Counter()
    records: list[SpoolRecord] = []
    acks: list[tuple[bytes, int]] = []
    known: dict[bytes, bool] = {}
    for rows in pending:
        for i in range(len(rows)):
            parsed = _parse_row(policy, rows, i, drops)
            if parsed is None:
                continue
            record, surb = parsed
            if record.user not in known:
                known[record.user] = storage.userdb.exists(record.user)
            if not known[record.user]:
                drops["unknown_recipient"] += 1
                continue
            records.append(record)
            if surb is not None:
                acks.append((surb, int(rows.delay_ms[i])))
    storage.spool.store_batch(records)
    # Committed: now, and only now, the SURB-ACKs.
    return len(records), drops, _ack_packets(acks)


def _parse_row(policy: UsernamePolicy, rows: Rows, i: int, drops) -> tuple[SpoolRecord, bytes | None] | None:
    try:
        user = policy.fix_recipient(rows.recipient[i].tobytes())
    except InvalidUsername as err:
        log.debug("dropping a packet: invalid recipient: %s", err)
        drops["invalid_recipient"] += 1
        return None
    kind = int(rows.kind[i])
    if kind == workers.KIND_SURB_REPLY:
        return SpoolRecord(user, rows.surb_id[i].tobytes(), rows.payload[i].tobytes()), None
    try:
        surb, body = parse_forward_payload(rows.payload[i, PAYLOAD_TAG_LENGTH:])
    except PayloadError as err:
        log.debug("dropping a packet: %s", err)
        drops["malformed_payload"] += 1
        return None
    # Only a reliable packet (with a NodeDelay) is acknowledged, as the reference.
    return SpoolRecord(user, None, body), surb if kind == workers.KIND_TO_USER else None


def _ack_packets(acks):
    if not acks:
        return None
    packets = np.empty((len(acks), PACKET_LENGTH), np.uint8)
    hops = np.empty((len(acks), NODE_ID_LENGTH), np.uint8)
    delays = np.empty(len(acks), np.uint32)
    built = 0
    for surb, delay in acks:
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
