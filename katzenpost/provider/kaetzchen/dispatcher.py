"""Routes Kaetzchen requests (packets addressed to a service endpoint) to their service's workers
and sends each reply back through the request's SURB. Requests that waited longer than
KaetzchenDelay, malformed payloads and overflowing queues are dropped and counted."""
from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from katzenpost import sphinx
from katzenpost.tasks import cancel_and_wait
from katzenpost.provider.kaetzchen.base import KaetzchenService
from katzenpost.provider.payload import PayloadError, parse_forward_payload, reply_payload
from katzenpost.sphinx.geometry import NODE_ID_LENGTH, PACKET_LENGTH, RECIPIENT_ID_LENGTH

QUEUE_LIMIT = 1024  # requests waiting per service; the reference's queue was unbounded
log = logging.getLogger("katzenpost.provider.kaetzchen")


def endpoint_id(endpoint: str) -> bytes:
    """The 64-byte NUL-padded recipient a service is reached at (compared exactly, unnormalised)."""
    raw = endpoint.encode("utf-8")
    if not 0 < len(raw) <= RECIPIENT_ID_LENGTH:
        raise ValueError(f"kaetzchen: endpoint '{endpoint}' must be 1..{RECIPIENT_ID_LENGTH} bytes")
    return raw.ljust(RECIPIENT_ID_LENGTH, b"\x00")


@dataclass(frozen=True, slots=True)
class Request:
    request_id: int
    surb: bytes | None
    body: bytes          # the 1490-byte plaintext, padding included
    delay_ms: int        # the request's NodeDelay, reused for the reply (0: cannot be answered)
    dispatch_ns: int     # monotonic ns when the crypto worker handed it on


def reply_packet(surb: bytes, response: bytes | None) -> tuple[bytes, bytes]:
    """(2524-byte reply packet, first hop) for a response body."""
    packet, first_hop = sphinx.new_packet_from_surb(surb, reply_payload(response))
    return packet, first_hop


def schedule_one(schedule, packet: bytes, delay_ms: int, first_hop: bytes) -> None:
    schedule(np.frombuffer(packet, np.uint8).reshape(1, PACKET_LENGTH),
             np.array([delay_ms], np.uint32),
             np.frombuffer(first_hop, np.uint8).reshape(1, NODE_ID_LENGTH))


class KaetzchenDispatcher:
    def __init__(self, services: Iterable[KaetzchenService], *, kaetzchen_delay_ms: int,
                 schedule: Callable, drops: collections.Counter | None = None,
                 clock_ns: Callable[[], int] = time.monotonic_ns, queue_limit: int = QUEUE_LIMIT):
        self.services = list(services)
        self.by_endpoint = {endpoint_id(s.endpoint): s for s in self.services}
        if len(self.by_endpoint) != len(self.services):
            raise ValueError("kaetzchen: an endpoint is used by more than one service")
        self._delay_ns = kaetzchen_delay_ms * 1_000_000
        self._schedule = schedule
        self.drops = drops if drops is not None else collections.Counter()
        self.replies = 0
        self._clock_ns = clock_ns
        self._queues = {id(s): asyncio.Queue(queue_limit) for s in self.services}
        self._workers: list[asyncio.Task] = []
        self._ids = itertools.count(1)

    def endpoint_ids(self) -> list[bytes]:
        return list(self.by_endpoint)

    async def start(self) -> None:
        started = []
        try:
            for service in self.services:
                await service.start()
                started.append(service)
        except BaseException:
            await asyncio.gather(*(s.halt() for s in started), return_exceptions=True)
            raise
        for service in self.services:
            self._workers += [asyncio.create_task(self._work(service)) for _ in range(service.concurrency)]

    def submit(self, recipient: bytes, payload, delay_ms: int, has_node_delay: bool, dispatch_ns: int) -> bool:
        """Queue one request (the packet's 2048-byte decrypted payload); False if dropped."""
        service = self.by_endpoint.get(bytes(recipient))
        if service is None:
            self.drops["kaetzchen_unknown_endpoint"] += 1
            return False
        try:
            surb, body = parse_forward_payload(payload)
        except PayloadError as err:
            log.debug("kaetzchen %s: malformed request: %s", service.capability, err)
            self.drops["kaetzchen_malformed"] += 1
            return False
        # Without a NodeDelay (an unreliable packet) a request cannot be answered.
        request = Request(next(self._ids), surb if has_node_delay else None, body, delay_ms, dispatch_ns)
        try:
            self._queues[id(service)].put_nowait(request)
        except asyncio.QueueFull:
            self.drops["kaetzchen_queue_full"] += 1
            return False
        return True

    async def _work(self, service: KaetzchenService) -> None:
        queue = self._queues[id(service)]
        while True:
            request = await queue.get()
            try:
                await self._handle(service, request)
            except Exception as err:  # a service failure drops this request only
                self.drops["kaetzchen_failed"] += 1
                log.debug("kaetzchen %s: request %d failed: %s", service.capability, request.request_id, err)

    async def _handle(self, service: KaetzchenService, request: Request) -> None:
        if self._clock_ns() - request.dispatch_ns > self._delay_ns:
            self.drops["kaetzchen_delay"] += 1
            return
        response = await service.on_request(request.request_id, request.body, request.surb is not None)
        if response is None or request.surb is None:
            return
        packet, first_hop = reply_packet(request.surb, response)
        schedule_one(self._schedule, packet, request.delay_ms, first_hop)
        self.replies += 1

    def kaetzchen_for_pki(self) -> dict[str, dict]:
        """capability → {"endpoint": …, plus the service's parameters}, for the descriptor."""
        advertised = {}
        for service in self.services:
            params = dict(service.parameters())
            params["endpoint"] = service.endpoint
            advertised[service.capability] = params
        return advertised

    async def halt(self) -> None:
        await cancel_and_wait(self._workers, "Kaetzchen workers")
        self._workers = []
        await asyncio.gather(*(s.halt() for s in self.services), return_exceptions=True)
