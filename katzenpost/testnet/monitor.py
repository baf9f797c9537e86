"""The nodes as the testnet sees them: management-socket commands (user registration, STATUS)
and per-node packet rates from successive STATUS answers."""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

MANAGEMENT_TIMEOUT = 5.0


class ManagementError(Exception):
    pass


async def management(path: str, *lines: str, timeout: float = MANAGEMENT_TIMEOUT) -> list[str]:
    """Send command lines over a node's management socket; the reply line of each."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
    except (OSError, asyncio.TimeoutError) as err:
        raise ManagementError(f"management socket {path}: {err!r}") from None
    try:
        await asyncio.wait_for(reader.readline(), timeout)    # the 220 banner
        replies = []
        for line in lines:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()
            reply = await asyncio.wait_for(reader.readline(), timeout)
            if not reply:
                raise ManagementError(f"management socket {path}: closed after '{line.split()[0]}'")
            replies.append(reply.decode("utf-8", "replace").rstrip("\r\n"))
        return replies
    except (OSError, asyncio.TimeoutError) as err:
        raise ManagementError(f"management socket {path}: {err!r}") from None
    finally:
        writer.close()


async def status(path: str) -> dict:
    reply = (await management(path, "STATUS"))[0]
    if not reply.startswith("250 "):
        raise ManagementError(f"STATUS refused: {reply}")
    try:
        return json.loads(reply[4:])
    except ValueError as err:
        raise ManagementError(f"STATUS is not JSON: {err}") from None


async def register_user(path: str, user: str, link_key_hex: str, identity_key_hex: str) -> None:
    """ADD_USER (or UPDATE_USER if it exists from an earlier run) and SET_USER_IDENTITY."""
    add, = await management(path, f"ADD_USER {user} {link_key_hex}")
    if not add.startswith("250"):
        add, = await management(path, f"UPDATE_USER {user} {link_key_hex}")
    ident, = await management(path, f"SET_USER_IDENTITY {user} {identity_key_hex}")
    for reply, what in ((add, "ADD_USER"), (ident, "SET_USER_IDENTITY")):
        if not reply.startswith("250"):
            raise ManagementError(f"{what} {user}: {reply}")


@dataclass
class NodeView:
    """What the live view shows of one node; rates are from the last two STATUS answers."""

    name: str
    role: str
    up: bool = False
    epoch: int | None = None
    peers_up: int = 0
    peers_known: int = 0
    received: int = 0
    sent: int = 0
    rate_in: float = 0.0
    rate_out: float = 0.0
    drops: dict = field(default_factory=dict)
    mix_keys: list = field(default_factory=list)
    links_up: list = field(default_factory=list)     # peer names, for the report
    links_down: list = field(default_factory=list)
    queues: dict = field(default_factory=dict)
    baseline: dict = field(default_factory=dict)     # drops when the traffic started
    _mark: tuple[float, int, int] | None = None

    def update(self, answer: dict, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        packets = answer.get("packets", {})
        received, sent = int(packets.get("received", 0)), int(packets.get("sent", 0))
        if self._mark is not None and received >= self._mark[1] and now > self._mark[0]:
            elapsed = now - self._mark[0]
            self.rate_in = (received - self._mark[1]) / elapsed
            self.rate_out = (sent - self._mark[2]) / elapsed
        else:   # first answer, or the node restarted (counters from zero)
            self.rate_in = self.rate_out = 0.0
        self._mark = (now, received, sent)
        self.up, self.received, self.sent = True, received, sent
        self.epoch = answer.get("epoch")
        peers = answer.get("peers", {})
        self.peers_up, self.peers_known = int(peers.get("up", 0)), int(peers.get("known", 0))
        self.drops = dict(answer.get("drops", {}))
        self.mix_keys = list(answer.get("mix_keys", []))
        self.links_up = list(peers.get("up_names", []))
        self.links_down = list(peers.get("down_names", []))
        self.queues = dict(answer.get("queues", {}))

    def down(self) -> None:
        self.up, self.rate_in, self.rate_out, self._mark = False, 0.0, 0.0, None

    @property
    def dropped(self) -> int:
        return sum(int(v) for v in self.drops.values())

    def mark_baseline(self) -> None:
        self.baseline = dict(self.drops)

    def drops_since_baseline(self) -> dict:
        """Drops by reason since `mark_baseline()`; a node that restarted since counts from 0."""
        restarted = any(int(self.drops.get(k, 0)) < int(v) for k, v in self.baseline.items())
        since = {}
        for reason, count in self.drops.items():
            delta = int(count) - (0 if restarted else int(self.baseline.get(reason, 0)))
            if delta:
                since[reason] = delta
        return since

    def as_dict(self) -> dict:
        return {"name": self.name, "role": self.role, "up": self.up, "epoch": self.epoch,
                "peers_up": self.peers_up, "peers_known": self.peers_known,
                "packets_received": self.received, "packets_sent": self.sent,
                "drops": self.drops_since_baseline(), "drops_since_start": self.drops,
                "mix_keys": self.mix_keys, "links_up": self.links_up, "links_down": self.links_down,
                "queues": self.queues}


async def poll_all(views: dict[str, NodeView], paths: dict[str, str]) -> None:
    """One STATUS round over every node (concurrently); an unreachable node shows as down."""
    async def one(name):
        try:
            views[name].update(await status(paths[name]))
        except ManagementError:
            views[name].down()
    await asyncio.gather(*(one(name) for name in views))
