"""Client traffic for the test network: the users write to each other across the two providers
and call the providers' services, at a fixed rate; every reply is checked.

Kinds, in a fixed rotation: `message` (to the other user, with a SURB-ACK; the recipient's
client must then retrieve it), `echo` (the reply must repeat the request), `loop` (an empty
reply), `keyserver` (the reply must carry the other user's registered identity key). Each
user sends in turn, to the other user's provider, so every request crosses the network.
Packets are built ahead in batches (`load.Prebuilt`), one `Client.build` per user and batch.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
from dataclasses import replace

from katzenpost.client.load import Prebuilt, TrafficStats
from katzenpost.client.session import Client, ClientError, Inbound, Send
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
        self.prebuilt = Prebuilt(self.build)
        self.prepare = self.prebuilt.prepare       # run_load's hook: build a batch ahead

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

    def _plan(self, index: int):
        """Who sends what for traffic item `index`: (sender, kind, Send, reply check or None)."""
        sender = self._users[index % len(self._users)]
        kind = ROTATION[(index // len(self._users)) % len(ROTATION)]
        peer = self._peer[sender]
        if kind == "message":
            token = f"{index}-{os.urandom(4).hex()}".encode()
            return sender, kind, Send(recipient=peer.name, provider=peer.provider, body=_TAG + token), token
        if kind == "echo":
            body = _TAG + f"echo {index}".encode()
            return sender, kind, Send(service="echo", provider=peer.provider, body=body), \
                (lambda reply, b=body: reply.startswith(b))
        if kind == "loop":
            return sender, kind, Send(service="loop", provider=peer.provider), \
                (lambda reply: not reply.strip(b"\x00"))
        query = json.dumps({"Version": 0, "User": peer.name}).encode()
        expected = base64.b64encode(bytes.fromhex(peer.identity_key)).decode()
        return sender, kind, Send(service="keyserver", provider=peer.provider, body=query), \
            (lambda reply, e=expected: _key_of(reply) == e)

    async def build(self, indices: list[int], times: list[float]) -> list:
        """The packets of a batch of traffic items, one `Client.build` per sender (see
        `load.Prebuilt`); a sender whose build fails has its items fail alone."""
        plans = [self._plan(i) for i in indices]
        by_sender: dict[str, list[int]] = {}
        for position, (sender, *_rest) in enumerate(plans):
            by_sender.setdefault(sender, []).append(position)
        items: list = [None] * len(indices)
        for sender, positions in by_sender.items():
            sends = [replace(plans[p][2], start=times[p]) for p in positions]
            try:
                built = await self.clients[sender].build(sends)
            except ClientError as err:
                built = [err] * len(positions)
            for p, outgoing in zip(positions, built):
                sender, kind, _, extra = plans[p]
                items[p] = outgoing if isinstance(outgoing, Exception) else (sender, kind, outgoing, extra)
        return items

    async def send_one(self, index: int) -> None:
        """Send traffic item `index`, built ahead by `prepare` (run_load's hook)."""
        kind = ROTATION[(index // len(self._users)) % len(ROTATION)]
        try:
            sender, kind, outgoing, extra = self.prebuilt.take(index)
            pending = await self.clients[sender].send_built(outgoing)
        except ClientError as err:
            self.stats.send_failed(kind, err)
            return
        if kind == "message":
            recipient = self._peer[sender].name
            pending.result.add_done_callback(lambda f, t=extra, r=recipient: self._acked(f, t, r))
            self.stats.track(kind, pending)
        else:
            self.stats.track(kind, pending, check=extra)

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
