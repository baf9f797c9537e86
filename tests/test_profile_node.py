"""PROFILE on a real `katzenpost -f` mix (one layer, a real authority) with
`[Debug] EnableProfiling = true`: the reply names the file, the node keeps forwarding while the
recording runs, a second PROFILE meanwhile is refused, and the files (0600, in the DataDir) show
the I/O thread and the crypto workers. The config side: the key's default and its validation."""
import os
import stat
import time

import pytest

from katzenpost import config
from node_support import E2E_TIMING_DEBUG, Network, wait_for

BUSY = "554 Transaction failed: a profile is already being recorded"


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    network = Network(tmp_path_factory.mktemp("net"), layers=1, management=True,
                      mix_debug=E2E_TIMING_DEBUG + "\nEnableProfiling = true")
    try:
        network.start(timeout=90)
        yield network
    finally:
        network.close()


def test_the_node_forwards_while_a_profile_is_recorded(net):
    mix = net.layers()[0]
    banner, reply = mix.management("PROFILE 4")
    assert banner.startswith("220 ") and reply.startswith("250 "), reply
    path = reply[4:]
    assert os.path.dirname(path) == str(mix.data_dir) and path.endswith(".folded")
    assert mix.management("PROFILE 1")[1] == BUSY
    packets = net.build_packets(20, delays=(5,))
    net.send(packets)
    net.wait_received(len(packets), 15)
    assert not os.path.exists(path), "the packets were forwarded only after the recording"
    wait_for(lambda: os.path.exists(path), 20, "the profile file")
    svg = path[:-len(".folded")] + ".svg"
    for name in (path, svg):
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o600
    lines = open(path, encoding="utf-8").read().splitlines()
    threads = {line.split(";", 1)[0] for line in lines}
    assert "MainThread" in threads and any(t.startswith("katzenpost-crypto-") for t in threads), threads
    assert mix.management("PROFILE 1")[1].startswith("250 ")         # free again once it ended
    net.received.clear()


MIX = """
[Server]
Identifier = "mix1"
Addresses = ["127.0.0.1:30001"]
DataDir = "/srv/mix1"
[PKI.Nonvoting]
Address = "127.0.0.1:30000"
PublicKey = "kAiVchOBwHVtKJVFJLsdCQ9UyN2SlfhLHYqT8ePBetg="
"""


def test_enable_profiling_defaults_off_and_must_be_a_boolean():
    assert config.load_text(MIX).debug.enable_profiling is False
    assert config.load_text(MIX + "[Debug]\nEnableProfiling = true\n").debug.enable_profiling is True
    with pytest.raises(config.ConfigError) as caught:
        config.load_text(MIX + '[Debug]\nEnableProfiling = "yes"\n')
    assert caught.value.problems == ["config: Debug.EnableProfiling must be a boolean, got string"]


def test_a_halt_ends_a_running_recording_and_still_writes_it(net):
    """Last of the module (it stops the mix): SIGTERM during a 60-s PROFILE halts the node at
    once, and the halt writes what the sampler has (complete files, 0600)."""
    mix = net.layers()[0]
    # (the recording an earlier test left running ends within a few seconds)
    reply = wait_for(lambda: next((r for r in mix.management("PROFILE 60")[1:] if r.startswith("250 ")), None),
                     15, "PROFILE accepted")
    path = reply[4:]
    time.sleep(0.5)                                         # some samples to write
    started = time.monotonic()
    assert mix.stop() == 0
    assert time.monotonic() - started < 20                  # not the recording's 60 s
    svg = path[:-len(".folded")] + ".svg"
    for name in (path, svg):
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o600
    assert "MainThread" in {line.split(";", 1)[0] for line in open(path, encoding="utf-8")}
    assert not [n for n in os.listdir(mix.data_dir) if n.endswith(".tmp")]
