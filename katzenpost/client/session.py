"""A client's connection to its provider: the wire handshake as a client, the PKI document
fetched through the provider and verified against the authority's key, sending Sphinx packets,
the retrieval loop, and matching SURB-ACKs and service replies to what was sent.

As the reference client (minclient) does it: the handshake's additional data is the bare
username and the static key is the user's link key; the provider is accepted when its AD is its
identity key, and once the document is in, its link key must be the one the document lists.
`GetConsensus` goes over the same connection (the provider answers from its cache).
`RetrieveMessage` follows the Katzenpost "Client" rule: the sequence number advances only after
a non-empty answer (the next request then deletes that entry at the provider), and a non-empty
answer is followed at once by the next request, so a backlog drains without waiting.

Every reply future resolves once: with the decrypted `message.Reply`, or with `ReplyLost` when
the reply is overdue (ETA + `reply_slack`). A dropped connection is re-dialled with back-off;
SURBs already sent stay pending (their keys are local), and a spooled message whose deletion
was not acknowledged before the drop may come again (delivery is at least once).
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field

from katzenpost import keys
from katzenpost.client import message as msg
from katzenpost.client import paths
from katzenpost.pki.descriptor import MixDescriptor
from katzenpost.pki.document import Document
from katzenpost.pki.client import InvalidDocumentError
from katzenpost.pki.voting_client import verify_consensus
from katzenpost.pki.epochtime import EpochClock
from katzenpost.wire import WireError, connect
from katzenpost.wire import commands as wire

log = logging.getLogger("katzenpost.client")

DEFAULT_POLL_INTERVAL = 0.5       # seconds between RetrieveMessage polls of an empty spool
DEFAULT_REPLY_SLACK = 30.0        # seconds past a reply's ETA before it counts as lost
DEFAULT_TIMEOUT = 10.0            # connect, handshake and per-command answer
DOCUMENT_RETRY = 1.0              # seconds between fetches of a document not published yet
RECONNECT_BACKOFF = (0.25, 5.0)   # first and longest wait between dial attempts


class ClientError(Exception):
    """The client cannot do what was asked (no connection, no document, bad recipient)."""


class ReplyLost(ClientError):
    """A SURB reply that did not arrive within its ETA plus the reply slack."""

    def __init__(self, context: msg.SURBContext):
        super().__init__(f"client: no reply within {context.eta - context.sent_at:.1f} s + slack")
        self.context = context


@dataclass(frozen=True)
class ClientSettings:
    """Who the client is and where its provider and authority are."""

    user: str
    link_key: keys.LinkKey = field(repr=False)
    provider: str                      # the provider's Identifier, as in the document
    provider_key: bytes                # its Ed25519 identity public key (the handshake's AD)
    address: tuple[str, int]           # one of its listeners
    authority_key: bytes               # the (non-voting) authority's identity public key
    # Voting authorities' identity keys: a document then needs valid signatures of a majority of
    # them (and authority_key, the first of them, is not used on its own).
    authority_keys: tuple[bytes, ...] = ()
    epoch_period: int = 0              # 0: the reference's 20 minutes; test networks set theirs
    poll_interval: float = DEFAULT_POLL_INTERVAL
    reply_slack: float = DEFAULT_REPLY_SLACK
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self):
        if not self.user or len(self.user.encode()) > 64:
            raise ClientError(f"client: user name must be 1..64 bytes, got {self.user!r}")
        for name in ("provider_key", "authority_key"):
            if len(getattr(self, name)) != 32:
                raise ClientError(f"client: {name} must be 32 bytes")
        if any(len(key) != 32 for key in self.authority_keys):
            raise ClientError("client: authority_keys must be 32 bytes each")
        if self.poll_interval <= 0 or self.reply_slack < 0 or self.timeout <= 0:
            raise ClientError("client: poll_interval and timeout must be > 0, reply_slack >= 0")

    def verifiers(self) -> tuple[bytes, ...]:
        """The keys a document's signatures are checked against (majority rule)."""
        return self.authority_keys or (self.authority_key,)

    def clock(self) -> EpochClock:
        return EpochClock(self.epoch_period) if self.epoch_period else EpochClock()


@dataclass
class Pending:
    """A sent packet waiting for its SURB reply: `result` resolves to the `message.Reply` or
    raises `ReplyLost`/`ClientError`. `sent` is the monotonic send time."""

    outgoing: msg.Outgoing = field(repr=False)
    result: asyncio.Future = field(repr=False)
    sent: float

    @property
    def surb_id(self) -> bytes:
        return self.outgoing.surb.surb_id


@dataclass(frozen=True)
class Inbound:
    """A message retrieved from the spool: the 1490-byte body (zero padded as sent)."""

    body: bytes = field(repr=False)
    received: float

    @property
    def text(self) -> bytes:
        return self.body.rstrip(b"\x00")


