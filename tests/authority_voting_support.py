"""Builders for the voting authority tests: authority keys, voting configs, and an in-process
network of `VotingState`s on an injected clock (messages delivered as the daemon would, minus
the sockets)."""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

from _pki_fixtures import MIXES, PROVIDERS, authority_config_text, public_for, seed_for, signed_descriptor, x25519_public
from katzenpost.authority import config as ac
from katzenpost.authority.voting.state import VotingState
from katzenpost.authority.voting.store import VotingStore
from katzenpost.pki.epochtime import EpochClock
from katzenpost.voting import srv
from katzenpost.voting.vote import build_vote, sign_vote
from node_support import free_port  # noqa: F401 (re-exported for the voting tests)


@dataclass(frozen=True)
class AuthorityKeys:
    name: str
    seed: bytes
    identity: bytes
    link_private: bytes
    link_public: bytes


def authority_keys(name: str) -> AuthorityKeys:
    seed = hashlib.sha256(b"voting-authority:" + name.encode()).digest()
    link = hashlib.sha256(b"voting-authority-link:" + name.encode()).digest()
    return AuthorityKeys(name, seed, public_for(seed), link, x25519_public(link))


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def peers_text(peers: list[tuple[AuthorityKeys, int]]) -> str:
    return "".join(f'[[Authorities]]\nIdentityPublicKey = "{b64(k.identity)}"\n'
                   f'LinkPublicKey = "{b64(k.link_public)}"\n'
                   f'Addresses = ["127.0.0.1:{port}"]\n' for k, port in peers)


def voting_config_text(data_dir, port: int, peers: list[tuple[AuthorityKeys, int]], *,
                       period: int = 0, sections: str = "", mixes=MIXES) -> str:
    debug = f"EpochPeriod = {period}\n" if period else ""
    text = authority_config_text(data_dir, port=port, sections=sections, debug=debug,
                                 mixes=mixes)
    # Without peers the voting form needs the (empty) list itself, before any table.
    return text + peers_text(peers) if peers else "Authorities = []\n" + text


def signed_vote(keys_of: AuthorityKeys, epoch: int, parameters, now: float, period: int, *,
                random: bytes = b"\x01" * 32, descriptors_at: float | None = None):
    """(`keys_of`'s signed vote for `epoch` carrying every test node's descriptor, its reveal);
    the descriptors are signed at `descriptors_at` (default `now`)."""
    at = now if descriptors_at is None else descriptors_at
    commit, reveal = srv.commit_and_reveal(epoch, random)
    descs = [signed_descriptor(n, epoch, at, provider=n.startswith("provider"))
             for n in MIXES + PROVIDERS]
    vote = build_vote(epoch, descs, parameters, commit, genesis_epoch=epoch,
                      prior_shared_random=None, layers=3)
    return sign_vote(keys_of.seed, vote, now, period), reveal


class FakeTime:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Network:
    """N voting states sharing one fake clock; `down` ones neither step nor receive."""
    clock: EpochClock
    time: FakeTime
    states: dict[str, VotingState]
    keys: dict[str, AuthorityKeys]
    down: set[str] = field(default_factory=set)
    replies: list = field(default_factory=list)  # (kind, sender, receiver, code)

    def post_all(self, epoch: int, nodes=MIXES + PROVIDERS, to=None) -> None:
        """Every node posts its descriptor for `epoch` to every (listed) authority."""
        for node in nodes:
            desc = signed_descriptor(node, epoch, self.time.now,
                                     provider=node.startswith("provider"))
            for name in to or self.states:
                result = self.states[name].post_descriptor(
                    epoch, desc.raw, public_for(seed_for(node)), self.time.now)
                assert result.status == 0, result

    def deliver(self, sender: str, outgoing) -> None:
        me = self.keys[sender].identity
        for item in outgoing:
            for name, state in self.states.items():
                if name == sender or name in self.down:
                    continue
                if item.kind == "fetch":
                    status, raw = state.document_for_epoch(item.epoch, self.time.now)
                    if status == 0:
                        self.states[sender].adopt_fetched(raw, item.epoch, self.time.now)
                    continue
                if item.kind == "reveal":
                    code = state.on_reveal(me, item.payload, self.time.now)
                else:
                    code = state.on_vote(item.epoch, me, item.payload, me, self.time.now)
                self.replies.append((item.kind, sender, name, int(code)))

    def run_until(self, t: float) -> None:
        """Step every live state whose wake-up is due, in time order, up to time `t`."""
        while True:
            live = {n: s for n, s in self.states.items() if n not in self.down}
            due = min(s.wake_at for s in live.values())
            if due > t:
                self.time.now = t
                return
            self.time.now = max(self.time.now, due)
            for name, state in live.items():
                if state.wake_at <= self.time.now:
                    self.deliver(name, state.step(self.time.now))


