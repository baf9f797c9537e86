"""The three floods against one real mix (tests/flood_support.FloodNet), as functions that run a
flood and return what was measured. tests/test_flood_*.py run them briefly and assert on the
figures; bench/flood.py runs them for longer and prints the figures.

- load_flood: an authenticated previous-layer peer offers `factor` times the mix's self-test
  capacity (valid packets round and round, so replays, and packets that fail the unwrap);
- connection_flood: thousands of connections that never finish a handshake, while an
  established peer keeps sending;
- slow_reader_flood: a next hop that stops reading, while another reads everything.
"""
from __future__ import annotations

import asyncio
import os
import select
import socket
import time
from pathlib import Path

import numpy as np

from flood_support import MIB, L, FloodNet, fd_count, garbage, wait_for
from node_support import E2E_TIMING_DEBUG

from katzenpost import keys
from katzenpost.wire import connect
from katzenpost.wire.handshake import Handshake

ASYNC_HWM_BYTES = 64 * 1024      # asyncio's default transport / stream-reader high-water mark
BATCH = 16                       # SphinxBatchSize default
SAMPLE = 0.2                     # s between samples of RSS and STATUS


def timing_knobs() -> dict:
    """The e2e networks' 500 ms UnwrapDelay/SchedulerSlack (node_support): floods whose point is
    not load shedding should lose nothing to a CPU shared with the test's own processes."""
    return dict(line.split(" = ") for line in E2E_TIMING_DEBUG.splitlines())


# ------------------------------------------------------------------ measurements

def memory_ceiling_mb(flood: FloodNet, baseline_mb: float, workers: int) -> tuple[float, dict]:
    """Baseline RSS plus what the configured bounds let the mix hold under any load, doubled for
    the copies a packet has on its way (a socket read's bytes, a batch array, zmq frames), plus
    the replay filters' files (mapped; pages touched as tags arrive) and 32 MiB of headroom for
    the interpreter and allocator."""
    k = flood.knobs
    parts = {
        "crypto_in_flight": flood.in_flight_per_worker() * workers * L,
        "zmq_to_workers": 32 * BATCH * L * 2 * workers,              # SphinxQueueHWM, both sides
        "scheduler": k["SchedulerQueueSize"] * L + 4096 * L,         # + one arena chunk
        "scheduler_input": 64 * BATCH * L,                           # SchedulerInputHWM
        "local": 64 * BATCH * L,                                     # LocalHWM
        "outgoing": 2 * (k["OutgoingQueueSize"] * L + ASYNC_HWM_BYTES + 256 * L),   # two hops
        "incoming": 3 * 2 * ASYNC_HWM_BYTES,                         # a few sessions' buffers
    }
    filters = sum(p.stat().st_size for p in Path(flood.mix.data_dir).glob("replay-*.bloom"))
    ceiling = baseline_mb + (2 * sum(parts.values()) + filters) / MIB + 32
    parts["replay_filters"] = filters
    return ceiling, parts


def stored_delay(flood: FloodNet, epoch: int, due_unix: float) -> float | None:
    """How long after `due_unix` the mix logged storing `epoch`'s document (log stamps are local
    wall-clock time of day); None if it has not."""
    line = next((x for x in flood.mix.log_text().splitlines()
                 if f"Stored the PKI document for epoch {epoch}" in x), None)
    if line is None:
        return None
    h, m, s = line.split()[0].split(":")
    due = time.localtime(due_unix)
    due_sod = due.tm_hour * 3600 + due.tm_min * 60 + due.tm_sec + due_unix % 1
    delay = int(h) * 3600 + int(m) * 60 + float(s) - due_sod
    return (delay + 43200) % 86400 - 43200


def handshake_seconds(flood: FloodNet) -> float:
    """A fresh previous-layer peer (the sink provider) dials the mix: connect, Noise handshake,
    the mix's PKI verdict on its credentials."""
    async def dial():
        started = time.monotonic()
        session = await connect("127.0.0.1", flood.mix.port, link_key=flood.net.sink.link.private,
                                additional_data=flood.net.sink.identity.public,
                                authenticator=lambda c: c.additional_data == flood.mix.identity.public,
                                handshake_timeout=5, connect_timeout=5)
        took = time.monotonic() - started
        await session.close()
        return took
    return asyncio.run(dial())


