"""A voting network with real processes on 127.0.0.1, started by the test network's own code
(`katzenpost.testnet` with three authorities): three `katzenpost-authority` voting processes,
three mixes and two providers trusting them, and two users' clients verifying documents by the
majority rule.

* The first consensus is signed by all three authorities; the nodes use it and carry a message.
* One authority is killed (SIGKILL): the next document is published with the other two
  signatures, the nodes accept it and traffic flows on it.
* The authority restarts (it fetches the current document from its peers) and rejoins: the
  document after that carries its signature again.
* A node configured with three (fake) authorities that serve a document with one signature
  refuses it, with one log line per authority.

Every wait is bounded; every process is stopped in a finally.
"""
import asyncio
import base64
import socket
import subprocess
import sys
import time

from katzenpost.pki import cert
from katzenpost.pki.client import AuthorityClient, PKIClientError
from katzenpost.pki.epochtime import EpochClock
from katzenpost.pki.voting_client import verify_consensus
from katzenpost.testnet import layout
from katzenpost.testnet import network
from node_support import stop_process
from voting_node_support import fake_authorities, signed_consensus

PERIOD = 20                      # vote at 10 s, reveal 12.5, sign 15, publish 17.5
START_TIMEOUT = 3 * PERIOD + 60
MESSAGE_TIMEOUT = 20.0


def run(coro, limit: float):
    return asyncio.run(asyncio.wait_for(coro, limit))


