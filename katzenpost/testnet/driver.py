"""Client traffic for the test network: the users write to each other across the two providers
and call the providers' services, at a fixed rate; every reply is checked.

Kinds, in a fixed rotation: `message` (to the other user, with a SURB-ACK; the recipient's
client must then retrieve it), `echo` (the reply must repeat the request), `loop` (an empty
reply), `keyserver` (the reply must carry the other user's registered identity key). Each
user sends in turn, to the other user's provider, so every request crosses the network.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os

from katzenpost.client.load import TrafficStats
from katzenpost.client.session import Client, ClientError, Inbound
from katzenpost.testnet.layout import Plan

ROTATION = ("message", "echo", "message", "loop", "message", "keyserver")
_TAG = b"kp-testnet "


class TrafficDriver:
    def __init__(self, plan: Plan, stats: TrafficStats):
        self.plan = plan
        self.stats = stats
        self.clients: dict[str, Client] = {}
        self.acked: dict[bytes, str] = {}          # message token -> recipient
        self.retrieved: dict[str, set[bytes]] = {u.name: set() for u in plan.users}
        self.duplicates = 0
        self._users = [u.name for u in plan.users]
        self._peer = {u.name: next(v for v in plan.users if v.name != u.name) for u in plan.users}

    def on_message(self, user: str):
        """The inbox callback for `user`'s client: note which test messages arrived."""
        def receive(message: Inbound) -> None:
            text = message.text
            if not text.startswith(_TAG):
                return
            token = text[len(_TAG):]
            if token in self.retrieved[user]:
                self.duplicates += 1
            self.retrieved[user].add(token)
        return receive

    async def send_one(self, index: int) -> None:
        sender = self._users[index % len(self._users)]
        kind = ROTATION[(index // len(self._users)) % len(ROTATION)]
        peer = self._peer[sender]
        client = self.clients[sender]
        try:
            if kind == "message":
                token = f"{index}-{os.urandom(4).hex()}".encode()
                pending = await client.send_message(peer.name, peer.provider, _TAG + token)
                pending.result.add_done_callback(lambda f, t=token, r=peer.name: self._acked(f, t, r))
                self.stats.track(kind, pending)
            elif kind == "echo":
                body = _TAG + f"echo {index}".encode()
                pending = await client.request("echo", peer.provider, body)
                self.stats.track(kind, pending, check=lambda reply, b=body: reply.startswith(b))
            elif kind == "loop":
                pending = await client.request("loop", peer.provider, b"")
                self.stats.track(kind, pending, check=lambda reply: not reply.strip(b"\x00"))
            else:
                query = json.dumps({"Version": 0, "User": peer.name}).encode()
                pending = await client.request("keyserver", peer.provider, query)
                expected = base64.b64encode(bytes.fromhex(peer.identity_key)).decode()
                self.stats.track(kind, pending, check=lambda reply, e=expected: _key_of(reply) == e)
        except ClientError as err:
            self.stats.send_failed(kind, err)

    def _acked(self, future: asyncio.Future, token: bytes, recipient: str) -> None:
        if not future.cancelled() and future.exception() is None:
            self.acked[token] = recipient

    def acked_not_retrieved(self) -> list[bytes]:
        return [t for t, user in self.acked.items() if t not in self.retrieved[user]]

    async def wait_retrieved(self, timeout: float) -> bool:
        """Until every acknowledged message was retrieved by its recipient (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.acked_not_retrieved() and loop.time() < deadline:
            await asyncio.sleep(0.2)
        return not self.acked_not_retrieved()


def _key_of(reply: bytes) -> str | None:
    try:
        answer = json.loads(reply.rstrip(b"\x00").decode())
    except (UnicodeDecodeError, ValueError):
        return None
    return answer.get("PublicKey") if isinstance(answer, dict) and answer.get("StatusCode") == 0 else None
