"""`katzenpost-testnet --authorities 3` as a process: a voting network carries the traffic with
nothing lost while one of its authorities restarts, the report is the usual one, and every
process is gone afterwards."""
from testnet_support import processes_holding, report, run_testnet, stop_leftovers, wait_gone

DURATION = 10
RATE = 3


def test_a_voting_network_run_with_an_authority_restart_loses_nothing(tmp_path):
    root = tmp_path / "tn"
    try:
        proc = run_testnet(root, "--authorities", "3", "--epoch-period", "20", "--duration",
                           str(DURATION), "--rate", str(RATE), "--restart", "auth2@2")
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        assert "started 3 voting authorities, 3 mixes and 2 providers" in proc.stdout
        result = report(root)
        total = result["total"]
        assert total["sent"] == DURATION * RATE and total["delivered"] == total["sent"]
        assert result["settings"]["authorities"] == 3
        [restart] = result["restarts"]
        assert restart["name"] == "auth2" and "error" not in restart, restart
        assert set(result["nodes"]) == {"mix1", "mix2", "mix3", "provider1", "provider2"}
        assert wait_gone(processes_holding(root)) == []
    finally:
        stop_leftovers(root)
