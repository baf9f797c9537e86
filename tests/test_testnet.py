"""The whole test network, once for this module: `katzenpost-testnet --keep` runs traffic at a
moderate rate across epoch rollovers (mix keys rotate under traffic) and must lose nothing;
then `katzenpost-client` sends, retrieves, pings `+echo`, asks the keyserver and loops against
the kept network; then `--stop` ends every process."""
import base64
import os
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from testnet_support import client_command, plan, report, run_testnet, stop_leftovers, katzenpost_testnet, wait_gone

DURATION = 25
RATE = 4


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    root = tmp_path_factory.mktemp("tn")
    try:
        proc = run_testnet(root, "--keep", "--duration", str(DURATION), "--rate", str(RATE))
        yield root, proc
    finally:
        stop_leftovers(root)


def test_a_bounded_run_loses_nothing_across_epoch_rollovers(network):
    root, proc = network
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "== katzenpost-testnet report" in proc.stdout and "the network keeps running" in proc.stdout
    result = report(root)
    total = result["total"]
    assert total["sent"] == DURATION * RATE
    assert total["delivered"] == total["sent"] and total["lost"] == total["failed"] == total["pending"] == 0
    assert total["latency_p50"] > 0 and total["latency_p99"] >= total["latency_p50"]
    kinds = result["by_kind"]
    assert set(kinds) == {"message", "echo", "loop", "keyserver"}
    assert all(k["delivered"] > 0 for k in kinds.values())
    messages = result["messages"]
    assert messages["acknowledged"] == kinds["message"]["delivered"]
    assert messages["acknowledged_not_retrieved"] == 0
    # At least one rollover under traffic, and the mix keys moved with it: every node's oldest
    # key is now at least the epoch the traffic started in (the keys before it were pruned).
    epochs = result["epochs"]
    assert len(epochs) >= 2
    for name, node in result["nodes"].items():
        assert node["up"] and node["mix_keys"] and min(node["mix_keys"]) >= epochs[0], (name, node)
        assert node["packets_received"] > 0 and not node["drops"], (name, node["drops"])


def run_client(root, user, *args):
    config = str(root / f"client-{user}.toml")
    proc = subprocess.run(client_command(config, *args), capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_katzenpost_client_against_the_kept_network(network):
    root, proc = network
    assert proc.returncode == 0
    sent = run_client(root, "alice", "send", "bob@provider2", "hello bob")
    assert sent.returncode == 0 and "delivered to bob@provider2: SURB-ACK after" in sent.stdout, sent.stderr
    # The SURB-ACK leaves the far provider after the message is stored: it is there now.
    got = run_client(root, "bob", "retrieve")
    assert got.returncode == 0 and "hello bob" in got.stdout.splitlines(), got.stdout + got.stderr
    echo = run_client(root, "alice", "ping", "+echo", "are you there", "--count", "2")
    assert echo.returncode == 0 and echo.stdout.count("'are you there'") == 2, echo.stdout + echo.stderr
    far = run_client(root, "alice", "ping", "+echo@provider2")
    assert far.returncode == 0 and "reply from +echo@provider2" in far.stdout and "'ping'" in far.stdout
    alice_key = plan(root)["users"][0]
    assert alice_key["name"] == "alice"
    lookup = run_client(root, "bob", "keyserver", "alice@provider1")
    assert lookup.returncode == 0 and '"StatusCode":0' in lookup.stdout
    assert base64.b64encode(bytes.fromhex(alice_key["identity_key"])).decode() in lookup.stdout
    loop = run_client(root, "bob", "loop")
    assert loop.returncode == 0 and "(empty)" in loop.stdout, loop.stdout + loop.stderr
    load = run_client(root, "alice", "load", "--rate", "3", "--duration", "3", "--service", "+echo", "--json")
    assert load.returncode == 0 and "sent 9, delivered 9, lost 0" in load.stdout, load.stdout + load.stderr
    nobody = run_client(root, "alice", "ping", "+nothing")
    assert nobody.returncode == 1 and "offers no service '+nothing'" in nobody.stderr


def provider_drops(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {sample.labels["reason"]: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "katzenpost_dropped_packets_total"}


def test_a_message_to_an_unknown_user_is_a_provider_drop_in_the_metrics(network):
    root, proc = network
    assert proc.returncode == 0
    provider2 = next(p for p in plan(root)["providers"] if p["name"] == "provider2")
    before = provider_drops(provider2["metrics_port"])
    assert before["unknown_recipient"] == 0 and "rate_limited" in before
    sent = run_client(root, "alice", "send", "nobody@provider2", "lost", "--no-wait")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    deadline = time.monotonic() + 30
    while provider_drops(provider2["metrics_port"])["unknown_recipient"] < 1:
        assert time.monotonic() < deadline, "no unknown_recipient drop in provider2's metrics"
        time.sleep(0.5)


def test_stop_ends_every_process_of_the_kept_network(network):
    root, proc = network
    pids = list(plan(root)["pids"].values())
    assert len(pids) == 6 and all(os.path.exists(f"/proc/{pid}") for pid in pids)
    stop = subprocess.run(katzenpost_testnet("--stop", "--dir", str(root)),
                          capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0 and "stopped: " in stop.stdout, stop.stderr
    assert wait_gone(pids) == []
    assert plan(root)["pids"] == {}
    for name in ("mix1", "mix2", "mix3", "provider1", "provider2"):
        assert not (root / name / "management_sock").exists()
    again = subprocess.run(katzenpost_testnet("--stop", "--dir", str(root)),
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "nothing was running" in again.stdout
