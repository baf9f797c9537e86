"""STATUS rates: reading STATUS (a management command or a metrics scrape) changes nothing;
the packets-per-second figures come from counter samples a periodic task takes."""
from types import SimpleNamespace

import pytest

from katzenpost.server import node as node_module
from katzenpost.server.node import Node
from provider_support import provider_config


class Counters:
    def __init__(self):
        self.received = self.sent = 0

    def snapshot(self):
        return {"events": {"received": self.received, "sent": self.sent}, "drops": {}}


def node_with_counters(tmp_path, monkeypatch, clock):
    monkeypatch.setattr(node_module.time, "monotonic", lambda: clock[0])
    node = Node(provider_config(tmp_path), None, None)
    counters = Counters()
    node.pipeline = SimpleNamespace(counters=counters, queue_depths=lambda: {})
    return node, counters


def test_status_reads_do_not_reset_the_rate_window(tmp_path, monkeypatch):
    clock = [1000.0]
    node, counters = node_with_counters(tmp_path, monkeypatch, clock)
    for second in range(1, 6):                  # 100 packets in, 50 out per second
        clock[0] = 1000.0 + second
        counters.received, counters.sent = 100 * second, 50 * second
        node.sample_rates()
    clock[0] = 1005.5
    counters.received, counters.sent = 550, 275
    first = node.status()["packets_per_second"]
    assert first == {"in": pytest.approx(100.0), "out": pytest.approx(50.0)}
    for _ in range(5):                          # a scrape storm: the same answer every time
        assert node.status()["packets_per_second"] == first


def test_the_window_keeps_the_last_samples_only(tmp_path, monkeypatch):
    clock = [0.0]
    node, counters = node_with_counters(tmp_path, monkeypatch, clock)
    for second in range(1, 31):                 # 10/s for 20 s, then 1000/s for 10 s
        clock[0] = float(second)
        counters.received += 10 if second <= 20 else 1000
        node.sample_rates()
    assert node.status()["packets_per_second"]["in"] == pytest.approx(1000.0, rel=0.12)


def test_status_names_the_x25519_backend_and_the_operator_rates(tmp_path, monkeypatch):
    from katzenpost import sphinx
    node, _ = node_with_counters(tmp_path, monkeypatch, [0.0])
    status = node.status()
    assert status["x25519_backend"] == sphinx.X25519_BACKEND
    assert (status["send_rate"], status["send_burst"]) == (None, None)
    node.set_send_rate(12)
    node.set_send_burst(3)
    assert (node.status()["send_rate"], node.status()["send_burst"]) == (12, 3)
