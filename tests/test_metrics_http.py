"""The metrics endpoint scraped over real TCP: metric names and values from a fake node's counters
and status, the HTTP edges (methods, paths, oversized or stalled requests), a busy port."""
import asyncio
import socket

import numpy as np
import pytest

from katzenpost.server.counters import DropReason, Event
from katzenpost.server.metrics import REFERENCE_DROPS, MetricsServer
from management_support import (
    FakeControl, add_drops, add_events, http, run, scrape, scrape_once, serve, started_metrics, value,
)

def test_scrape_reports_counters_status_and_histogram():
    control = FakeControl()
    add_drops(control.counters, "worker-0", replay=3, unwrap_failed=2)
    add_drops(control.counters, "worker-1", replay=1)
    add_drops(control.counters, "io", send_slack=4, ingress_queue_full=5, halt=6)
    add_drops(control.counters, "scheduler", scheduler_late=7)
    add_events(control.counters, "io", received=100, sent=80)
    add_events(control.counters, "worker-0", unwrapped=90, forward=85)
    control.counters.dispatch_delay.observe_deadlines(10_000_000_000, np.array([10_000, 9_999, 9_990, 9_000]))

    s = scrape_once(control)
    assert value(s, "katzenpost_dropped_packets_total", reason="replay") == 4
    assert value(s, "katzenpost_dropped_packets_total", reason="halt") == 6
    assert value(s, "katzenpost_dropped_packets_total", reason="no_mix_keys") == 0
    assert value(s, "katzenpost_crypto_worker_dropped_packets_total") == 6
    assert value(s, "katzenpost_crypto_worker_replayed_packets_total") == 4
    assert value(s, "katzenpost_incoming_conn_dropped_packets_total") == 5
    assert value(s, "katzenpost_outgoing_conn_dropped_packets_total") == 4
    assert value(s, "katzenpost_scheduler_dropped_packets_total") == 7
    assert value(s, "katzenpost_packets_in_total") == 100
    assert value(s, "katzenpost_packets_out_total") == 80
    assert value(s, "katzenpost_unwrapped_packets_total") == 90
    assert value(s, "katzenpost_forwarded_packets_total") == 85
    assert value(s, "katzenpost_pipeline_events_total", event="unwrapped") == 90
    assert value(s, "katzenpost_info", identifier="mix1.example.org", role="mix") == 1
    assert value(s, "katzenpost_epoch") == 42
    assert value(s, "katzenpost_peers_up") == 3
    assert value(s, "katzenpost_peers_known") == 4
    assert value(s, "katzenpost_connections", direction="incoming") == 2
    assert value(s, "katzenpost_queue_packets", queue="scheduler") == 7
    # Lateness 0, 1, 10 and 1000 ms.
    hist = "katzenpost_scheduler_dispatch_delay_seconds"
    assert value(s, hist + "_bucket", le="0.00025") == 1
    assert value(s, hist + "_bucket", le="0.001") == 2
    assert value(s, hist + "_bucket", le="0.01") == 3
    assert value(s, hist + "_bucket", le="0.5") == 3
    assert value(s, hist + "_bucket", le="1.0") == 4
    assert value(s, hist + "_bucket", le="+Inf") == 4
    assert value(s, hist + "_count") == 4
    assert value(s, hist + "_sum") == pytest.approx(1.011)


def test_every_drop_reason_reaches_a_metric():
    mapped = {r for reasons in REFERENCE_DROPS.values() for r in reasons}
    # HALT is ours alone; everything else has the reference's per-stage counter too.
    assert set(DropReason) - mapped == {DropReason.HALT}
    assert len(mapped) == sum(len(r) for r in REFERENCE_DROPS.values())      # no double counting


def test_scrape_reads_fresh_values_each_time():
    control = FakeControl()

    async def body(server):
        first = await scrape(server.bound_address)
        control.counters.stage("io").count(Event.SENT, 7)
        control.counters.stage("io").drop(DropReason.SEND_SLACK, 2)
        return first, await scrape(server.bound_address)

    first, second = serve(lambda: started_metrics(control), body)
    assert value(first, "katzenpost_packets_out_total") == 0
    assert value(second, "katzenpost_packets_out_total") == 7
    assert value(second, "katzenpost_dropped_packets_total", reason="send_slack") == 2


def test_failing_or_odd_status_still_serves_the_counters(caplog):
    control = FakeControl(status={"identifier": 5, "peers": "many", "queues": {"a": "x", "b": 2},
                                  "epoch": True})
    broken = FakeControl()
    broken.status = lambda: 1 / 0

    odd, failing = scrape_once(control), scrape_once(broken)
    assert value(odd, "katzenpost_queue_packets", queue="b") == 2
    assert not any(name in ("katzenpost_info", "katzenpost_peers_up", "katzenpost_epoch")
                   for name, _ in odd)
    assert value(failing, "katzenpost_dropped_packets_total", reason="replay") == 0
    assert any("status failed" in r.getMessage() for r in caplog.records)


def test_async_status_is_awaited():
    control = FakeControl()
    plain = control.status

    async def status():
        await asyncio.sleep(0)
        return plain()

    control.status = status

    assert value(scrape_once(control), "katzenpost_peers_up") == 3


def test_http_edges():
    control = FakeControl()

    async def body(server):
        address = server.bound_address
        assert (await http(address, b"GET / HTTP/1.1\r\n\r\n"))[0] == 404
        assert (await http(address, b"POST /metrics HTTP/1.1\r\n\r\n"))[0] == 405
        assert (await http(address, b"garbage\r\n\r\n"))[0] == 400
        assert (await http(address, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 10000 + b"\r\n\r\n"))[0] == 431
        status, head, payload = await http(address, b"HEAD /metrics HTTP/1.1\r\n\r\n")
        assert status == 200 and payload == b"" and "Content-Length: " in head
        status, _, _ = await http(address, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n")
        assert status == 200
        # A client that sends half a request and stalls does not block others.
        host, port = address.rsplit(":", 1)
        _, stalled = await asyncio.open_connection(host, int(port))
        stalled.write(b"GET /met")
        await scrape(address)
        stalled.close()
    serve(lambda: started_metrics(control), body)


def test_busy_port_is_not_fatal(caplog):
    control = FakeControl()
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]

    async def body():
        server = MetricsServer(f"127.0.0.1:{port}", control)
        await server.start()
        assert server.bound_address is None
        await server.stop()
    try:
        run(body())
    finally:
        holder.close()
    assert any(r.levelname == "ERROR" and "metrics are off" in r.getMessage() for r in caplog.records)


def test_address_must_be_a_literal_ip_and_port():
    for bad in ("localhost:6543", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", ":6543"):
        with pytest.raises(ValueError):
            MetricsServer(bad, FakeControl())