@dataclass(frozen=True)
class Send:
    """One packet for `Client.build`: `body` to the user `recipient`, or (when `service` is
    set) to that Kaetzchen service, at `provider` (default: ours), to be sent at `start`
    (Unix seconds; default: when built)."""

    recipient: str = ""
    service: str = ""
    provider: str | None = None
    body: bytes = field(default=b"", repr=False)
    start: float | None = None


class Client:
    """One user's connection to its provider. Use `async with Client(settings) as c:` or
    `await c.start()` / `await c.close()`; all methods run on one event loop."""

    def __init__(self, settings: ClientSettings, *, rng=None, entropy=os.urandom, on_message=None):
        self.settings = settings
        self.clock = settings.clock()
        self.inbox: asyncio.Queue[Inbound] = asyncio.Queue()
        self._on_message = on_message or self.inbox.put_nowait
        self._draw = paths.as_draw(rng)
        self._entropy = entropy
        self._book = msg.ReplyBook()
        self._waiting: dict[bytes, Pending] = {}
        self._docs: dict[int, Document] = {}
        self._doc_missing_until: dict[int, float] = {}
        self._session = None
        self._reader: asyncio.Task | None = None
        self._answer: asyncio.Future | None = None   # the one command awaiting its answer
        self._request_lock = asyncio.Lock()
        self._dial_lock = asyncio.Lock()
        self._retr_seq = 0
        self._retrieve_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self._closed = False
        self.connections = 0       # sessions established, re-dials included

    # --- life cycle --------------------------------------------------------------------------

    async def __aenter__(self) -> "Client":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def start(self, *, retrieve: bool = True) -> None:
        """Connect, fetch and check the current document, then (by default) poll the spool."""
        await self._ensure_session()
        await self.document()
        if retrieve:
            self._tasks.append(asyncio.get_running_loop().create_task(self._retrieve_forever()))

    async def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self._drop_session("client closed")
        for pending in list(self._waiting.values()):
            if not pending.result.done():
                pending.result.set_exception(ClientError("client: closed before the reply came"))
                pending.result.exception()  # retrieved: no "never retrieved" warning on shutdown
        self._waiting.clear()

    @property
    def connected(self) -> bool:
        return self._session is not None and not self._session.closed

    @property
    def reconnects(self) -> int:
        return max(0, self.connections - 1)

    @property
    def pending_count(self) -> int:
        return len(self._waiting)

    # --- the connection ------------------------------------------------------------------------

    def _is_provider(self, creds) -> bool:
        return bytes(creds.additional_data) == self.settings.provider_key

    async def _dial(self) -> None:
        host, port = self.settings.address
        try:
            session = await connect(host, port, link_key=self.settings.link_key.private,
                                    additional_data=self.settings.user.encode(),
                                    authenticator=self._is_provider,
                                    handshake_timeout=self.settings.timeout,
                                    connect_timeout=self.settings.timeout)
        except WireError as err:
            raise ClientError(f"client: cannot connect to provider {self.settings.provider} at "
                              f"{host}:{port}: {err}") from None
        session.write_timeout = self.settings.timeout
        self.connections += 1
        self._session = session
        self._retr_seq = 0           # the provider's retrieval state is per connection
        self._reader = asyncio.get_running_loop().create_task(self._read(session))
        await self._check_link_key()

    async def _ensure_session(self) -> None:
        async with self._dial_lock:
            if self._closed:
                raise ClientError("client: closed")
            if not self.connected:
                await self._dial()

    async def _drop_session(self, reason: str) -> None:
        session, reader = self._session, self._reader
        self._session, self._reader = None, None
        if session is not None:
            await session.close(reason)
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        self._fail_answer(ClientError(f"client: connection lost ({reason})"))

    def _fail_answer(self, error: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)

    async def _read(self, session) -> None:
        """Route what the provider sends: the answer to the outstanding request; NoOps ignored."""
        try:
            while True:
                for command in await session.recv_commands():
                    if isinstance(command, wire.NoOp):
                        continue
                    if isinstance(command, wire.Disconnect):
                        raise WireError("the provider sent Disconnect")
                    if self._answer is None or self._answer.done():
                        log.debug("client: unsolicited %s from the provider", type(command).__name__)
                        continue
                    self._answer.set_result(command)
        except WireError as err:
            log.debug("client: provider session ended: %s", err)
            self._fail_answer(ClientError(f"client: connection lost ({err})"))
            await session.close(str(err))

    async def _ask(self, request: wire.Command, answer_type) -> wire.Command:
        """Send a request that has one answer and wait for it (one request at a time: the
        provider answers in order and the answers carry no request ID)."""
        async with self._request_lock:
            await self._ensure_session()
            loop = asyncio.get_running_loop()
            self._answer = answer = loop.create_future()
            try:
                await self._session.send_command(request)
                reply = await asyncio.wait_for(answer, self.settings.timeout)
            except WireError as err:
                await self._drop_session(str(err))
                raise ClientError(f"client: request failed: {err}") from None
            except asyncio.TimeoutError:
                await self._drop_session("no answer")
                raise ClientError(f"client: no answer to {type(request).__name__} within "
                                  f"{self.settings.timeout} s") from None
            except ClientError:
                await self._drop_session("lost")
                raise
            finally:
                self._answer = None
            if not isinstance(reply, answer_type):
                await self._drop_session("unexpected answer")
                raise ClientError(f"client: provider answered {type(request).__name__} with "
                                  f"{type(reply).__name__}")
            return reply

    # --- the PKI document ----------------------------------------------------------------------

    async def document(self, epoch: int | None = None) -> Document:
        """The verified document of `epoch` (default: now). For the current epoch, while its
        document is not out yet, the previous one serves: a descriptor lists the keys of the
        two epochs after its own too."""
        current = self.clock.current()
        epoch = current if epoch is None else epoch
        doc = self._docs.get(epoch)
        if doc is not None:
            return doc
        try:
            return await self._fetch(epoch)
        except ClientError:
            fallback = self._docs.get(epoch - 1)
            if epoch == current and fallback is not None:
                return fallback
            raise

    async def _fetch(self, epoch: int) -> Document:
        if time.monotonic() < self._doc_missing_until.get(epoch, 0):
            raise ClientError(f"client: no document for epoch {epoch} yet")
        reply = await self._ask(wire.GetConsensus(epoch), wire.Consensus)
        if reply.error_code != wire.ConsensusStatus.OK:
            self._doc_missing_until[epoch] = time.monotonic() + DOCUMENT_RETRY
            status = {1: "not found yet", 2: "gone"}.get(reply.error_code, f"code {reply.error_code}")
            raise ClientError(f"client: document for epoch {epoch}: {status}")
        try:
            doc = verify_consensus(reply.payload, self.settings.verifiers(), epoch, self.clock.unix_now())
        except InvalidDocumentError as err:
            raise ClientError(f"client: document for epoch {epoch} rejected: {err}") from None
        self._docs[epoch] = doc
        for old in [e for e in self._docs if e < epoch - 2]:
            del self._docs[old]
        await self._check_link_key()
        return doc

    async def _check_link_key(self) -> None:
        """The provider we talk to must be the one the (newest) document lists; else the
        connection is dropped."""
        if not self._docs or self._session is None:
            return
        doc = self._docs[max(self._docs)]
        problem = None
        try:
            me = self.provider_descriptor(doc)
        except ClientError as err:
            problem = str(err)
        else:
            if me.identity_key != self.settings.provider_key:
                problem = (f"client: provider '{self.settings.provider}' has another identity key "
                           "in the document than configured")
            elif me.link_key != bytes(self._session.peer_credentials.public_key):
                problem = (f"client: provider '{self.settings.provider}' presented a link key the "
                           "document does not list")
        if problem:
            await self._drop_session("provider not as in the document")
            raise ClientError(problem)

    def provider_descriptor(self, doc: Document, name: str | None = None) -> MixDescriptor:
        try:
            return paths.provider_named(doc, name or self.settings.provider)
        except paths.PathError as err:
            raise ClientError(str(err).replace("paths: ", "client: ")) from None

    # --- sending -----------------------------------------------------------------------------

    async def send_message(self, recipient: str, provider: str | None = None, body=b"") -> Pending:
        """A message to `recipient` at `provider` (default: ours) with a SURB-ACK; the result
        resolves when the ACK is back (the far provider has stored the message)."""
        [outgoing] = await self.build([Send(recipient=recipient, provider=provider, body=body)])
        return await self.send_built(outgoing)

    async def request(self, service: str, provider: str | None = None, body=b"") -> Pending:
        """A request to the Kaetzchen `service` of `provider`: a capability (`echo`) or its
        endpoint (`+echo`); the result resolves with the service's reply."""
        [outgoing] = await self.build([Send(service=service, provider=provider, body=body)])
        return await self.send_built(outgoing)

    async def build(self, sends) -> list[msg.Outgoing]:
        """The packets of many `Send`s, made in one batch (`message.new_round_trips`: the Sphinx
        core runs eight packets per X25519 lane pass); send each with `send_built` at its
        planned time. One bad `Send` (unknown provider or service, oversized body) raises
        ClientError and nothing is built."""
        sends = list(sends)
        if not sends:
            return []
        doc = await self.document()
        now = self.clock.unix_now()
        trips = []
        for send in sends:
            target = self.provider_descriptor(doc, send.provider)
            if send.service:
                trips.append(msg.RoundTrip(target, self.endpoint(target, send.service), send.body,
                                           send.start or now, msg.KIND_REPLY))
            else:
                trips.append(msg.RoundTrip(target, send.recipient, send.body, send.start or now, msg.KIND_ACK))
        try:
            return msg.new_round_trips(doc, src_provider=self.provider_descriptor(doc), reply_to=self.settings.user,
                                       trips=trips, rng=self._draw, clock=self.clock, entropy=self._entropy)
        except (paths.PathError, msg.MessageError) as err:
            raise ClientError(str(err)) from None

    async def send_built(self, outgoing: msg.Outgoing) -> Pending:
        """Send a packet from `build` and track its reply (see `Pending`)."""
        return await self._send_tracked(outgoing)

    @staticmethod
    def endpoint(provider: MixDescriptor, service: str) -> str:
        """`service` as the endpoint `provider` advertises (by capability or by endpoint)."""
        services = provider.kaetzchen or {}
        for capability, params in services.items():
            endpoint = params.get("endpoint") if isinstance(params, dict) else None
            if service in (capability, endpoint, endpoint and endpoint.lstrip("+")):
                return msg.kaetzchen_endpoint(provider, capability)
        offered = ", ".join(sorted(services)) or "none"
        raise ClientError(f"client: provider '{provider.name}' offers no service '{service}' "
                          f"(offered: {offered})")

    async def _send_tracked(self, outgoing: msg.Outgoing) -> Pending:
        pending = Pending(outgoing, asyncio.get_running_loop().create_future(), time.monotonic())
        self._book.add(outgoing.surb)
        self._waiting[outgoing.surb.surb_id] = pending
        try:
            await self.send_packet(outgoing.packet)
        except ClientError:
            # Not tracked any more; the book forgets the SURB when it expires.
            self._waiting.pop(outgoing.surb.surb_id, None)
            raise
        return pending

    async def send_packet(self, packet: bytes) -> None:
        await self._ensure_session()
        try:
            await self._session.send_command(wire.SendPacket(packet))
        except WireError as err:
            await self._drop_session(str(err))
            raise ClientError(f"client: send failed: {err}") from None

    # --- retrieval -----------------------------------------------------------------------------

    async def retrieve(self) -> int:
        """Drain the spool: fetch until MessageEmpty; returns the number of entries handled."""
        async with self._retrieve_lock:
            return await self._drain()

    async def _drain(self) -> int:
        handled = 0
        while True:
            seq = self._retr_seq
            reply = await self._ask(wire.RetrieveMessage(seq), (wire.Message, wire.MessageACK, wire.MessageEmpty))
            if reply.sequence != seq:
                await self._drop_session("sequence mismatch")
                raise ClientError(f"client: retrieval answered sequence {reply.sequence}, asked {seq}")
            if isinstance(reply, wire.MessageEmpty):
                self.expire()
                return handled
            # Advance only now: the next request deletes this entry at the provider.
            self._retr_seq = (seq + 1) & 0xFFFFFFFF
            handled += 1
            if isinstance(reply, wire.MessageACK):
                self._on_reply(reply.surb_id, reply.payload)
            else:
                self._on_message(Inbound(bytes(reply.payload), time.monotonic()))

    def _on_reply(self, surb_id: bytes, payload: bytes) -> None:
        pending = self._waiting.pop(bytes(surb_id), None)
        reply = self._book.open(surb_id, payload)
        if pending is None or pending.result.done():
            log.debug("client: reply for an unknown or finished SURB")
            return
        if reply is None:
            pending.result.set_exception(ClientError("client: a reply failed to decrypt"))
        else:
            pending.result.set_result(reply)

    def expire(self) -> int:
        """Fail the replies overdue by more than the reply slack; returns how many."""
        overdue = self._book.expire(self.clock.unix_now(), self.settings.reply_slack)
        for context in overdue:
            pending = self._waiting.pop(context.surb_id, None)
            if pending is not None and not pending.result.done():
                pending.result.set_exception(ReplyLost(context))
        return len(overdue)

    async def _retrieve_forever(self) -> None:
        delay = RECONNECT_BACKOFF[0]
        while not self._closed:      # also ends the loop if a cancellation was swallowed
            try:
                await self.retrieve()
                delay = RECONNECT_BACKOFF[0]
                await asyncio.sleep(self.settings.poll_interval)
            except ClientError as err:
                self.expire()
                log.info("client: retrieval failed (%s); again in %.2f s", err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_BACKOFF[1])
