"""Running `katzenpost-testnet` as a process for the test-network tests: bounded waits, and a
stop of whatever it left running in every case."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

RUN_TIMEOUT = 420          # a whole run: start (up to 3 epochs), traffic, drain, stop
EPOCH_PERIOD = 15          # short epochs: a 25-second run crosses at least one rollover


def katzenpost_testnet(*args) -> list[str]:
    return [sys.executable, "-m", "katzenpost.testnet.cli", *args]


def client_command(config: str, *args) -> list[str]:
    return [sys.executable, "-m", "katzenpost.client.cli", "-c", config, *args]


def plan(root: pathlib.Path) -> dict:
    return json.loads((root / "testnet.json").read_text())


def report(root: pathlib.Path) -> dict:
    return json.loads((root / "report.json").read_text())


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


def processes_holding(root) -> list[int]:
    """Processes (other than this one) whose command line names `root`."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if str(root).encode() in f.read():
                        found.append(int(pid))
            except OSError:
                continue
    return found


def wait_gone(pids, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [pid for pid in pids if alive(pid)]
        if not left:
            return []
        time.sleep(0.2)
    return [pid for pid in pids if alive(pid)]


def stop_leftovers(root: pathlib.Path) -> None:
    """Stop a kept or crashed network (no-op when nothing runs)."""
    if (root / "testnet.json").exists():
        subprocess.run(katzenpost_testnet("--stop", "--dir", str(root)), capture_output=True, timeout=120)


def run_testnet(root: pathlib.Path, *args, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(katzenpost_testnet("--dir", str(root), "--plain", "--epoch-period", str(EPOCH_PERIOD), *args),
                          capture_output=True, text=True, timeout=timeout, env=env)


def wait_for_line(proc: subprocess.Popen, needle: str, timeout: float) -> list[str]:
    """Read the process's stdout lines until one contains `needle` (bounded by `timeout`)."""
    import selectors
    lines, buffer = [], b""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, min(1.0, deadline - time.monotonic()))):
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                lines.append(line.decode("utf-8", "replace"))
                if needle in lines[-1]:
                    return lines
    finally:
        selector.close()
    raise AssertionError(f"no line with {needle!r} within {timeout} s:\n" + "\n".join(lines[-40:]))
