"""The built-in `loop` agent: with a SURB, an empty reply (clients' loop decoys); else nothing."""
from __future__ import annotations

from katzenpost.provider.kaetzchen.base import BuiltInService


class LoopService(BuiltInService):
    capability = "loop"

    async def on_request(self, request_id: int, payload: bytes, has_surb: bool) -> bytes | None:
        return b"" if has_surb else None