def drops_since(before: dict, status: dict) -> dict:
    drops = {k: v - before["drops"].get(k, 0) for k, v in status["drops"].items()}
    return {k: v for k, v in drops.items() if v}


# ------------------------------------------------------------------ 1: load

def wait_before_fetch(flood: FloodNet, lead: float) -> tuple[int, float]:
    """Sleep until `lead` s before the mix must fetch the next epoch's document (3P/8 before the
    rollover); returns (this epoch, the unix time the fetch is due)."""
    clock = flood.net.clock
    fetch_due_till = 3 * clock.period / 8
    start_till = fetch_due_till + lead
    if clock.till_next() < start_till + 0.5:
        time.sleep(clock.till_next() + 0.3)
    time.sleep(max(0.0, clock.till_next() - start_till))
    return clock.current(), time.time() + clock.till_next() - fetch_due_till


def load_flood(flood: FloodNet, seconds: float, *, factor: float = 10, valid: int = 512,
               invalid: int = 3584, workers: int = 1) -> dict:
    """Offer `factor` x the self-test capacity for `seconds`, starting 2.5 s before the mix must
    fetch the next document; sample RSS, STATUS time and a new peer's handshake time."""
    epoch, due_unix = wait_before_fetch(flood, 2.5)
    capacity = flood.capacity()
    baseline_mb = flood.rss_mb()
    ceiling_mb, parts = memory_ceiling_mb(flood, baseline_mb, workers)
    packets = np.concatenate([flood.build(valid), garbage(invalid)])
    before = flood.mix.status()
    distinct_before = len(flood.sink_alphas)
    source = flood.flood(packets, factor * capacity, seconds)
    rss, status_times, handshakes = [], [], []
    while not source.poll(SAMPLE):
        rss.append(flood.rss_mb())
        status_times.append(flood.timed_status()[1])
        if len(rss) % 8 == 4:
            handshakes.append(handshake_seconds(flood))
    _, sent, elapsed = source.recv()
    rss.append(flood.rss_mb())

    def settled():                  # every packet the source sent: forwarded or dropped
        status = flood.mix.status()
        accounted = (sum(drops_since(before, status).values())
                     + status["packets"]["sent"] - before["packets"]["sent"])
        return status if not any(status["queues"].values()) and accounted >= sent else None
    after = wait_for(settled, 30, "the mix to account for every flood packet")
    forwarded = after["packets"]["sent"] - before["packets"]["sent"]
    delay = stored_delay(flood, epoch + 1, due_unix)
    return dict(capacity_pps=capacity, offered_target_pps=round(factor * capacity), sent=sent,
                offered_pps=round(sent / elapsed), valid_distinct=valid, forwarded=forwarded,
                sink_received=flood.sink_received(forwarded),
                sink_distinct=len(flood.sink_alphas) - distinct_before, drops=drops_since(before, after),
                rss_baseline_mb=round(baseline_mb, 1), rss_max_mb=round(max(rss), 1),
                rss_ceiling_mb=round(ceiling_mb, 1), ceiling_parts=parts,
                status_samples=len(status_times), status_max_s=round(max(status_times), 4),
                handshakes=len(handshakes), handshake_max_s=round(max(handshakes, default=0), 4),
                pki_fetch_delay_s=None if delay is None else round(delay, 3),
                pki_tick_s=flood.net.clock.worker_tick())


# ------------------------------------------------------------------ 2: connections

def first_handshake_message() -> bytes:
    """A genuine msg1 of the link handshake (the responder answers it with a DH and a KEM
    encapsulation), reused on every half-open connection."""
    hs = Handshake(initiator=True, link_key=keys.LinkKey.generate().private, additional_data=b"x" * 32)
    return hs.write_message()


def open_flood(port: int, count: int, msg1: bytes) -> list[socket.socket]:
    """`count` non-blocking connects; on every 4th msg1 is sent, on every 7th random bytes."""
    socks = []
    for _ in range(count):
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
                pass                      # refused and closed by the mix already
    return socks


