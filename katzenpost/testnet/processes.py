"""Start, watch and stop the test network's processes.

Each node and the authority run as `python -m katzenpost ...` / `python -m katzenpost.authority`
with this interpreter, in a session of their own (a Ctrl-C in the terminal reaches only the
testnet, which then stops them in order), stdout and stderr going to `stdio.log` in their
DataDir. Unless the network is kept, each child also gets SIGTERM from the kernel if the testnet
dies without cleaning up (Linux parent-death signal), so no process outlives a killed run.
Stopping is SIGTERM, a bounded wait, then SIGKILL.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

STOP_TIMEOUT = 20.0
_PR_SET_PDEATHSIG = 1


class ProcessError(Exception):
    """A process did not start or died; the message has the tail of its output."""


def _die_with_parent() -> None:   # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass   # not Linux: the testnet's own clean-up still stops the children


def tail(path: str, limit: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


@dataclass
class Child:
    name: str
    argv: list[str]
    cwd: str
    stdio_path: str
    log_path: str
    proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, *, keep: bool) -> None:
        with open(self.stdio_path, "ab") as out:
            os.chmod(self.stdio_path, 0o600)
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=None if keep else _die_with_parent)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def failure(self) -> str:
        code = self.proc.returncode if self.proc is not None else None
        return (f"{self.name} exited with status {code}\n--- {self.stdio_path}\n{tail(self.stdio_path)}"
                f"\n--- {self.log_path}\n{tail(self.log_path)}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def node_argv(config_path: str) -> list[str]:
    return [sys.executable, "-m", "katzenpost", "-f", config_path]


def authority_argv(config_path: str) -> list[str]:
    return [sys.executable, "-m", "katzenpost.authority", "-f", config_path]


class Supervisor:
    """The children of one network, started and stopped in order (authorities first up, last
    down)."""

    def __init__(self, *, keep: bool = False, last: tuple[str, ...] = ("authority",)):
        self.keep = keep
        self.last = set(last)          # stopped after every other child (the authorities)
        self.children: dict[str, Child] = {}

    def add(self, name: str, argv: list[str], cwd: str, log_path: str) -> Child:
        child = Child(name, argv, cwd, os.path.join(cwd, "stdio.log"), log_path)
        self.children[name] = child
        return child

    def start(self, name: str) -> Child:
        child = self.children[name]
        child.start(keep=self.keep)
        return child

    def restart(self, name: str) -> Child:
        child = self.children[name]
        child.stop()
        child.start(keep=self.keep)
        return child

    def check(self) -> None:
        """ProcessError for the first child that died."""
        for child in self.children.values():
            if child.proc is not None and not child.alive():
                raise ProcessError(child.failure())

    def pids(self) -> dict[str, int]:
        return {name: c.pid for name, c in self.children.items() if c.alive()}

    def stop_all(self) -> dict[str, int | None]:
        """Stop the nodes (in parallel: each halts on its own), then the authorities."""
        codes = {}
        nodes = [c for c in self.children.values() if c.name not in self.last and c.alive()]
        for child in nodes:
            child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in nodes:
            codes[child.name] = child.stop(max(0.1, deadline - time.monotonic()))
        for child in self.children.values():
            if child.name not in codes:
                codes[child.name] = child.stop()
        return codes


def running(pids: dict[str, int], marker: str) -> dict[str, int]:
    """The processes of `pids` still running with `marker` (the network's directory) in their
    command line: a pid reused by another program is not ours."""
    alive = {}
    for name, pid in pids.items():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if marker in cmdline and _exists(pid):
            alive[name] = pid
    return alive


def stop_pids(pids: dict[str, int], marker: str, timeout: float = STOP_TIMEOUT) -> list[str]:
    """Stop the processes of a kept network (see `running`): SIGTERM, a bounded wait, SIGKILL.
    Returns the names stopped."""
    stopped = []
    for name, pid in running(pids, marker).items():
        try:
            os.kill(pid, signal.SIGTERM)
            stopped.append(name)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + timeout
    for name in stopped:
        pid = pids[name]
        while time.monotonic() < deadline and _exists(pid):
            time.sleep(0.1)
        if _exists(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return stopped


def _exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"   # a zombie has exited
    except (OSError, IndexError):
        return False
