"""The mix node end to end: a real `katzenpost-authority` with 20-second epochs, three real
`katzenpost -f` mixes (one per layer) and a sender and a sink provider played by this process,
all on 127.0.0.1. One network for the module; the tests that stop mixes run last."""
import os
import signal
import socket
import time

import pytest

from node_support import E2E_TIMING_DEBUG, Network, wait_for
from katzenpost.sphinx import geometry


def closed_by_peer(sock, timeout=10.0):
    """True once the peer closed the connection (EOF or reset), reading whatever it sent."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    network = Network(tmp_path_factory.mktemp("net"), management=True, mix_debug=E2E_TIMING_DEBUG)
    try:
        network.start(timeout=90)
        yield network
    finally:
        network.close()


def bodies(net, count):
    epochs = [net.clock.current() + d for d in (-1, 0, 1)]
    return sorted(net.open_payloads(epochs))


def test_packets_cross_every_layer_intact_after_their_delays(net):
    payloads = [b"payload %d " % i + os.urandom(16) for i in range(12)]
    packets = net.build_packets(len(payloads), delays=(200, 200, 200), payload_of=lambda i: payloads[i])
    sent_at = time.monotonic_ns()
    net.send(packets)
    net.wait_received(len(packets), 15)
    time.sleep(0.3)
    assert len(net.received) == len(packets)                  # nothing duplicated
    latency = [(at - sent_at) / 1e9 for at, _ in net.received]
    assert min(latency) >= 0.55, latency                      # 3 x 200 ms, less the dwell time
    assert max(latency) < 5
    got = bodies(net, len(packets))
    assert got == sorted(p.ljust(geometry.FORWARD_PAYLOAD_LENGTH, b"\0") for p in payloads)
    net.received.clear()


def test_a_replayed_packet_is_dropped_and_counted(net):
    first = net.layers()[0]
    before = first.drops().get("replay", 0)
    [packet] = net.build_packets(1)
    net.send([packet])
    net.wait_received(1, 10)
    net.send([packet, packet])
    wait_for(lambda: first.drops().get("replay", 0) >= before + 2, 10, "two replays counted")
    time.sleep(0.2)
    assert len(net.received) == 1
    net.received.clear()


def test_a_packet_with_a_bad_mac_is_dropped_and_counted(net):
    first = net.layers()[0]
    before = first.drops().get("unwrap_failed", 0)
    [packet] = net.build_packets(1)
    broken = bytearray(packet)
    broken[geometry.GAMMA_OFFSET] ^= 0x01
    net.send([bytes(broken)])
    wait_for(lambda: first.drops().get("unwrap_failed", 0) == before + 1, 10, "the MAC failure counted")
    [good] = net.build_packets(1)
    net.send([good])                                          # the session survived it
    net.wait_received(1, 10)
    net.received.clear()


def test_bad_input_on_a_listener_does_not_hurt_other_sessions(net):
    first = net.layers()[0]
    garbage = socket.create_connection(("127.0.0.1", first.port))
    half = socket.create_connection(("127.0.0.1", first.port))
    silent = socket.create_connection(("127.0.0.1", first.port))
    try:
        garbage.sendall(os.urandom(5000))
        half.sendall(b"\x02" + os.urandom(99))                # the start of a handshake, then nothing
        packets = net.build_packets(10)
        net.send(packets)
        net.wait_received(10, 15)
        assert closed_by_peer(garbage)                        # the node closed the garbage one
    finally:
        for sock in (garbage, half, silent):
            sock.close()
    assert first.proc.poll() is None
    net.received.clear()


def test_sighup_reopens_the_log(net):
    mix = net.mixes[1]
    rotated = mix.log_path.with_name("node.log.1")
    mix.log_path.rename(rotated)
    mix.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: mix.log_path.exists() and "Log file reopened" in mix.log_text(), 10, "a new log file")
    assert oct(mix.log_path.stat().st_mode & 0o777) == "0o600"
    mix.proc.send_signal(signal.SIGHUP)                       # every SIGHUP, not only the first
    wait_for(lambda: mix.log_text().count("Log file reopened") >= 2, 10, "a second reopen")
    assert mix.proc.poll() is None


def test_management_status_and_commands_on_a_mix(net):
    mix = net.mixes[2]
    replies = mix.management("STATUS", "SEND_RATE 10", "SEND_BURST 3", "QUIT")
    assert replies[0].startswith("220 ") and "Katzenpost Management Interface" in replies[0]
    status = mix.status()
    assert status["identifier"] == mix.name and status["is_provider"] is False
    assert status["epoch"] == net.clock.current() or status["epoch"] == net.clock.current() - 1
    assert status["peers"]["up"] >= 1 and len(status["mix_keys"]) >= 3
    assert replies[2:4] == ["250 10", "250 3"]               # stored on a mix too
    assert replies[4].startswith("250")
    status = mix.status()
    assert (status["send_rate"], status["send_burst"]) == (10, 3)


def test_epoch_rollover_under_traffic_loses_nothing(net):
    clock = net.clock
    epoch, _, till = clock.now()
    if till < 6:                                  # build for the coming epoch, not the one ending
        time.sleep(till + 0.2)
        epoch, _, till = clock.now()
    wait_for(lambda: _has_document(net, epoch + 1), clock.period, "the next epoch's document")
    batches = {epoch: net.build_packets(60, epoch=epoch), epoch + 1: net.build_packets(60, epoch=epoch + 1)}
    time.sleep(max(0.0, clock.till_next() - 2.0))             # start 2 s before the rollover
    sent = 0
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline:                        # 20 packets/s across the boundary
        current = clock.current()
        if not batches.get(current):
            break
        net.send([batches[current].pop()])
        sent += 1
        time.sleep(0.05)
    assert sent >= 60
    net.wait_received(sent, 20)
    time.sleep(0.3)
    assert len(net.received) == sent
    net.received.clear()


def _has_document(net, epoch):
    try:
        net.document(epoch)
        return True
    except Exception:
        return False


def test_restarted_mix_rejoins_remembers_replays_and_traffic_resumes(net):
    clock = net.clock
    if clock.till_next() < 14:                    # the packet's key must stay current
        time.sleep(clock.till_next() + 0.3)
    first = net.layers()[0]
    [packet] = net.build_packets(1)
    net.send([packet])
    net.wait_received(1, 10)
    net.received.clear()
    assert first.stop() == 0
    first.start()
    net.wait_ready(30)
    assert first.drops().get("replay", 0) == 0
    net.send([packet], first=first)
    wait_for(lambda: first.drops().get("replay", 0) == 1, 10, "the replay caught after the restart")
    assert net.received == []
    fresh = net.build_packets(5)
    net.send(fresh)
    net.wait_received(5, 15)
    net.received.clear()


def test_sigterm_and_shutdown_halt_gracefully_with_counted_drops(net):
    first, second = net.layers()[:2]
    received = first.status()["packets"]["received"]
    net.send(net.build_packets(1, delays=(8000, 1, 1)))      # waits 8 s in the first mix
    wait_for(lambda: first.status()["packets"]["received"] > received, 10, "the packet in the wheel")
    assert first.stop(signal.SIGTERM) == 0
    log_text = first.log_text()
    assert "Starting graceful shutdown." in log_text and "Shutdown complete." in log_text
    halt_line = [line for line in log_text.splitlines() if "Packets:" in line][-1]
    assert "'halt': 1" in halt_line, halt_line
    assert not first.management_path.exists()
    replies = second.management("SHUTDOWN")
    assert len(replies) == 1                                  # no reply: the node halts
    second.proc.wait(20)
    assert second.proc.returncode == 0
    assert "Shutdown complete." in second.log_text()
