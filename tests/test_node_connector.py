"""The connector: back-off between failed dials, sessions become the pipeline's destinations,
reverse traffic closes a session, nodes that leave the PKI are torn down, timings scale."""
import asyncio
import time

import pytest

from katzenpost.pki.descriptor import MixDescriptor
from katzenpost.pki.epochtime import EpochClock
from katzenpost.server import outgoing
from katzenpost.server.outgoing import Connector, ConnectorSettings, dial_addresses
from katzenpost.wire import ConnectError, ConnectionClosed, PeerCredentials
from katzenpost.wire.commands import NoOp

A, B = bytes([1]) * 32, bytes([2]) * 32


def descriptor(node_id, name, port=4000, link=b"L" * 32):
    return MixDescriptor(name=name, identity_key=node_id, link_key=link, mix_keys={},
                         addresses={"tcp4": [f"127.0.0.1:{port}"], "tcp6": [f"[::1]:{port}"]})


class FakePKI:
    def __init__(self, destinations):
        self.destinations = destinations
        self.valid = (True, True)

    def outgoing_destinations(self):
        return dict(self.destinations)

    def authenticate_connection(self, creds, is_outgoing):
        assert is_outgoing
        return self.valid


class FakePipeline:
    def __init__(self):
        self.history = []

    def set_destinations(self, senders):
        self.history.append(dict(senders))


class FakeSession:
    def __init__(self, node_id):
        self.peer_credentials = PeerCredentials(node_id, b"L" * 32)
        self.can_send = True
        self.closed = False
        self.written = []
        self._reverse = asyncio.Event()

    def is_writable(self):
        return not self.closed

    def write_packets(self, packets):
        self.written.append(len(packets))

    async def wait_writable(self):
        if self.closed:
            raise ConnectionClosed("closed")

    async def recv_command(self, timeout=None):
        await self._reverse.wait()
        if self.closed:
            raise ConnectionClosed("closed")
        return NoOp()

    def peer_talks(self):
        self._reverse.set()

    async def close(self, reason="", **kwargs):
        self.closed = True
        self._reverse.set()


SETTINGS = ConnectorSettings(connect_timeout=1, handshake_timeout=1, reauth_interval=0.05,
                             backoff_step=0.05, backoff_max=0.12, sweep_interval=10, first_sweep=10)


def make(destinations, monkeypatch, dial):
    pki, pipeline = FakePKI(destinations), FakePipeline()
    monkeypatch.setattr(outgoing, "connect", dial)
    connector = Connector(pki=pki, pipeline=pipeline, link_key=b"k" * 32, identity_public=b"i" * 32,
                          settings=SETTINGS)
    return connector, pki, pipeline


async def until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def test_failed_dials_back_off_by_a_step_up_to_the_maximum(monkeypatch):
    calls = []

    async def dial(host, port, **kwargs):
        calls.append((time.monotonic(), host))
        raise ConnectError("refused")

    async def scenario():
        connector, _, pipeline = make({A: descriptor(A, "a")}, monkeypatch, dial)
        connector.update()
        await until(lambda: len(calls) >= 10)
        await connector.stop()
        return pipeline
    pipeline = asyncio.run(scenario())
    assert [h for _, h in calls[:4]] == ["127.0.0.1", "::1", "127.0.0.1", "::1"]   # tcp4, then tcp6
    rounds = [t for t, h in calls if h == "127.0.0.1"]
    gaps = [b - a for a, b in zip(rounds, rounds[1:])]
    assert gaps[0] == pytest.approx(0.05, abs=0.04)
    assert gaps[1] == pytest.approx(0.10, abs=0.04)
    assert all(g == pytest.approx(0.12, abs=0.04) for g in gaps[2:4])               # capped
    assert pipeline.history == []                       # never connected: never a destination


def test_a_session_is_a_destination_until_reverse_traffic_closes_it(monkeypatch):
    sessions = []

    async def dial(host, port, *, authenticator, **kwargs):
        assert authenticator(PeerCredentials(A, b"L" * 32)) == (True, True)
        assert authenticator(PeerCredentials(B, b"L" * 32)) == (False, False)     # wrong node
        assert authenticator(PeerCredentials(A, b"X" * 32)) == (False, False)     # wrong link key
        sessions.append(FakeSession(A))
        return sessions[-1]

    async def scenario():
        connector, _, pipeline = make({A: descriptor(A, "a")}, monkeypatch, dial)
        connector.update()
        await until(lambda: pipeline.history)
        sender = pipeline.history[-1][A]
        assert sender.can_send()
        sender.send_packets([b"x"] * 3)
        assert sessions[0].written == [3]
        sessions[0].peer_talks()                          # any reverse traffic ends the session
        await until(lambda: len(pipeline.history) >= 2)
        assert pipeline.history[1] == {}
        assert sessions[0].closed
        await until(lambda: len(sessions) == 2)          # and the dialler reconnects
        await connector.stop()
        return connector
    asyncio.run(scenario())


