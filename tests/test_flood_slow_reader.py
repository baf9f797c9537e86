"""Flood 3: a next hop that stops reading.

The mix dials two providers: `sink` reads everything; `sender` (the slow reader) completes the
handshake and then never reads again. A previous-layer peer sends packets for both, interleaved.
Once the slow peer's socket buffers are full its session is not writable, its outgoing queue
fills to `OutgoingQueueSize` and every further packet for it is dropped and counted
(`destination_queue_full`, or `send_slack` for queued packets older than SendSlack when the
queue moves again); the sink's packets keep leaving at once, all of them.
"""
import pytest

from flood_support import FloodNet
from flood_scenarios import slow_reader_flood, slow_reader_packets, timing_knobs

RATE = 2000                   # packets/s, both peers together
QUEUE = 64                    # OutgoingQueueSize (flood_support.FLOOD_DEBUG)
RSS_GROWTH_MB = 32            # the slow peer may hold QUEUE packets + one transport buffer
EARLY = ("ingress_queue_full", "unwrap_delay", "scheduler_late")
OUTGOING = ("destination_queue_full", "send_slack")


@pytest.fixture
def flood(tmp_path):
    # Ingress roomy enough that a CPU shared with other tests does not shed this moderate rate:
    # the flood is about the outgoing side.
    with FloodNet(tmp_path, slow_sender=True, debug=dict(timing_knobs(), SphinxQueuePackets=4096)).running() as net:
        yield net


def test_a_next_hop_that_stops_reading_costs_only_its_own_packets(flood, record_property):
    f = slow_reader_flood(flood, per_peer=slow_reader_packets(), rate=RATE)
    record_property("flood", f)
    print(f)
    drops = f["drops"]
    # Drops before the outgoing queues hit both peers' packets alike; they happen only when the
    # shared CPU starves the mix for longer than UnwrapDelay/SchedulerSlack (500 ms here).
    early = sum(drops.get(r, 0) for r in EARLY)
    outgoing = sum(drops.get(r, 0) for r in OUTGOING)
    assert set(drops) <= set(EARLY) | set(OUTGOING), f
    assert early <= f["sent"] // 10, f
    assert f["sink_sent"] - early <= f["sink_received"] <= f["sink_sent"], f   # none lost to the slow peer
    assert f["slow_queue_max"] <= QUEUE, f
    assert drops.get("destination_queue_full", 0) > 0, f
    slow_sent = f["sent"] - f["sink_sent"]
    assert f["handed_to_slow_peer"] + f["slow_queue_now"] + outgoing + early >= slow_sent, f
    assert f["handed_to_slow_peer"] + f["slow_queue_now"] + outgoing <= slow_sent, f
    assert f["rss_growth_mb"] < RSS_GROWTH_MB, f
    flood.slow_conn.send(("count",))
    assert flood.slow_conn.poll(5) and flood.slow_conn.recv() == ("sessions", 1)   # never redialled
    flood.net.check_alive()
