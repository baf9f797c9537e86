"""The test network's ports: reserved below the kernel's ephemeral range and held until their
process starts, a taken port skipped, a process's "address in use" recognised as a clash, and
a start that meets a clash started once more on new ports (and only once)."""
import asyncio
import random
import socket
import types

import pytest
from rich.console import Console

from katzenpost.testnet import cli, layout, network, ports
from katzenpost.testnet.network import PortClash
from katzenpost.testnet.processes import ProcessError


def can_bind(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_reserved_ports_are_held_until_released_and_outside_the_ephemeral_range():
    low, high = ports._range_below_ephemeral()
    with open(ports.EPHEMERAL_RANGE_FILE) as f:
        ephemeral_low, ephemeral_high = (int(x) for x in f.read().split()[:2])
    block = ports.reserve(11)
    try:
        assert len(set(block.ports)) == 11
        assert all(low <= p < high for p in block.ports)
        assert all(not ephemeral_low <= p <= ephemeral_high for p in block.ports)
        assert not any(can_bind(p) for p in block.ports)
        block.release(block.ports[:3])
        assert all(can_bind(p) for p in block.ports[:3])
        assert not any(can_bind(p) for p in block.ports[3:])
        assert block.held == block.ports[3:]
    finally:
        block.release()
    assert all(can_bind(p) for p in block.ports)


def test_a_port_in_use_is_skipped():
    low, high = ports._range_below_ephemeral()
    first = ports.reserve(1)
    taken = first.ports[0]
    try:
        # a random base that starts exactly at the taken port
        rng = random.Random()
        rng.randrange = lambda span: taken - low
        block = ports.reserve(2, rng=rng)
        try:
            assert taken not in block.ports
            assert block.ports[0] == taken + 1 or block.ports[0] > taken
        finally:
            block.release()
    finally:
        first.release()


def test_bad_counts_and_exhaustion(monkeypatch):
    with pytest.raises(ValueError):
        ports.reserve(0)
    monkeypatch.setattr(ports, "_hold", lambda host, port: None)
    with pytest.raises(ports.PortError, match="only 0 of 2"):
        ports.reserve(2)


@pytest.mark.parametrize("text, clash", [
    ("mix1 exited with status 1\nlistener: cannot listen on 127.0.0.1:23456: Address already in use", True),
    ("Failed to spawn authority instance: [Errno 98] error while attempting to bind on address "
     "('127.0.0.1', 23456): address already in use", True),
    ("mix1 exited with status 1\nFailed to initialize mix keys: permission denied", False),
])
def test_port_clash_is_recognised_from_the_process_output(text, clash):
    assert ports.is_port_clash(text) is clash


def test_the_plan_holds_its_ports_until_released(tmp_path):
    plan = layout.write_network(str(tmp_path / "net"), epoch_period=15)
    used = [plan.authority_port] + [p for n in plan.nodes for p in (n.port, n.metrics_port)]
    try:
        assert sorted(plan.reservation.held) == sorted(used)
        assert not any(can_bind(p) for p in used)
    finally:
        plan.reservation.release()
    assert layout.Plan.load(plan.root) == plan        # the reservation is never saved


def test_a_process_that_finds_its_port_taken_is_a_port_clash(tmp_path):
    """The authority's port is grabbed in the instant between its release and the authority's
    own bind: the start fails with PortClash (not a timeout), and nothing is left running."""
    plan = layout.write_network(str(tmp_path / "net"), epoch_period=15)
    net = network.Testnet(plan, say=lambda text: None)
    thief = socket.socket()
    release = net._release_ports

    def release_then_steal(port_list=None):
        release(port_list)
        if port_list == [plan.authority_port]:
            thief.bind(("127.0.0.1", plan.authority_port))
            thief.listen()
    net._release_ports = release_then_steal
    try:
        with pytest.raises(PortClash, match="(?i)address already in use"):
            asyncio.run(asyncio.wait_for(net.start(timeout=30), 60))
    finally:
        net.stop()
        thief.close()
    assert not net.supervisor.pids()
    assert plan.reservation.held == []                   # every port released on the way out


class FakeNet:
    """Stands in for Testnet in the start-up retry tests: its start raises what it is told."""
    outcomes: list = []
    made: list = []

    def __init__(self, plan, keep=False, say=None):
        self.plan, self.stopped = plan, False
        FakeNet.made.append(self)

    async def start(self, timeout):
        outcome = FakeNet.outcomes.pop(0)
        if outcome is not None:
            raise outcome

    def stop(self):
        self.stopped = True


def start_with(monkeypatch, outcomes, replan):
    FakeNet.outcomes, FakeNet.made = list(outcomes), []
    monkeypatch.setattr(cli, "Testnet", FakeNet)
    plans = iter(["plan-a", "plan-b", "plan-c"])
    monkeypatch.setattr(cli.traffic, "TrafficDriver", lambda plan, stats: None)
    args = types.SimpleNamespace(keep=False)
    run = cli.Run(next(plans), args, Console(file=open("/dev/null", "w")),
                  replan=(lambda: next(plans)) if replan else None)

    async def go():
        await run.start_network(10)
    return run, go


def test_a_port_clash_at_start_is_retried_once_on_new_ports(monkeypatch):
    run, go = start_with(monkeypatch, [PortClash("mix2: address already in use"), None], replan=True)
    asyncio.run(go())
    assert [n.plan for n in FakeNet.made] == ["plan-a", "plan-b"]
    assert FakeNet.made[0].stopped and not FakeNet.made[1].stopped
    assert run.plan == "plan-b" and run.net is FakeNet.made[1]


def test_a_second_clash_or_another_failure_is_not_retried(monkeypatch):
    run, go = start_with(monkeypatch, [PortClash("a"), PortClash("b"), None], replan=True)
    with pytest.raises(PortClash, match="b"):
        asyncio.run(go())
    assert len(FakeNet.made) == 2
    run, go = start_with(monkeypatch, [ProcessError("mix1 exited with status 1"), None], replan=True)
    with pytest.raises(ProcessError):
        asyncio.run(go())
    assert len(FakeNet.made) == 1
    run, go = start_with(monkeypatch, [PortClash("a"), None], replan=False)
    with pytest.raises(PortClash):
        asyncio.run(go())