def test_nodes_that_leave_the_pki_are_torn_down(monkeypatch):
    sessions = {}

    async def dial(host, port, *, authenticator, **kwargs):
        node = A if port == 4001 else B
        sessions[node] = FakeSession(node)
        return sessions[node]

    async def scenario():
        connector, pki, pipeline = make({A: descriptor(A, "a", 4001), B: descriptor(B, "b", 4002)},
                                        monkeypatch, dial)
        connector.update()
        await until(lambda: pipeline.history and set(pipeline.history[-1]) == {A, B})
        pki.destinations = {A: descriptor(A, "a", 4001)}
        connector.update()
        await until(lambda: set(pipeline.history[-1]) == {A})
        assert sessions[B].closed and not sessions[A].closed
        assert set(connector.connections) == {A}
        assert connector.status() == {"up": ["a"], "down": []}
        await connector.stop()
        assert sessions[A].closed
    asyncio.run(scenario())


def test_a_peer_that_is_no_longer_valid_is_disconnected_at_reauthentication(monkeypatch):
    sessions = []

    async def dial(host, port, **kwargs):
        sessions.append(FakeSession(A))
        return sessions[-1]

    async def scenario():
        connector, pki, pipeline = make({A: descriptor(A, "a")}, monkeypatch, dial)
        connector.update()
        await until(lambda: pipeline.history)
        pki.valid = (True, False)                        # still valid, may not send yet
        await until(lambda: not sessions[0].can_send)
        assert not pipeline.history[-1][A].can_send()
        pki.valid = (False, False)
        await until(lambda: sessions[0].closed)
        pki.destinations = {}                            # and it left: no redial
        await until(lambda: not connector.connections)
        await connector.stop()
    asyncio.run(scenario())


def test_timings_scale_with_a_short_test_epoch():
    class Debug:
        connect_timeout, handshake_timeout, reauth_interval = 60000, 30000, 30000
    real = ConnectorSettings.from_config(Debug, EpochClock())
    assert (real.backoff_step, real.backoff_max, real.sweep_interval) == (15, 120, 180)
    short = ConnectorSettings.from_config(Debug, EpochClock(20))
    assert short.backoff_step == pytest.approx(0.25) and short.backoff_max == pytest.approx(2.0)
    assert short.connect_timeout == 60 and short.reauth_interval == 30


def test_dial_addresses_skip_unusable_entries():
    desc = descriptor(A, "a")
    desc.addresses["tcp4"].append("not an address")
    desc.addresses["onion"] = ["x.onion:1"]
    assert dial_addresses(desc) == [("127.0.0.1", 4000), ("::1", 4000)]


def test_a_new_verdict_reaches_a_live_session_without_waiting_for_reauth_interval(monkeypatch):
    """A session dialled while only the next epoch's document listed the peer cannot send; once
    the verdict changes (new document, rollover) reauthenticate_soon() must apply it at once,
    not an ReauthInterval later, or every packet to that hop is dropped meanwhile."""
    sessions = []

    async def dial(host, port, **kwargs):
        sessions.append(FakeSession(A))
        sessions[-1].can_send = False
        return sessions[-1]

    async def scenario():
        connector, pki, pipeline = make({A: descriptor(A, "a")}, monkeypatch, dial)
        connector.settings = SLOW_REAUTH
        pki.valid = (True, False)
        connector.update()
        await until(lambda: pipeline.history)
        await asyncio.sleep(0.05)
        pki.valid = (True, True)
        connector.reauthenticate_soon()
        await until(lambda: sessions[0].can_send, timeout=2.0)
        assert pipeline.history[-1][A].can_send() and len(sessions) == 1
        await connector.stop()
    asyncio.run(scenario())


def test_till_verdicts_change_names_the_next_pki_time_boundary():
    from katzenpost.pki.worker import PKIWorker
    clock = EpochClock(period=1200)
    worker = PKIWorker.__new__(PKIWorker)
    worker.clock = clock
    start = clock.epoch_start(5_000_000)
    assert worker.till_verdicts_change(start + 10) == pytest.approx(1200 - 150 - 10)    # P/8
    assert worker.till_verdicts_change(start + 1200 - 140) == pytest.approx(20)         # early send
    assert worker.till_verdicts_change(start + 1200 - 100) == pytest.approx(100)        # rollover


SLOW_REAUTH = ConnectorSettings(connect_timeout=1, handshake_timeout=1, reauth_interval=600,
                                backoff_step=0.05, backoff_max=0.12, sweep_interval=10,
                                first_sweep=10)
