"""The built-in `loop` agent: with a SURB, an empty reply (clients' loop decoys); else nothing."""
from __future__ import annotations

from katzenpost.provider.kaetzchen.base import KaetzchenService


class LoopService(KaetzchenService):
    capability = "loop"

    def __init__(self, endpoint: str, concurrency: int = 1):
        self.endpoint = endpoint
        self.concurrency = concurrency

    async def on_request(self, request_id: int, payload: bytes, has_surb: bool) -> bytes | None:
        return b"" if has_surb else None