class Observer:
    """What the test reads from the running network: each authority's served consensus."""

    def __init__(self, net: "network.Testnet"):
        self.net = net
        self.plan = net.plan
        self.clock = net.clock
        self.verifiers = [bytes.fromhex(a.identity_key) for a in self.plan.authorities]
        self.names = {bytes.fromhex(a.identity_key): a.name for a in self.plan.authorities}

    def client(self, name: str) -> AuthorityClient:
        authority = self.plan.authority(name)
        return AuthorityClient("127.0.0.1", authority.port, bytes.fromhex(authority.identity_key),
                               clock=self.clock, link_public=bytes.fromhex(authority.link_key),
                               connect_timeout=3, handshake_timeout=3, response_timeout=5)

    async def signers(self, name: str, epoch: int) -> set[str]:
        """Who signed `name`'s consensus for `epoch` (after checking it as a node does)."""
        raw = await self.client(name).fetch_consensus(epoch)
        verify_consensus(raw, self.verifiers, epoch, self.clock.unix_now())
        return {self.names.get(s.identity, "?") for s in cert.get_signatures(raw)}

    async def wait_signers(self, name: str, epoch: int, timeout: float) -> set[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await self.signers(name, epoch)
            except PKIClientError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{name} served no document for epoch {epoch}") from None
            await asyncio.sleep(0.5)

    async def wait_epoch(self, epoch: int) -> None:
        """Until `epoch` is the current epoch (plus a little for the nodes' rollover)."""
        delay = self.clock.epoch_start(epoch) - self.clock.unix_now() + 1.0
        await asyncio.sleep(max(0.0, delay))

    def nodes_stored(self, epoch: int) -> list[str]:
        """The nodes whose log says they stored the document for `epoch`."""
        line = f"Stored the PKI document for epoch {epoch}"
        found = []
        for node in self.plan.nodes:
            with open(node.log_path, errors="replace") as f:
                if line in f.read():
                    found.append(node.name)
        return found


async def deliver(clients, text: bytes) -> None:
    """alice → bob@provider2: the SURB-ACK comes back and bob's client retrieves the message."""
    pending = await clients["alice"].send_message("bob", "provider2", text)
    await asyncio.wait_for(pending.result, MESSAGE_TIMEOUT)
    deadline = time.monotonic() + MESSAGE_TIMEOUT
    while True:     # wait_for raises TimeoutError at the deadline
        inbound = await asyncio.wait_for(clients["bob"].inbox.get(), deadline - time.monotonic())
        if inbound.text == text:
            return


async def voting_scenario(net: "network.Testnet", observe: Observer) -> None:
    await net.start(timeout=START_TIMEOUT)
    clients = {u.name: await net.connect_client(u.name, START_TIMEOUT) for u in net.plan.users}
    try:
        await net.warm_up(clients, START_TIMEOUT)
        first = net.clock.current()
        everyone = {"auth1", "auth2", "auth3"}
        for name in everyone:
            assert await observe.signers(name, first) == everyone
        assert set(observe.nodes_stored(first)) == {n.name for n in net.plan.nodes}
        await deliver(clients, b"signed by three")

        # auth3 down before the next document is signed (3P/4); else the one after it.
        _, elapsed, _ = net.clock.now()
        two_signed = first + 1 if elapsed < 3 * PERIOD / 4 - 1.5 else first + 2
        net.supervisor.children["auth3"].proc.kill()
        publish = net.clock.epoch_start(two_signed - 1) + 7 * PERIOD / 8 - net.clock.unix_now()
        for name in ("auth1", "auth2"):
            assert await observe.wait_signers(name, two_signed, publish + 10) == {"auth1", "auth2"}

        # Back for the next round: it votes on the epoch after two_signed.
        took = await net.restart("auth3", timeout=PERIOD * 2)
        assert took < PERIOD * 2
        await observe.wait_epoch(two_signed)
        await deliver(clients, b"signed by two")
        assert set(observe.nodes_stored(two_signed)) == {n.name for n in net.plan.nodes}
        rejoined = two_signed + 1
        publish = net.clock.epoch_start(rejoined - 1) + 7 * PERIOD / 8 - net.clock.unix_now()
        for name in everyone:
            assert await observe.wait_signers(name, rejoined, publish + 10) == everyone, name
    finally:
        await asyncio.gather(*(c.close() for c in clients.values()), return_exceptions=True)


def test_voting_network_signs_survives_an_authority_down_for_an_epoch_and_rejoins(tmp_path):
    plan = layout.write_network(str(tmp_path / "net"), epoch_period=PERIOD, authorities=3,
                                log_level="INFO")
    net = network.Testnet(plan, say=lambda text: None)
    try:
        run(voting_scenario(net, Observer(net)), START_TIMEOUT + 4 * PERIOD + 60)
    except BaseException:
        for authority in plan.authorities:
            with open(authority.log_path, errors="replace") as f:
                print(f"--- {authority.name}\n{f.read()[-3000:]}")
        raise
    finally:
        net.stop()


# --- a node refuses a document with one signature of three --------------------------------------

def node_config(tmp_path, fakes) -> str:
    data_dir = tmp_path / "mix"
    data_dir.mkdir(mode=0o700)
    peers = "".join(f'''
  [[PKI.Voting.Peers]]
  Addresses = ["127.0.0.1:{f.port}"]
  IdentityPublicKey = "{f.identity.hex()}"
  LinkPublicKey = "{base64.b64encode(f.link_public).decode()}"
''' for f in fakes)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    text = f'''[Server]
Identifier = "mix1"
Addresses = ["127.0.0.1:{port}"]
DataDir = "{data_dir}"

[Logging]
File = "node.log"
Level = "INFO"

[PKI]
  [PKI.Voting]
{peers}
[Debug]
EpochPeriod = {PERIOD}
NumSphinxWorkers = 1
'''
    path = tmp_path / "mix.toml"
    path.write_text(text)
    return str(path)


def test_a_node_refuses_a_document_with_one_signature_of_three(tmp_path):
    clock = EpochClock(PERIOD)
    log_path = tmp_path / "mix" / "node.log"

    async def scenario():
        async with fake_authorities() as fakes:
            now = time.time()
            epoch = clock.epoch_at(now)[0]
            for target in (epoch - 1, epoch, epoch + 1):
                one = signed_consensus(target, now, fakes[:1])
                for fake in fakes:
                    fake.consensus[target] = (0, one)
            proc = subprocess.Popen([sys.executable, "-m", "katzenpost", "-f", node_config(tmp_path, fakes)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    assert proc.poll() is None, proc.stderr.read().decode()
                    if all(fake.gets and fake.posts for fake in fakes):
                        break
                    await asyncio.sleep(0.2)
                await asyncio.sleep(0.5)
                assert all(fake.gets for fake in fakes) and all(fake.posts for fake in fakes)
            finally:
                stop_process(proc)  # SIGTERM, then SIGKILL after 20 s: never left running
            return epoch

    epoch = run(scenario(), 60)
    text = log_path.read_text()
    refusals = [line for line in text.splitlines() if "Refused the consensus" in line]
    assert refusals and all("1 of 3 authorities' signatures are valid, 2 required" in line
                            for line in refusals)
    assert f"consensus for epoch {epoch} rejected" in text
    assert "Stored the PKI document" not in text
