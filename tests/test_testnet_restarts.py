"""A mix restart and an authority restart during traffic: both come back, traffic resumes after
each, and nothing acknowledged is lost (every message whose SURB-ACK came back is retrieved by
its recipient). Replies in flight through the restarted mix may be lost; they are counted, never
acknowledged."""
import pytest

from testnet_support import plan, processes_holding, report, run_testnet, stop_leftovers, wait_gone


@pytest.fixture(scope="module")
def restarted(tmp_path_factory):
    root = tmp_path_factory.mktemp("tnr")
    try:
        proc = run_testnet(root, "--duration", "30", "--rate", "4",
                           "--restart", "mix2@6", "--restart", "authority@16")
        yield root, proc
    finally:
        stop_leftovers(root)


def test_traffic_resumes_after_a_mix_and_an_authority_restart(restarted):
    root, proc = restarted
    assert "== katzenpost-testnet report" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
    result = report(root)
    restarts = {r["name"]: r for r in result["restarts"]}
    assert set(restarts) == {"mix2", "authority"}, result["restarts"]
    for name, restart in restarts.items():
        assert restart["took"] >= 0 and "error" not in restart, restart
        assert restart["delivered_after"] > 0, (name, restart)     # traffic resumed
    total = result["total"]
    assert total["sent"] == 120 and total["failed"] == 0 and total["pending"] == 0
    assert result["messages"]["acknowledged_not_retrieved"] == 0
    assert result["messages"]["acknowledged"] > 0
    # What was lost went through mix2 while it was down (a few seconds of a 30-second run).
    assert total["lost"] <= 30, total
    assert total["delivered"] + total["lost"] == total["sent"]
    assert proc.returncode == (0 if total["lost"] == 0 else 1)


def test_the_run_left_no_process(restarted):
    root, proc = restarted
    assert "testnet: stopping every process" in proc.stdout
    assert plan(root)["pids"] == {}
    # Every process ever started (the restarted ones too) is gone: none names the directory.
    assert wait_gone(processes_holding(root), timeout=5) == []
