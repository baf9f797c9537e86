"""Flood 2: thousands of connections that never finish a handshake, against a real mix.

2,000 TCP connections to the mix's port: most stay silent, some send random bytes, some send a
genuine first handshake message (which costs the mix a Diffie-Hellman and a KEM encapsulation),
read the answer and never send the third message. Meanwhile an established previous-layer peer
keeps sending packets. What must hold:
- at most `MaxPendingHandshakes` (and `MaxIncomingConnections` in all) of them occupy the mix at
  once (its file descriptors, /proc/<pid>/fd); the rest are closed at once and counted
  (STATUS `listener_refused`);
- each held one is dropped after `HandshakeTimeout`;
- the established peer's packets all reach the next hop, and a new legitimate peer gets in once
  the held slots time out;
- the mix's file descriptors return to their baseline once the flood is over.
"""
import os
import select
import socket
import time

import numpy as np
import pytest

from flood_support import FloodNet, fd_count, raise_fd_limit, wait_for
from node_support import E2E_TIMING_DEBUG
from test_flood_load import handshake_seconds
from katzenpost import keys
from katzenpost.wire.handshake import Handshake

CONNECTIONS = 2000
PENDING = 128                   # MaxPendingHandshakes (the default)
HANDSHAKE_TIMEOUT_MS = 2000
LEGIT_PACKETS = 600
LEGIT_RATE = 150                # packets/s from the established peer during the flood
FD_SLACK = 8                    # the mix's own sockets that come and go (PKI fetches, STATUS)


def timing_knobs() -> dict:
    return dict(line.split(" = ") for line in E2E_TIMING_DEBUG.splitlines())


def first_handshake_message(responder_ad: bytes) -> bytes:
    """A genuine msg1 of the link handshake, reused on every half-open connection."""
    hs = Handshake(initiator=True, link_key=keys.LinkKey.generate().private, additional_data=b"x" * 32)
    return hs.write_message()


def open_flood(port: int, count: int, msg1: bytes) -> list[socket.socket]:
    """`count` non-blocking connects; every 4th sends msg1, every 7th random bytes."""
    socks = []
    for i in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        socks.append(sock)
    poller = select.poll()                # descriptors above 1024: no select()
    by_fd = {}
    for index, sock in enumerate(socks):
        poller.register(sock, select.POLLOUT)
        by_fd[sock.fileno()] = index
    deadline = time.monotonic() + 3
    while by_fd and time.monotonic() < deadline:
        for fd, _ in poller.poll(200):
            poller.unregister(fd)
            index = by_fd.pop(fd)
            try:
                if index % 4 == 0:
                    socks[index].send(msg1)
                elif index % 7 == 0:
                    socks[index].send(os.urandom(300))
            except OSError:
                pass                  # refused and closed by the mix already
    return socks


@pytest.fixture
def flood(tmp_path):
    raise_fd_limit(CONNECTIONS + 1024)
    net = FloodNet(tmp_path, debug=dict(timing_knobs(), HandshakeTimeout=HANDSHAKE_TIMEOUT_MS,
                                        MaxPendingHandshakes=PENDING))
    try:
        net.start()
        yield net
    finally:
        net.close()


def test_idle_and_half_open_connections_are_bounded_and_timed_out(flood, record_property):
    flood.wait_for_room(LEGIT_PACKETS / LEGIT_RATE + HANDSHAKE_TIMEOUT_MS / 1000 + 3)
    baseline_fds = fd_count(flood.pid)
    refused_before = flood.mix.status()["listener_refused"]
    packets = flood.build(LEGIT_PACKETS)
    seconds = LEGIT_PACKETS / LEGIT_RATE
    source = flood.flood(packets, LEGIT_RATE, seconds)
    wait_for(lambda: flood.mix.status()["connections"]["incoming"] == 1, 10, "the legit peer's session")
    with_peer_fds = fd_count(flood.pid)

    started = time.monotonic()
    socks = open_flood(flood.mix.port, CONNECTIONS, first_handshake_message(flood.mix.identity.public))
    opened_in = time.monotonic() - started
    peak = with_peer_fds
    while time.monotonic() - started < HANDSHAKE_TIMEOUT_MS / 1000 + 1.5:
        peak = max(peak, fd_count(flood.pid))
        time.sleep(0.05)
    refused = flood.mix.status()["listener_refused"] - refused_before
    # The held slots have timed out: a new legitimate peer gets in (the sink's identity).
    new_peer = handshake_seconds(flood)
    for sock in socks:
        sock.close()

    assert source.poll(seconds + 15)
    _, sent, _ = source.recv()
    time.sleep(1.0)                                   # the last packets' 1 ms delay and the wire
    received = flood.sink_count()
    fds_after = wait_for(lambda: (n := fd_count(flood.pid)) <= baseline_fds and n, 15,
                         "the mix's descriptors back to their baseline")
    status = flood.mix.status()
    figures = dict(connections=CONNECTIONS, opened_in_s=round(opened_in, 2), refused=refused,
                   baseline_fds=baseline_fds, with_peer_fds=with_peer_fds, peak_fds=peak,
                   fds_after=fds_after, legit_sent=sent, legit_received=received,
                   new_peer_handshake_s=round(new_peer, 3), drops=status["drops"])
    record_property("flood", figures)
    print(figures)

    assert peak <= with_peer_fds + PENDING + FD_SLACK, figures
    assert refused >= CONNECTIONS - 2 * PENDING, figures        # all but those held or failed fast
    assert LEGIT_PACKETS * 0.9 <= sent <= LEGIT_PACKETS and received == sent, figures
    assert fds_after <= baseline_fds, figures
    flood.net.check_alive()
