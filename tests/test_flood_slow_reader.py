"""Flood 3: a next hop that stops reading.

The mix dials two providers: `sink` reads everything; `sender` (the slow reader) completes the
handshake and then never reads again. A previous-layer peer sends packets for both, interleaved.
Once the slow peer's socket buffers are full its session is not writable, its outgoing queue
fills to `OutgoingQueueSize` and every further packet for it is dropped and counted
(`destination_queue_full`, or `send_slack` for queued packets older than SendSlack when the
queue moves again); the sink's packets keep leaving at once, all of them.
"""
import time

import numpy as np
import pytest

from flood_support import L, MIB, FloodNet, wait_for
from test_flood_connections import timing_knobs


QUEUE = 64                    # OutgoingQueueSize (flood_support.FLOOD_DEBUG)


def packets_per_peer() -> int:
    """Enough packets for the slow peer to overflow the kernel's send buffer (it grows up to
    tcp_wmem's maximum on loopback) 1.5 times over, and then the outgoing queue."""
    wmem_max = int(open("/proc/sys/net/ipv4/tcp_wmem").read().split()[2])
    return max(2500, int(1.5 * wmem_max / L) + QUEUE)


PER_PEER = packets_per_peer()
RATE = 2000                   # packets/s, both peers together
RSS_GROWTH_MB = 32            # the slow peer may hold QUEUE packets + one transport buffer


@pytest.fixture
def flood(tmp_path):
    net = FloodNet(tmp_path, slow_sender=True, debug=timing_knobs())
    try:
        net.start()
        yield net
    finally:
        net.close()


def test_a_next_hop_that_stops_reading_costs_only_its_own_packets(flood, record_property):
    seconds = 2 * PER_PEER / RATE
    flood.wait_for_room(seconds + 5)
    to_sink, to_slow = flood.build(PER_PEER, "sink"), flood.build(PER_PEER, "sender")
    packets = np.empty((2 * PER_PEER, L), np.uint8)
    packets[0::2], packets[1::2] = to_sink, to_slow
    before = flood.mix.status()
    baseline_mb = flood.rss_mb()
    source = flood.flood(packets, RATE, seconds)
    queued, rss = [], []
    while not source.poll(0.1):
        queued.append(flood.mix.status()["queues"]["outgoing"])
        rss.append(flood.rss_mb())
    _, sent, _ = source.recv()
    time.sleep(1.0)
    received = flood.sink_count()
    sink_sent = sent - sent // 2                         # the even rows went to the sink

    def settled():
        status = flood.mix.status()
        drops = {k: v - before["drops"].get(k, 0) for k, v in status["drops"].items()}
        out = status["packets"]["sent"] - before["packets"]["sent"]
        held = status["queues"]["outgoing"]
        return (status, drops, out) if out + sum(drops.values()) + held == sent else None
    status, drops, out = wait_for(settled, 10, "every packet forwarded, queued or dropped")
    drops = {k: v for k, v in drops.items() if v}
    handed_to_slow = out - received
    figures = dict(sent=sent, sink_received=received, handed_to_slow_peer=handed_to_slow,
                   slow_queue_max=max(queued), slow_queue_now=status["queues"]["outgoing"],
                   drops=drops, rss_growth_mb=round(max(rss) - baseline_mb, 1),
                   handed_to_slow_mb=round(handed_to_slow * L / MIB, 2))
    record_property("flood", figures)
    print(figures)

    assert received == sink_sent, figures                      # the sink lost nothing
    assert max(queued) <= QUEUE, figures
    assert set(drops) <= {"destination_queue_full", "send_slack"}, figures
    assert drops.get("destination_queue_full", 0) > 0, figures
    assert handed_to_slow + status["queues"]["outgoing"] + sum(drops.values()) == sent // 2, figures
    assert max(rss) - baseline_mb < RSS_GROWTH_MB, figures
    assert flood.slow_conn is not None
    flood.slow_conn.send(("count",))
    assert flood.slow_conn.poll(5) and flood.slow_conn.recv() == ("sessions", 1)   # never redialled
    flood.net.check_alive()