def make_network(tmp_path, names=("a1", "a2", "a3"), start: float | None = None,
                 period: int = 1200) -> Network:
    clock_time = FakeTime(start or 0.0)
    clock = EpochClock(period=period, clock=clock_time)
    keys = {n: authority_keys(n) for n in names}
    ports = {n: 20000 + i for i, n in enumerate(names)}
    states = {}
    for name in names:
        states[name] = open_state(tmp_path, name, keys, ports, clock, period)
        states[name].restore(clock_time.now)
    net = Network(clock, clock_time, states, keys)
    net.run_until(clock_time.now)  # the first step runs at once (bootstrap)
    return net


def open_state(tmp_path, name, keys, ports, clock, period) -> VotingState:
    data_dir = tmp_path / name
    data_dir.mkdir(mode=0o700, exist_ok=True)
    peers = [(keys[o], ports[o]) for o in keys if o != name]
    text = voting_config_text(data_dir, ports[name], peers,
                              period=period if period != 1200 else 0)
    cfg = ac.parse(text)
    store = VotingStore.open_in(str(data_dir))
    return VotingState(cfg, keys[name].seed, keys[name].identity, store, clock)


# --- talking to a real authority over TCP -----------------------------------------------------

class PinnedAuthority:
    def __init__(self, identity: bytes, link_public: bytes) -> None:
        self.identity, self.link_public = identity, link_public

    def is_peer_valid(self, creds) -> bool:
        return creds.additional_data == self.identity and creds.public_key == self.link_public


async def round_trip(port: int, keys_of: AuthorityKeys, command, *, link_private: bytes | None = None,
                     ad: bytes = b"", timeout: float = 10.0):
    """One command to the authority at 127.0.0.1:`port` (anonymous unless `ad` and
    `link_private` are given); the reply, or None when it closed without one."""
    import os

    from katzenpost.wire import session as wire_session
    from katzenpost.wire.errors import WireError
    session = await wire_session.connect(
        "127.0.0.1", port, link_key=link_private or os.urandom(32), additional_data=ad,
        authenticator=PinnedAuthority(keys_of.identity, keys_of.link_public),
        handshake_timeout=timeout, connect_timeout=timeout)
    try:
        await session.send_command(command)
        try:
            return await session.recv_command(timeout=timeout)
        except WireError:
            return None
    finally:
        await session.close()


async def post_descriptor(port: int, keys_of: AuthorityKeys, node: str, epoch: int, now: float):
    """A whitelisted test node posts its signed descriptor for `epoch`; the status code."""
    from katzenpost.pki.keyconv import x25519_private_from_ed25519_seed
    from katzenpost.wire.commands import PostDescriptor
    desc = signed_descriptor(node, epoch, now, provider=node.startswith("provider"))
    seed = seed_for(node)
    reply = await round_trip(port, keys_of, PostDescriptor(epoch=epoch, payload=desc.raw),
                             link_private=x25519_private_from_ed25519_seed(seed),
                             ad=public_for(seed))
    return reply.error_code
