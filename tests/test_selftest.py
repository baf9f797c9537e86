"""The node's start-up self-test: its line names the X25519 backend (and why the lanes are off);
SphinxQueuePackets (packets in flight per crypto worker), left unset, is sized from it as about
UnwrapDelay/2 of unwrap work, within [64, 4096]; a configured value always wins; the pipeline
alone (no self-test) uses the floor."""
import re
from pathlib import Path

import pytest

from node_support import MixNode, free_port, private_dir, wait_for
from katzenpost import config, keys, sphinx
from katzenpost.server.node import UnwrapCapacity
from katzenpost.server.pipeline import IN_FLIGHT_CEILING, IN_FLIGHT_FLOOR, PipelineSettings, in_flight_for

MIX = (Path(__file__).parent / "configs" / "minimal_mix.toml").read_text()


@pytest.mark.parametrize("rate, delay_ms, expected", [
    (59_000, 10, 295),               # a lane-backend worker: 59k unwraps/s x 5 ms
    (20_000, 10, 100),
    (5_000, 10, IN_FLIGHT_FLOOR),    # slow machine: never below the old default
    (59_000, 1, IN_FLIGHT_FLOOR),
    (59_000, 100, 2_950),            # a generous UnwrapDelay holds more
    (2_000_000, 10, IN_FLIGHT_CEILING),
])
def test_in_flight_is_half_an_unwrap_delay_of_work_within_bounds(rate, delay_ms, expected):
    assert in_flight_for(rate, delay_ms) == expected


@pytest.mark.parametrize("backend, status, expected", [
    ("ifma", "loaded", "X25519 backend ifma)"),
    ("libsodium", "the CPU (or the OS) has no AVX-512 IFMA",
     "X25519 backend libsodium; AVX-512 IFMA lanes not used: the CPU (or the OS) has no AVX-512 IFMA)"),
])
def test_the_capacity_line_names_the_x25519_backend(monkeypatch, backend, status, expected):
    monkeypatch.setattr(sphinx, "X25519_BACKEND", backend)
    monkeypatch.setattr(sphinx, "IFMA_STATUS", status)
    line = UnwrapCapacity(50_000.0, 2, 2).describe()
    assert line.startswith("Sphinx self-test: unwraps ~100000 packets/s with 2 workers") and line.endswith(expected)


def test_unset_knob_is_zero_in_the_config_and_the_floor_without_a_self_test():
    debug = config.load_text(MIX).debug
    assert debug.sphinx_queue_packets == 0
    assert PipelineSettings.from_config(debug).SphinxQueuePackets == IN_FLIGHT_FLOOR
    explicit = config.load_text(MIX + "\n[Debug]\nSphinxQueuePackets = 40\n").debug
    assert PipelineSettings.from_config(explicit).SphinxQueuePackets == 40


def start_mix(tmp_path, extra_debug=""):
    data_dir = private_dir(tmp_path / "mix")
    identity, _ = keys.load_or_create_identity_key(str(data_dir))
    link, _ = keys.load_or_create_link_key(str(data_dir))
    node = MixNode("sized", data_dir, free_port(), identity, link, tmp_path / "mix.toml",
                   extra_debug=extra_debug)
    node.write_config(free_port(), keys.IdentityKey.generate().public, 20, log_level="INFO")
    node.start()
    return node


def logged_in_flight(node):
    wait_for(lambda: "SphinxQueuePackets:" in node.log_text(), 30, "the pipeline to start")
    text = node.log_text()
    per_worker = float(re.search(r"\((\d+)/s per worker", text).group(1))
    return int(re.search(r"SphinxQueuePackets: (\d+) packets", text).group(1)), per_worker


def test_the_node_sizes_the_queue_from_its_self_test(tmp_path):
    node = start_mix(tmp_path)
    try:
        in_flight, per_worker = logged_in_flight(node)
        assert f"X25519 backend {sphinx.X25519_BACKEND}" in node.log_text()
        # the self-test's rate is printed rounded: allow the one-packet rounding of the product
        assert abs(in_flight - in_flight_for(per_worker, 10)) <= 1
    finally:
        node.stop()


def test_a_configured_value_wins(tmp_path):
    node = start_mix(tmp_path, extra_debug="SphinxQueuePackets = 100")
    try:
        assert logged_in_flight(node)[0] == 100
    finally:
        node.stop()
