"""Faults in a running network of real processes (docs/reliability.md, "Faults"): a real
`katzenpost-authority` with 20-second epochs, three real `katzenpost -f` mixes and the sender and
sink providers played by this process (tests/node_support.py), on 127.0.0.1. One network for the
module; each test leaves it forwarding again.

Every test ends with its outcome counted: packets sent, delivered at the sink, dropped (counted
by reason at the mixes), and what a SIGKILL may lose (packets inside the killed process, never
an acknowledged message: mixes acknowledge nothing).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from fault_support import (ClockOffset, drop_total, index_payload, kill_9, room_in_epoch,
                           sink_indexes, use_clock_offset, wait_log)
from node_support import E2E_TIMING_DEBUG, Network, console_script, wait_for
from katzenpost.wire import connect
from katzenpost.wire.commands import SendPacket

HANDSHAKE_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    network = Network(root, management=True,
                      mix_debug=f"{E2E_TIMING_DEBUG}\nHandshakeTimeout = {int(HANDSHAKE_TIMEOUT * 1000)}")
    network.clock_offset = ClockOffset(root / "mix1.clock")
    use_clock_offset(network.mixes[1], network.clock_offset)   # the clock-jump test's mix
    try:
        network.start(timeout=90)
        yield network
    finally:
        network.close()


@pytest.fixture
def ready(net):
    """A forwarding network and an empty sink before each test."""
    net.check_alive()
    net.wait_ready(60)
    net.received.clear()
    return net


class Stream:
    """Send `packets` to layer 0 in chunks from a thread until stopped or done; `sent` counts
    the packets handed to the session before it failed (a killed first hop)."""

    def __init__(self, net, packets, chunk: int = 10, interval: float = 0.02) -> None:
        self.net, self.packets, self.chunk, self.interval = net, packets, chunk, interval
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        first = self.net.layers()[0]
        for start in range(0, len(self.packets), self.chunk):
            if self.stop.is_set():
                return
            try:
                self.net.send(self.packets[start:start + self.chunk], first=first)
            except Exception:
                return
            self.sent = start + len(self.packets[start:start + self.chunk])
            time.sleep(self.interval)

    def wait_sent(self, count: int, timeout: float = 20) -> None:
        wait_for(lambda: self.sent >= count, timeout, f"{count} packets sent")

    def finish(self, timeout: float = 60) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive()
        return self.sent


def send_paced(net, packets, first=None, chunk: int = 10, interval: float = 0.02) -> None:
    """Send in small chunks: a burst above the first hop's in-flight bound would be shed as
    ingress_queue_full, which is load shedding, not the fault under test."""
    for start in range(0, len(packets), chunk):
        net.send(packets[start:start + chunk], first=first)
        time.sleep(interval)


def settle(net, mixes, timeout: float = 20) -> None:
    """Until the sink count and the mixes' drop counts stop changing (every packet accounted)."""
    last = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = (len(net.received), drop_total(mixes))
        if now == last:
            return
        last = now
        time.sleep(1.0)
    raise AssertionError("the network did not settle")


# --- peers that stall mid-handshake or mid-frame -------------------------------------------