def connection_flood(flood: FloodNet, *, connections: int, waves: int = 1, legit_packets: int,
                     legit_rate: float) -> dict:
    """`waves` bursts of `connections` connections, each held until the mix's handshake timeout
    has passed, while an established peer sends `legit_packets`; then a new peer dials."""
    hold = flood.knobs["HandshakeTimeout"] / 1000 + 1.5
    seconds = legit_packets / legit_rate
    flood.wait_for_room(max(seconds, waves * hold) + 5)
    baseline_fds = fd_count(flood.pid)
    refused_before = flood.mix.status()["listener_refused"]
    source = flood.flood(flood.build(legit_packets), legit_rate, seconds)
    wait_for(lambda: flood.mix.status()["connections"]["incoming"] == 1, 10, "the legit peer's session")
    with_peer_fds = fd_count(flood.pid)
    msg1 = first_handshake_message()
    peak, opened_in = with_peer_fds, []
    for _ in range(waves):
        started = time.monotonic()
        socks = open_flood(flood.mix.port, connections, msg1)
        opened_in.append(time.monotonic() - started)
        while time.monotonic() - started < hold:
            peak = max(peak, fd_count(flood.pid))
            time.sleep(0.05)
        for sock in socks:
            sock.close()
    refused = flood.mix.status()["listener_refused"] - refused_before
    new_peer = handshake_seconds(flood)          # the held slots have timed out
    assert source.poll(seconds + 30), "the legit peer's source did not finish"
    _, sent, _ = source.recv()
    received = flood.sink_received(sent)
    fds_after = wait_for(lambda: (n := fd_count(flood.pid)) <= baseline_fds and n, 15,
                         "the mix's descriptors back to their baseline")
    return dict(connections=connections, waves=waves, opened_in_s=round(max(opened_in), 2),
                refused=refused, baseline_fds=baseline_fds, with_peer_fds=with_peer_fds,
                peak_fds=peak, fds_after=fds_after, legit_sent=sent, legit_received=received,
                new_peer_handshake_s=round(new_peer, 3), drops=flood.mix.status()["drops"])


# ------------------------------------------------------------------ 3: slow reader

def slow_reader_packets() -> int:
    """Enough packets for the slow peer to overflow the kernel's send buffer (it grows up to
    tcp_wmem's maximum on loopback) 1.5 times over, and then its outgoing queue."""
    wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    return max(2500, int(1.5 * wmem_max / L) + 64)


def slow_reader_flood(flood: FloodNet, *, per_peer: int, rate: float) -> dict:
    """`per_peer` packets for the sink and as many for the slow reader, interleaved, at `rate`."""
    seconds = 2 * per_peer / rate
    flood.wait_for_room(seconds + 5)
    packets = np.empty((2 * per_peer, L), np.uint8)
    packets[0::2], packets[1::2] = flood.build(per_peer, "sink"), flood.build(per_peer, "sender")
    before = flood.mix.status()
    baseline_mb = flood.rss_mb()
    source = flood.flood(packets, rate, seconds)
    queued, rss = [], []
    while not source.poll(SAMPLE / 2):
        queued.append(flood.mix.status()["queues"]["outgoing"])
        rss.append(flood.rss_mb())
    _, sent, _ = source.recv()

    def settled():                  # every packet: handed to a session, queued or dropped
        status = flood.mix.status()
        out = status["packets"]["sent"] - before["packets"]["sent"]
        held = status["queues"]["outgoing"]
        return status if out + sum(drops_since(before, status).values()) + held == sent else None
    status = wait_for(settled, 30, "every packet forwarded, queued or dropped")
    out = status["packets"]["sent"] - before["packets"]["sent"]
    sink_sent = sent - sent // 2                  # the even rows went to the sink
    received = flood.sink_received(sink_sent)
    return dict(sent=sent, sink_sent=sink_sent, sink_received=received,
                handed_to_slow_peer=out - received, slow_queue_max=max(queued),
                slow_queue_now=status["queues"]["outgoing"], drops=drops_since(before, status),
                rss_growth_mb=round(max(rss) - baseline_mb, 1),
                handed_to_slow_mb=round((out - received) * L / MIB, 2))
