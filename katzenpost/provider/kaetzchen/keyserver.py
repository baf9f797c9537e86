"""The built-in `keyserver` agent: `{"Version":0,"User":name}` → the user's identity key, in the
reference's canonical JSON reply. Unknown users get "no identity" too (no enumeration)."""
from __future__ import annotations

import base64
import json
from typing import Awaitable, Callable

from katzenpost.provider.kaetzchen.base import BuiltInService

STATUS_OK = 0
STATUS_SYNTAX_ERROR = 1
STATUS_NO_IDENTITY = 2
_REQUEST_KEYS = {"Version", "User"}


def parse_request(payload: bytes) -> str | None:
    """The requested user name, or None for a malformed request (status 1)."""
    try:
        request = json.loads(bytes(payload).rstrip(b"\x00").decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(request, dict) or not set(request) <= _REQUEST_KEYS:
        return None  # unknown keys are an error, as the reference's strict decoder
    version, user = request.get("Version", 0), request.get("User", "")
    if type(version) is not int or version != 0 or not isinstance(user, str):
        return None
    return user


def encode_reply(user: str, status: int, public_key: bytes | None) -> bytes:
    reply = {"PublicKey": base64.b64encode(public_key).decode() if public_key else "",
             "StatusCode": status, "User": user, "Version": 0}
    return json.dumps(reply, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class KeyserverService(BuiltInService):
    capability = "keyserver"

    def __init__(self, endpoint: str, lookup_identity: Callable[[bytes], Awaitable[bytes | None]],
                 concurrency: int = 1):
        """`lookup_identity(user)` → the identity key, or None (unknown user or no identity)."""
        super().__init__(endpoint, concurrency)
        self._lookup = lookup_identity

    async def on_request(self, request_id: int, payload: bytes, has_surb: bool) -> bytes | None:
        if not has_surb:
            return None
        user = parse_request(payload)
        if user is None:
            return encode_reply("", STATUS_SYNTAX_ERROR, None)
        # The reference looks the name up verbatim, without the username fix-up.
        key = await self._lookup(user.encode("utf-8")) if user else None
        if key is None:
            return encode_reply(user, STATUS_NO_IDENTITY, None)
        return encode_reply(user, STATUS_OK, key)
