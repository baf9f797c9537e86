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
import pytest

from flood_support import FloodNet, raise_fd_limit
from flood_scenarios import connection_flood, timing_knobs

CONNECTIONS = 2000
PENDING = 128                   # MaxPendingHandshakes (the default)
HANDSHAKE_TIMEOUT_MS = 2000
LEGIT_PACKETS = 600
LEGIT_RATE = 150                # packets/s from the established peer during the flood
FD_SLACK = 8                    # the mix's own sockets that come and go (PKI fetches, STATUS)


@pytest.fixture
def flood(tmp_path):
    raise_fd_limit(CONNECTIONS + 1024)
    with FloodNet(tmp_path, debug=dict(timing_knobs(), HandshakeTimeout=HANDSHAKE_TIMEOUT_MS,
                                        MaxPendingHandshakes=PENDING)).running() as net:
        yield net


def test_idle_and_half_open_connections_are_bounded_and_timed_out(flood, record_property):
    f = connection_flood(flood, connections=CONNECTIONS, legit_packets=LEGIT_PACKETS,
                         legit_rate=LEGIT_RATE)
    record_property("flood", f)
    print(f)
    assert f["peak_fds"] <= f["with_peer_fds"] + PENDING + FD_SLACK, f
    assert f["refused"] >= CONNECTIONS - 2 * PENDING, f       # all but those held or failed fast
    assert LEGIT_PACKETS * 0.9 <= f["legit_sent"] <= LEGIT_PACKETS, f
    assert f["legit_received"] == f["legit_sent"], f
    assert f["fds_after"] <= f["baseline_fds"], f
    flood.net.check_alive()
