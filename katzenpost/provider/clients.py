"""A client connection's provider-side state and commands: authentication (username fix-up,
user database, trust on first use), RetrieveMessage with the reference's sequence rules and
queue hints, GetConsensus, and the send rate limiter in front of SendPacket."""
from __future__ import annotations

import inspect
import logging
import weakref
from dataclasses import dataclass

from katzenpost.provider.ratelimit import RateLimiter, RateSettings
from katzenpost.provider.usernames import InvalidUsername, UsernamePolicy
from katzenpost.sphinx.geometry import NODE_ID_LENGTH, PACKET_LENGTH, SPRP_PAYLOAD_LENGTH, USER_FORWARD_PAYLOAD_LENGTH
from katzenpost.wire import commands as wire

MAX_HINT = 255
log = logging.getLogger("katzenpost.provider")


@dataclass(slots=True)
class ClientState:
    user: bytes
    limiter: RateLimiter
    retr_seq: int = 0


class ClientHandler:
    def __init__(self, storage, policy: UsernamePolicy, rate: RateSettings, *, trust_on_first_use: bool,
                 get_raw_consensus, submit_packet, drops):
        self._storage, self._policy, self.rate = storage, policy, rate
        self._tofu = trust_on_first_use
        self._get_raw_consensus, self._submit = get_raw_consensus, submit_packet
        self.drops = drops
        # Per session, gone with it (the node also calls forget() when a session closes).
        self._states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    async def authenticate(self, creds) -> tuple[bool, bool]:
        """(valid, can_send) for a connecting client; a failure is logged as the reference."""
        ad, key = bytes(creds.additional_data), bytes(creds.public_key)
        try:
            user = self._policy.fix_user(ad)
        except InvalidUsername:
            user = None
        valid = user is not None and await self._is_valid(user, ad, key)
        if not valid:
            suffix = " (Probably a peer)" if len(ad) == NODE_ID_LENGTH else ""
            log.error("Authentication failed: User: '%s'%s",   # its key at DEBUG only
                      ad.decode("utf-8", "backslashreplace"), suffix)
            log.debug("Authentication failed: User: '%s', Key: '%s'",
                      ad.decode("utf-8", "backslashreplace"), key.hex())
        return valid, valid

    async def _is_valid(self, user: bytes, ad: bytes, key: bytes) -> bool:
        userdb = self._storage.userdb
        # Trust on first use must not register mixes, which are tried as clients first: their
        # AD is a 32-byte identity key.
        if self._tofu and len(ad) == NODE_ID_LENGTH and not await self._storage.run(userdb.exists, user):
            return False
        try:
            return bool(await self._storage.run(userdb.is_valid, user, key))
        except Exception as err:  # a database that went away: refuse, do not crash the session
            log.warning("client authentication: user database error: %s", err)
            return False

    def state(self, session) -> ClientState:
        state = self._states.get(session)
        if state is None:
            user = self._policy.fix_user(bytes(session.peer_credentials.additional_data))
            state = ClientState(user, RateLimiter(self.rate))
            state.limiter.refresh()
            self._states[session] = state
        return state

    async def reauthenticate(self, session) -> bool:
        """The periodic re-check (every ReauthInterval): still valid? Picks up new rate settings."""
        valid, _ = await self.authenticate(session.peer_credentials)
        if valid:
            self.state(session).limiter.refresh()
        return valid

    def connected_users(self) -> set[bytes]:
        return {state.user for state in list(self._states.values())}

    def forget(self, session) -> None:
        self._states.pop(session, None)

    async def handle(self, session, cmd) -> bool:
        """Serve one command from a client; False means close the connection."""
        if isinstance(cmd, wire.SendPacket):
            return self._send_packet(session, cmd)
        if isinstance(cmd, wire.RetrieveMessage):
            return await self._retrieve(session, cmd.sequence)
        if isinstance(cmd, wire.GetConsensus):
            return await self._get_consensus(session, cmd.epoch)
        if isinstance(cmd, wire.NoOp):
            return True
        log.debug("client sent an unexpected command %s", type(cmd).__name__)
        return False

    def send_gate(self, session):
        """The SendPacket admission of one session, called per packet by the node's command
        loop: its token bucket; a refusal is counted and the packet dropped silently."""
        allow, drops = self.state(session).limiter.allow, self.drops

        def admit() -> bool:
            if allow():
                return True
            drops["rate_limited"] += 1
            return False
        return admit

    def _send_packet(self, session, cmd) -> bool:
        if len(cmd.sphinx_packet) != PACKET_LENGTH:
            log.debug("client sent a %d-byte packet", len(cmd.sphinx_packet))
            return False
        if self.send_gate(session)():
            self._submit(cmd.sphinx_packet)
        return True  # a packet over the rate is dropped silently, the session stays

    async def _retrieve(self, session, seq: int) -> bool:
        state = self.state(session)
        if seq == state.retr_seq:
            advance = False
        elif seq == (state.retr_seq + 1) & 0xFFFFFFFF:
            advance, state.retr_seq = True, seq
        else:
            log.debug("RetrieveMessage out of sequence: %d, expected %d", seq, state.retr_seq)
            return False
        try:
            entry = await self._storage.run(self._storage.spool.get, state.user, advance)
        except Exception as err:  # SpoolError, or a storage thread failure
            log.warning("RetrieveMessage: spool read failed, closing the session: %s", err)
            return False
        reply = self._message_command(entry, seq)
        if reply is None:
            return False
        await session.send_command(reply)
        return True

    @staticmethod
    def _message_command(entry, seq: int):
        hint = min(entry.remaining, MAX_HINT)
        if entry.surb_id is not None:
            if len(entry.message) != SPRP_PAYLOAD_LENGTH:
                log.warning("spooled SURB reply has %d bytes", len(entry.message))
                return None
            return wire.MessageACK(hint, seq, entry.surb_id, entry.message)
        if entry.message is not None:
            if len(entry.message) != USER_FORWARD_PAYLOAD_LENGTH:
                log.warning("spooled message has %d bytes", len(entry.message))
                return None
            return wire.Message(hint, seq, entry.message)
        if hint:
            log.error("BUG: empty spool with a queue size hint of %d", hint)
        return wire.MessageEmpty(seq)

    async def _get_consensus(self, session, epoch: int) -> bool:
        result = self._get_raw_consensus(epoch)
        status, raw = (await result) if inspect.isawaitable(result) else result
        await session.send_command(wire.Consensus(int(status), raw if int(status) == 0 else b""))
        return True