def test_peers_stalling_mid_handshake_or_mid_frame_hurt_no_other_session(ready):
    net = ready
    first = net.layers()[0]
    half_handshake = socket.create_connection(("127.0.0.1", first.port))
    half_handshake.sendall(b"\x02" + os.urandom(99))          # then nothing
    opened = time.monotonic()

    [packet] = net.build_packets(1, payload_of=index_payload(30_999))

    async def stalled_peer():
        """The sink provider (a node layer 0 accepts) completes the handshake, then sends the
        first half of a frame and nothing more."""
        session = await connect("127.0.0.1", first.port, link_key=net.sink.link.private,
                                additional_data=net.sink.identity.public,
                                authenticator=lambda c: c.additional_data == first.identity.public,
                                handshake_timeout=5, connect_timeout=5)
        frame = session._sealer.seal(SendPacket(packet).to_bytes())
        session._writer.write(frame[:len(frame) // 2])        # a valid header, half the body
        return session
    stalled = net.loop.call(stalled_peer())
    try:
        packets = net.build_packets(30, payload_of=index_payload(30_000))
        send_paced(net, packets)
        net.wait_received(30, 15)                  # other sessions are served meanwhile
        half_handshake.settimeout(HANDSHAKE_TIMEOUT + 10)
        assert half_handshake.recv(1024) == b""    # dropped at HandshakeTimeout
        assert HANDSHAKE_TIMEOUT - 0.5 <= time.monotonic() - opened <= HANDSHAKE_TIMEOUT + 10
        # The stalled peer's connection is its own: it goes when that peer connects again (the
        # newest connection of a peer replaces the older one).
        replacement = net.loop.call(connect("127.0.0.1", first.port, link_key=net.sink.link.private,
                                            additional_data=net.sink.identity.public,
                                            authenticator=lambda c: c.additional_data == first.identity.public,
                                            handshake_timeout=5, connect_timeout=5))
        wait_for(lambda: stalled._reader.at_eof() or stalled._writer.transport.is_closing(), 10,
                 "the stalled connection to be closed by the node")
        net.loop.call(replacement.close("test done"))
    finally:
        half_handshake.close()
        net.loop.call(stalled.close("test done"))
    settle(net, net.mixes)
    assert sorted(sink_indexes(net)) == list(range(30_000, 30_030))
    net.check_alive()


# --- kill -9 of the authority --------------------------------------------------------------

def test_kill_9_of_the_authority_nodes_forward_on_the_cached_document_and_catch_up(ready):
    """The authority dies early in epoch E, after the nodes posted for E+1; the nodes keep
    forwarding on their cached document; it comes back in the same epoch (its store survived
    the kill), makes E+1's document from the descriptors it had, and the network crosses into
    E+1 without losing a packet."""
    net = ready
    clock = net.clock
    epoch, elapsed, till = clock.now()
    # From 2 s into E every node's post for E+1 is in (first tick); back by ~12 s in, the
    # authority still makes E+1's document in time for the nodes to fetch it.
    if not 2 <= elapsed <= 8:
        time.sleep(till + 2.5)
        epoch = clock.current()
    packets = net.build_packets(40, payload_of=index_payload(20_000), epoch=epoch)  # needs the authority
    first = net.layers()[0]
    assert _document(net, epoch + 1) is None      # made only after the restart
    assert kill_9(net.authority_proc) == -signal.SIGKILL
    drops_before = drop_total(net.mixes)
    send_paced(net, packets, first, chunk=4, interval=0.3)   # 3 s of traffic while it is down
    net.wait_received(40, 20)
    net.authority_proc = subprocess.Popen([*console_script("katzenpost-authority"), "-f",
                                           str(net.root / "authority.toml")], cwd=str(net.root),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(lambda: net._listening(net.authority_port), 20, "the authority to listen again")
    wait_for(lambda: _document(net, epoch + 1), clock.till_next() + 5, "E+1's document after the restart")
    time.sleep(max(0.0, clock.till_next()) + 1.0)  # into E+1, on the new document
    assert clock.current() == epoch + 1
    later = net.build_packets(40, payload_of=index_payload(20_100), epoch=epoch + 1)
    send_paced(net, later)
    net.wait_received(80, 20)
    settle(net, net.mixes)
    assert sink_indexes(net) == list(range(20_000, 20_040)) + list(range(20_100, 20_140))
    assert drop_total(net.mixes) == drops_before  # nothing dropped


def _document(net, epoch):
    try:
        return net.document(epoch)
    except Exception:
        return None


# --- kill -9 of a mix under load -----------------------------------------------------------

def test_kill_9_of_a_mix_under_load_keeps_its_replay_tags_and_forwarding_resumes(ready):
    net = ready
    room_in_epoch(net.clock, 12)                  # replays must meet the same mix key
    first = net.layers()[0]
    # 200 ms in the first mix: when it dies some packets are unwrapped (tags set) but not out yet.
    packets = net.build_packets(400, delays=(200, 1, 1), payload_of=index_payload(0))
    stream = Stream(net, packets)
    stream.wait_sent(200)
    assert kill_9(first.proc) == -signal.SIGKILL
    sent = stream.finish()
    time.sleep(1.0)                               # what had left the first mix arrives
    delivered_before = set(sink_indexes(net))
    assert len(delivered_before) >= 30 and delivered_before <= set(range(sent))
    lost_in_kill = sent - len(delivered_before)   # inside the killed process or its socket

    first.start()
    net.wait_ready(40)
    net.received.clear()
    replays_before = first.drops().get("replay", 0)
    replayed = packets[:sent]
    send_paced(net, replayed, first=first)
    settle(net, net.mixes)
    again = set(sink_indexes(net))
    replay_drops = first.drops().get("replay", 0) - replays_before
    # Every packet the mix forwarded before the kill is refused as a replay after the restart;
    # the ones it had not read yet (still in its socket when it died) are new to it.
    print(f"outcome: sent {sent}, delivered before the kill {len(delivered_before)}, lost in it "
          f"{lost_in_kill}; replayed {len(replayed)}: {replay_drops} refused as replays, {len(again)} new")
    assert again & delivered_before == set()
    assert replay_drops >= len(delivered_before)
    assert replay_drops + len(again) == len(replayed)
    assert len(again) <= lost_in_kill

    net.received.clear()
    fresh = net.build_packets(50, payload_of=index_payload(10_000))
    send_paced(net, fresh)
    net.wait_received(50, 20)                     # forwarding resumed
    settle(net, net.mixes)
    assert sink_indexes(net) == list(range(10_000, 10_050))
    assert "Warning: management socket file" in first.log_text()   # the stale one was replaced


# --- the civil clock of a mix jumps over an epoch boundary ---------------------------------

def test_a_mix_clock_jumping_forward_over_a_rollover_and_back(ready):
    """mix1's clock jumps 6 s forward 3.5-5 s before a rollover (into the next epoch, ahead of
    the network), then back, 2 s before the real rollover. No crash; it holds the keys of its
    new epoch; it warns about both jumps; right after the jump back it unwraps packets built
    for the current epoch again; and it still publishes for the epoch after next on time, so
    it is in that epoch's document (a post refused while the clock ran ahead is not taken as
    done)."""
    net = ready
    clock, mix, offset = net.clock, net.mixes[1], net.clock_offset
    till = clock.till_next()
    if till < 3.5:
        time.sleep(till + 0.5)
        till = clock.till_next()
    time.sleep(max(0.0, till - 5.0))              # the jump lands 1-2.5 s into the next epoch
    epoch = clock.current()
    packets = net.build_packets(20, epoch=epoch, payload_of=index_payload(40_000))
    first = net.layers(epoch)[0]
    offset.set(6.0)
    wait_for(lambda: mix.status()["epoch"] == epoch + 1, 5, "mix1 in the next epoch")
    wait_log(mix, "Civil time jumped forward", 5)
    wait_for(lambda: {epoch + 1, epoch + 2, epoch + 3} <= set(mix.status()["mix_keys"]), 5,
             "mix1's keys for its new epoch")
    time.sleep(max(0.0, clock.till_next() - 2.0))
    offset.set(0.0)                               # back, 2 s before the real rollover
    wait_log(mix, "Civil time jumped backwards", 5)
    # At once it takes this epoch's keys again (packets built for them cross it), not only at
    # the key boundary it had computed while it was ahead.
    net.received.clear()
    net.send(packets, first=first)
    net.wait_received(20, 10)
    assert sink_indexes(net) == list(range(40_000, 40_020))
    assert mix.status()["epoch"] in (epoch, epoch + 1)      # the real rollover was 2 s away
    wait_for(lambda: _document(net, epoch + 2), clock.period + 10, "the document for E+2")
    listed = {d.identity_key for layer in net.document(epoch + 2).topology for d in layer}
    assert mix.identity.public in listed
    net.check_alive()
    net.wait_ready(30)                            # and it forwards in the current epoch
