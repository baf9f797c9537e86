"""The provider end to end, with real processes on 127.0.0.1: `katzenpost-authority`, three mixes
and two providers (`katzenpost -f` with `IsProvider = true`), each provider running the real
`katzenpost-echo-plugin` subprocess. Users are registered with ADD_USER over the management
socket; clients (a small wire client here, packets from katzenpost.client) connect to their
provider with their link key. The whole module runs once on the embedded SQLite databases and
once on PostgreSQL (KATZENPOST_TEST_POSTGRES_DSN, which scripts/test.sh sets).

alice is a user of provider1, bob of provider2. Every packet crosses provider → layer 0 → 1 → 2 →
provider, and every reply (SURB-ACK, Kaetzchen answer) the same way back.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import pathlib
import signal
import subprocess
import time
from dataclasses import dataclass

import pytest

from node_support import (MixNode, authority_toml, console_script, free_port, private_dir, stop_process,
                          wait_for)
from katzenpost import keys
from katzenpost.client import message as msg
from katzenpost.client import paths
from katzenpost.pki.document import verify_and_parse_document
from katzenpost.pki.epochtime import EpochClock
from katzenpost.testnet.ports import is_port_clash, reserve
from katzenpost.wire import WireError, connect
from katzenpost.wire import commands as wire

PERIOD = 20
MU = 0.01                   # mean 100 ms a hop: a round trip takes about a second
MU_MAX_DELAY = 2000         # far above the delays drawn: none sits on the cap
# Two shared cores run ten processes here and other test suites besides: a packet can wait tens
# of ms for a crypto worker or be popped from a wheel that late, which the defaults (UnwrapDelay
# and SchedulerSlack, 10 ms) count as drops. The tests are about the provider, not load shedding.
NODE_DEBUG = "SchedulerSlack = 500\nUnwrapDelay = 500"
ROUND_TRIP_TIMEOUT = 15.0   # one attempt; attempts are repeated until the overall deadline
READY_TIMEOUT = 90.0
START_MARGIN = 5.0          # seconds a node needs from its start to its first descriptor post


# --- processes ----------------------------------------------------------------------------

@dataclass
class ProviderNode(MixNode):
    """A provider process (`katzenpost -f` with IsProvider = true) with management enabled."""

    def write_provider_config(self, authority_port: int, authority_key: bytes, storage: str) -> None:
        plugin_logs = private_dir(self.data_dir / "plugin_logs")
        echo = console_script("katzenpost-echo-plugin")
        assert len(echo) == 1, "the katzenpost-echo-plugin console script is not installed"
        self.config_path.write_text(f'''[Server]
Identifier = "{self.name}"
Addresses = ["127.0.0.1:{self.port}"]
DataDir = "{self.data_dir}"
IsProvider = true

[Logging]
File = "node.log"
Level = "DEBUG"

[PKI]
  [PKI.Nonvoting]
  Address = "127.0.0.1:{authority_port}"
  PublicKey = "{authority_key.hex()}"

[Management]
Enable = true
Path = "{self.management_path}"

[Provider]
{storage}
  [[Provider.Kaetzchen]]
  Capability = "loop"
  Endpoint = "+loop"
  [[Provider.Kaetzchen]]
  Capability = "keyserver"
  Endpoint = "+keyserver"
  [[Provider.CBORPluginKaetzchen]]
  Capability = "echo"
  Endpoint = "+echo"
  Command = "{echo[0]}"
  MaxConcurrency = 1
    [Provider.CBORPluginKaetzchen.Config]
    log_dir = "{plugin_logs}"
    log_level = "DEBUG"

[Debug]
EpochPeriod = {PERIOD}
NumSphinxWorkers = 1
{self.extra_debug}
''')

    def wait_started(self, timeout: float = 30) -> None:
        def started():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            return "Node started" in self.log_text()
        wait_for(started, timeout, f"{self.name} to start")


def sql_storage(dsn: str) -> str:
    return f'''  [Provider.SQLDB]
  Backend = "pgx"
  DataSourceName = "{dsn}"
  [Provider.UserDB]
  Backend = "sql"
  [Provider.SpoolDB]
  Backend = "sql"
'''


class ProviderNetwork:
    """Authority + mix0..mix2 + provider1, provider2 as processes; everything killed in close()."""

    def __init__(self, root: pathlib.Path, storages: list[str], *, mix_debug: str = "",
                 parameters: str = "") -> None:
        """`mix_debug`: more [Debug] lines for the mixes; `parameters`: more authority [Parameters]."""
        self.root = root
        self.parameters = parameters
        self.clock = EpochClock(PERIOD)
        # Ports held until each process starts (a port found free and released at once can be
        # taken by another test's connection before the node binds it).
        self.ports = reserve(6)
        self._next_port = iter(self.ports.ports)
        self.authority_dir = private_dir(root / "authority")
        self.authority_port = next(self._next_port)
        self.authority_identity, _ = keys.load_or_create_identity_key(str(self.authority_dir))
        self.authority_proc: subprocess.Popen | None = None
        self.mixes = [self._node(MixNode, f"mix{i}", f"{NODE_DEBUG}\n{mix_debug}") for i in range(3)]
        self.providers = [self._node(ProviderNode, f"provider{i + 1}") for i in range(2)]
        for mix in self.mixes:
            mix.write_config(self.authority_port, self.authority_identity.public, PERIOD, management=True)
        for provider, storage in zip(self.providers, storages):
            provider.write_provider_config(self.authority_port, self.authority_identity.public, storage)

    def _node(self, kind, name: str, debug: str = NODE_DEBUG):
        data_dir = private_dir(self.root / name)
        identity, _ = keys.load_or_create_identity_key(str(data_dir))
        link, _ = keys.load_or_create_link_key(str(data_dir))
        return kind(name, data_dir, next(self._next_port), identity, link, self.root / f"{name}.toml",
                    debug)

    def authority_config(self) -> str:
        return authority_toml(self.authority_port, self.authority_dir, PERIOD, self.mixes, self.providers,
                              f"Mu = {MU}\nMuMaxDelay = {MU_MAX_DELAY}\n{self.parameters}")

    def start(self) -> None:
        # Nodes post for the current and the next epoch at start, but not for the next one once
        # 3P/8 of the epoch is left: starting that late leaves an epoch without a document.
        _, _, till = self.clock.now()
        if till < 3 * PERIOD / 8 + START_MARGIN:
            time.sleep(till + 0.1)
        config = self.root / "authority.toml"
        config.write_text(self.authority_config())
        self.ports.release([self.authority_port])
        self.authority_proc = subprocess.Popen([*console_script("katzenpost-authority"), "-f", str(config)],
                                               cwd=str(self.root), stdout=subprocess.DEVNULL,
                                               stderr=subprocess.PIPE)
        for node in (*self.providers, *self.mixes):
            self.ports.release([node.port])
            node.start()
        for provider in self.providers:
            provider.wait_started()

    def port_clash(self) -> bool:
        """Did a process fail because another program took its port before it bound it?"""
        logs = [self.authority_dir / "authority.log", *(n.log_path for n in (*self.mixes, *self.providers))]
        return any(is_port_clash(log.read_text(errors="replace")) for log in logs if log.exists())

    def check_alive(self) -> None:
        for node in (*self.mixes, *self.providers):
            if node.proc is not None and node.proc.poll() is not None:
                raise AssertionError(f"{node.name} exited {node.proc.returncode}:\n{node.log_text()[-3000:]}")

    def report_loss(self) -> None:
        """A round trip attempt got no reply: print every node's drops (shown with a failure)."""
        for node in (*self.mixes, *self.providers):
            try:
                status = node.status()
            except (OSError, AssertionError, IndexError) as exc:
                print(f"reply lost; {node.name}: no status ({exc!r})")
                continue
            print(f"reply lost; {node.name}: packets {status['packets']} drops {status['drops']} "
                  f"provider {status.get('provider')}")

    def close(self) -> None:
        """SIGTERM to every node at once, then wait for each (bounded; SIGKILL after)."""
        running = [n.proc for n in (*self.providers, *self.mixes) if n.proc is not None and n.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        for proc in running:
            stop_process(proc)
        if self.authority_proc is not None:
            stop_process(self.authority_proc)
        self.ports.release()


# --- a small client ------------------------------------------------------------------------

class TestClient:
    """A user of one provider: the wire session, GetConsensus, SendPacket, RetrieveMessage with
    the sequence rule of the Katzenpost client specification, SURB replies matched by a ReplyBook."""

    __test__ = False

    def __init__(self, name: str, provider: ProviderNode, authority_key: bytes, clock: EpochClock) -> None:
        self.name = name
        self.provider = provider
        self.authority_key = authority_key
        self.clock = clock
        self.link = keys.LinkKey.generate()
        self.identity = keys.IdentityKey.generate()     # what the keyserver hands out
        self.session = None
        self.sequence = 0
        self.book = msg.ReplyBook()
        self.messages: list[bytes] = []                 # Message payloads retrieved
        self.replies: dict[bytes, msg.Reply] = {}       # by SURB ID
        self.lost_attempts = 0
        self.on_lost = None

    async def connect(self) -> None:
        if self.session is not None and not self.session.closed:
            return
        provider_id = self.provider.identity.public
        self.session = await connect("127.0.0.1", self.provider.port, link_key=self.link.private,
                                     additional_data=self.name.encode(),
                                     authenticator=lambda creds: creds.additional_data == provider_id,
                                     handshake_timeout=5, connect_timeout=5)
        self.sequence = 0                               # per connection, as the provider's

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close("test done")
            self.session = None

    async def ask(self, command, timeout: float = 10.0):
        await self.session.send_command(command)
        return await self.session.recv_command(timeout=timeout)

    async def document(self, epoch: int):
        reply = await self.ask(wire.GetConsensus(epoch))
        assert isinstance(reply, wire.Consensus), reply
        if reply.error_code != wire.ConsensusStatus.OK:
            return None
        return verify_and_parse_document(reply.payload, self.authority_key)

    async def retrieve_all(self) -> int:
        """Drain the spool: every Message kept, every MessageACK opened. Returns entries read."""
        count = 0
        while True:
            reply = await self.ask(wire.RetrieveMessage(self.sequence))
            if isinstance(reply, wire.MessageEmpty):
                return count
            count += 1
            self.sequence = (self.sequence + 1) & 0xFFFFFFFF   # the next request deletes this one
            if isinstance(reply, wire.MessageACK):
                opened = self.book.open(reply.surb_id, reply.payload)
                if opened is not None:
                    self.replies[opened.context.surb_id] = opened
            else:
                assert isinstance(reply, wire.Message), reply
                self.messages.append(reply.payload)


async def round_trip(client: TestClient, make, deadline: float) -> msg.Reply:
    """Build a packet with `make(doc, src, now)` (a SURB inside), send it and wait for its reply;
    resend with a fresh packet until `deadline` (the network may still be forming)."""
    while True:
        await client.connect()
        now = time.time()
        doc = await client.document(client.clock.epoch_at(now)[0])
        if doc is not None and len(doc.providers) == 2:
            outgoing = make(doc, paths.provider_named(doc, client.provider.name), now)
            client.book.add(outgoing.surb)
            await client.session.send_command(wire.SendPacket(outgoing.packet))
            attempt_end = min(deadline, time.monotonic() + ROUND_TRIP_TIMEOUT)
            while time.monotonic() < attempt_end:
                await client.retrieve_all()
                reply = client.replies.pop(outgoing.surb.surb_id, None)
                if reply is not None:
                    return reply
                await asyncio.sleep(0.2)
            client.lost_attempts += 1
            if client.on_lost is not None:
                client.on_lost()
        elif time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        if time.monotonic() >= deadline:
            raise AssertionError(f"no reply for {client.name} before the deadline")


# --- fixtures ------------------------------------------------------------------------------

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    """Both networks, started together (forming one takes a few epochs of mostly idle waiting)."""
    from provider_support import DSN_VARIABLE, PostgresSchema

    schemas, nets = [], {}

    def start_all():
        nets["sqlite"] = ProviderNetwork(tmp_path_factory.mktemp("provider-e2e-sqlite"), ["", ""])
        if os.environ.get(DSN_VARIABLE):
            schemas[:] = [PostgresSchema(), PostgresSchema()]
            nets["postgresql"] = ProviderNetwork(tmp_path_factory.mktemp("provider-e2e-postgresql"),
                                                 [sql_storage(schema.dsn) for schema in schemas])
        for net in nets.values():
            net.start()

        async def all_ready():
            await asyncio.gather(*(wait_ready(net, users(net)[0]) for net in nets.values()))
        asyncio.run(all_ready())

    def close_all():
        for net in nets.values():
            net.close()
        for schema in schemas:
            schema.drop()
        nets.clear()
        schemas.clear()

    try:
        try:
            start_all()
        except (AssertionError, OSError, WireError):
            # A start-up retry on a detected port collision (never a retry of a test).
            if not any(net.port_clash() for net in nets.values()):
                raise
            close_all()
            start_all()
        yield nets
    finally:
        close_all()


@pytest.fixture(params=BACKENDS)
def network(request, networks):
    if request.param not in networks:
        from provider_support import postgres_dsn
        postgres_dsn()          # fails (not skips) with the reason: CI must run PostgreSQL
    return networks[request.param]


def users(net: ProviderNetwork) -> tuple[TestClient, TestClient]:
    """alice at provider1 and bob at provider2, registered once per network."""
    if not hasattr(net, "users"):
        net.users = (TestClient("alice", net.providers[0], net.authority_identity.public, net.clock),
                     TestClient("bob", net.providers[1], net.authority_identity.public, net.clock))
        for user in net.users:
            user.on_lost = net.report_loss
            replies = user.provider.management(f"ADD_USER {user.name} {user.link.public.hex()}",
                                               f"SET_USER_IDENTITY {user.name} {user.identity.public.hex()}")
            assert replies[1:] == ["250 Requested action ok, completed"] * 2, replies
    return net.users


async def wait_ready(net: ProviderNetwork, alice: TestClient) -> None:
    """Until a +loop request to provider2 comes back to alice: documents, descriptors with
    Kaetzchen and every link are up."""
    try:
        await round_trip(alice, lambda doc, src, now: kaetzchen_request(alice, doc, src, "loop", b"", now),
                         time.monotonic() + READY_TIMEOUT)
    finally:
        await alice.close()
    net.check_alive()


def kaetzchen_request(client: TestClient, doc, src, capability: str, body: bytes, now: float) -> msg.Outgoing:
    service = paths.provider_named(doc, "provider2")
    return msg.new_kaetzchen_request(doc, src_provider=src, service_provider=service,
                                     endpoint=msg.kaetzchen_endpoint(service, capability),
                                     reply_to=client.name, body=body, start=now, clock=client.clock)


def message_to(client: TestClient, recipient: str, body: bytes):
    def make(doc, src, now):
        return msg.new_message(doc, src_provider=src, dst_provider=paths.provider_named(doc, "provider2"),
                               recipient=recipient, reply_to=client.name, body=body, start=now,
                               clock=client.clock)
    return make


def run(coro_factory, *clients):
    async def scenario():
        try:
            return await coro_factory()
        finally:
            for client in clients:
                await client.close()
    return asyncio.run(scenario())


async def current_document(client: TestClient, timeout: float = 10.0):
    """The current epoch's document from the client's provider (retried just after a rollover)."""
    await client.connect()
    deadline = time.monotonic() + timeout
    while (doc := await client.document(client.clock.current())) is None:
        assert time.monotonic() < deadline, "the provider has no document for the current epoch"
        await asyncio.sleep(0.3)
    return doc


# --- tests ---------------------------------------------------------------------------------

def test_the_descriptors_advertise_the_kaetzchen(network):
    alice, _ = users(network)

    async def go():
        doc = await current_document(alice)
        for name in ("provider1", "provider2"):
            desc = paths.provider_named(doc, name)
            assert {c: desc.kaetzchen[c]["endpoint"] for c in ("loop", "keyserver", "echo")} == {
                "loop": "+loop", "keyserver": "+keyserver", "echo": "+echo"}
        # A document the authority never made is refused in the reference's terms.
        assert await alice.document(1) is None
    run(go, alice)


def test_a_message_reaches_the_other_provider_and_its_surb_ack_comes_back(network):
    alice, bob = users(network)
    body = b"hello bob " + os.urandom(16).hex().encode()

    async def go():
        ack = await round_trip(alice, message_to(alice, "bob", body), time.monotonic() + 60)
        assert ack.context.kind == msg.KIND_ACK
        await bob.connect()
        deadline = time.monotonic() + 5
        while body not in [m[:len(body)] for m in bob.messages] and time.monotonic() < deadline:
            await bob.retrieve_all()
            await asyncio.sleep(0.1)
        assert any(m.startswith(body) and not m[len(body):].strip(b"\0") for m in bob.messages)
        assert await bob.retrieve_all() == 0                 # read once, then deleted
    run(go, alice, bob)
    status = network.providers[1].status()["provider"]
    assert status["stored"] >= 1 and status["surb_acks"] >= 1


def test_echo_from_the_plugin_subprocess_comes_back(network):
    alice, _ = users(network)
    body = b"echo " + os.urandom(32).hex().encode()
    reply = run(lambda: round_trip(alice, lambda doc, src, now: kaetzchen_request(alice, doc, src, "echo", body, now),
                                   time.monotonic() + 60), alice)
    assert reply.body.startswith(body) and not reply.body[len(body):].strip(b"\0")
    # The plugin process itself logged the request (HasSURB true).
    plugin_logs = "".join(p.read_text() for p in (network.providers[1].data_dir / "plugin_logs").glob("echo.*.log"))
    assert "SURB: True" in plugin_logs


def test_keyserver_and_loop_answer(network):
    alice, bob = users(network)
    request = json.dumps({"Version": 0, "User": "bob"}).encode()

    async def go():
        deadline = time.monotonic() + 60
        keyserver = await round_trip(alice, lambda doc, src, now: kaetzchen_request(alice, doc, src, "keyserver",
                                                                                    request, now), deadline)
        loop = await round_trip(alice, lambda doc, src, now: kaetzchen_request(alice, doc, src, "loop", b"x", now),
                                deadline)
        return keyserver, loop
    keyserver, loop = run(go, alice)
    answer = json.loads(keyserver.body.rstrip(b"\0"))
    assert answer["StatusCode"] == 0 and answer["User"] == "bob"
    assert base64.b64decode(answer["PublicKey"]) == bob.identity.public
    assert not loop.body.strip(b"\0")                       # an empty reply


def test_a_wrong_key_or_an_unknown_user_is_refused(network):
    impostor = TestClient("bob", network.providers[1], network.authority_identity.public, network.clock)
    stranger = TestClient("mallory", network.providers[1], network.authority_identity.public, network.clock)

    async def go():
        for client in (impostor, stranger):
            with pytest.raises(WireError):        # the handshake, or the first command, fails
                await client.connect()
                await client.ask(wire.RetrieveMessage(0), timeout=5)
    run(go, impostor, stranger)
    text = network.providers[1].log_text()
    assert "Authentication failed: User: 'bob'" in text and "Authentication failed: User: 'mallory'" in text


def test_send_rate_and_burst_from_management_limit_a_client(network):
    provider = network.providers[1]
    carol = TestClient("carol", provider, network.authority_identity.public, network.clock)
    assert provider.management(f"ADD_USER carol {carol.link.public.hex()}")[1].startswith("250")
    assert provider.management("SEND_RATE 1", "SEND_BURST 1")[1:] == ["250 1", "250 1"]
    before = provider.status()["provider"]["drops"].get("rate_limited", 0)

    async def go():
        await carol.connect()                     # its bucket: 1 token, one more a minute
        for _ in range(5):
            await carol.session.send_command(wire.SendPacket(os.urandom(2524)))
        await carol.ask(wire.RetrieveMessage(0))  # the five were read before this answer
    try:
        run(go, carol)
        assert provider.status()["provider"]["drops"].get("rate_limited", 0) - before == 4
    finally:
        assert provider.management("SEND_BURST 0", "REMOVE_USER carol")[1:] == [
            "250 0", "250 Requested action ok, completed"]


def test_an_acknowledged_message_survives_kill_9_of_the_receiving_provider(network):
    alice, bob = users(network)
    receiver = network.providers[1]
    body = b"durable " + os.urandom(16).hex().encode()
    run(lambda: round_trip(alice, message_to(alice, "bob", body), time.monotonic() + 60), alice)
    receiver.stop(signal.SIGKILL)                       # at once after the SURB-ACK came back
    assert receiver.proc.returncode == -signal.SIGKILL
    receiver.start()
    receiver.wait_started()

    async def go():
        deadline = time.monotonic() + 20
        while True:
            try:
                await bob.connect()
                break
            except WireError:
                assert time.monotonic() < deadline, "bob cannot reconnect to the restarted provider"
                await asyncio.sleep(0.3)
        await bob.retrieve_all()
        assert any(m.startswith(body) for m in bob.messages)
    run(go, bob)


# --- start failures (no network needed) ----------------------------------------------------

def unreachable_database():
    return sql_storage(f"host=127.0.0.1 port={free_port()} user=postgres dbname=none connect_timeout=2"), None


def database_without_schema():
    from provider_support import PostgresSchema
    schema = PostgresSchema(load=False)
    return sql_storage(schema.dsn), schema


@pytest.mark.parametrize("make, reason", [(unreachable_database, "cannot connect to the PostgreSQL database"),
                                          (database_without_schema, "has no katzenpost schema")])
def test_a_provider_whose_database_is_unusable_stops_with_one_error_line(tmp_path, make, reason):
    storage, schema = make()
    net = ProviderNetwork(tmp_path, [storage, ""])
    net.ports.release()                 # only this provider starts, by itself
    node = net.providers[0]
    try:
        node.start()
        assert node.proc.wait(60) == 1
    finally:
        node.stop()
        if schema is not None:
            schema.drop()
    text = node.log_text()
    errors = [line for line in text.splitlines() if " ERRO " in line]
    assert len(errors) == 1 and reason in errors[0], errors
    assert "Node started" not in text and "Shutdown complete." in text
