"""Ctrl-C (SIGINT) while the network starts and SIGTERM during traffic: the testnet stops every
process it started, writes its report and exits 130, within a bounded time."""
import os
import signal
import subprocess

from testnet_support import EPOCH_PERIOD, katzenpost_testnet, plan, processes_holding, wait_for_line, wait_gone

STOP_WITHIN = 90


def start(root, *args):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(katzenpost_testnet("--dir", str(root), "--plain", "--epoch-period", str(EPOCH_PERIOD),
                                               "--rate", "4", *args),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def interrupt(proc, sig, root):
    try:
        proc.send_signal(sig)
        proc.wait(STOP_WITHIN)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        left = processes_holding(root)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    return left


def test_sigint_while_starting_stops_everything(tmp_path):
    proc = start(tmp_path, "--duration", "600")
    wait_for_line(proc, "waiting for their management sockets", 120)
    pids = list(plan(tmp_path)["pids"].values())
    assert len(pids) == 6
    left = interrupt(proc, signal.SIGINT, tmp_path)
    assert proc.returncode == 130 and left == []
    assert wait_gone(pids, 5) == []
    assert (tmp_path / "report.json").exists() and plan(tmp_path)["pids"] == {}


def test_sigterm_during_traffic_stops_everything_and_reports(tmp_path):
    proc = start(tmp_path, "--duration", "600")
    wait_for_line(proc, "] sent ", 240)              # the first progress line: traffic flows
    pids = list(plan(tmp_path)["pids"].values())
    proc.send_signal(signal.SIGTERM)
    lines = wait_for_line(proc, "stopping every process", STOP_WITHIN)
    assert any("== katzenpost-testnet report" in line for line in lines)
    left = interrupt(proc, 0, tmp_path)              # signal 0: only wait for the exit
    assert proc.returncode == 130 and left == []
    assert wait_gone(pids, 5) == []
