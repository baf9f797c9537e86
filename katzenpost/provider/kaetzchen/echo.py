"""The built-in `echo` agent (an extension; the reference runs echo as a plugin): with a SURB,
the reply is the request's 1490-byte plaintext, padding included; without one, nothing."""
from __future__ import annotations

from katzenpost.provider.kaetzchen.base import BuiltInService


class EchoService(BuiltInService):
    capability = "echo"

    async def on_request(self, request_id: int, payload: bytes, has_surb: bool) -> bytes | None:
        return bytes(payload) if has_surb else None
