"""The contract every Kaetzchen service (built-in agent or plugin) fulfils for the dispatcher."""
from __future__ import annotations

import abc
from typing import Mapping


class KaetzchenService(abc.ABC):
    capability: str
    endpoint: str
    # Requests this service can work on at once (the dispatcher starts that many workers).
    concurrency: int = 1

    def parameters(self) -> Mapping[str, object]:
        """What the descriptor advertises besides "endpoint" (the dispatcher adds that)."""
        return {}

    @abc.abstractmethod
    async def on_request(self, request_id: int, payload: bytes, has_surb: bool) -> bytes | None:
        """The response body (≤ 2046 bytes) or None for no reply. Raising drops the request."""

    async def start(self) -> None:
        """Bring the service up (a plugin launches its processes); raising aborts the start."""

    async def halt(self) -> None:
        """Stop; idempotent."""


class BuiltInService(KaetzchenService):
    """A service answered inside the provider, by `concurrency` workers."""

    def __init__(self, endpoint: str, concurrency: int = 1):
        self.endpoint = endpoint
        self.concurrency = concurrency
