"""Helpers for the fault tests (tests/test_faults_*.py, docs/reliability.md): a small tmpfs to fill
up, SIGKILL, a clock offset for one node process, packet streams with their outcome counted.

Every mount is undone and every process started here is killed by the caller's finally/fixture;
every wait is bounded.
"""
from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from node_support import wait_for

FILLER_CHUNK = 64 * 1024


# --- a small file system that can be filled --------------------------------------------------

@contextlib.contextmanager
def small_tmpfs(path: pathlib.Path, size_mb: int):
    """Mount a tmpfs of `size_mb` MiB (mode 0700) at `path` for the block; skipped, with the reason,
    where mounting is not permitted (not root, or a container without CAP_SYS_ADMIN)."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(path)],
                            capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {result.stderr.strip()}")
    try:
        yield path
    finally:
        # Lazy: a process of the test that still holds a file there cannot keep the mount.
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill_up(directory: pathlib.Path) -> pathlib.Path:
    """Write a filler file until the file system says ENOSPC; returns the filler's path."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as out:
        chunk = bytes(FILLER_CHUNK)
        while True:
            try:
                out.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        for size in (4096, 512, 1):     # the last partial blocks too
            try:
                while True:
                    out.write(bytes(size))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    assert os.statvfs(directory).f_bavail == 0
    return filler


def leftovers(directory: pathlib.Path) -> list[str]:
    """Temporary files a failed write left behind (names starting with a dot)."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# --- processes --------------------------------------------------------------------------------

def kill_9(proc: subprocess.Popen) -> int:
    """SIGKILL and reap; returns the exit status (-9)."""
    proc.send_signal(signal.SIGKILL)
    return proc.wait(20)


# A `katzenpost` process whose civil clock (time.time, which every wall-clock read of the
# node goes through: epochs, certificates, log time stamps) runs at an offset read from a file,
# so a test can jump it forward and back while the process runs. The monotonic clock, which
# the event loop's timers use, is left alone, as a real clock step leaves it alone.
CLOCK_LAUNCHER = r"""
import os, sys, time
_path = sys.argv.pop(1)
_real, _real_ns = time.time, time.time_ns
_cache = [0.0, -1.0]

def _offset():
    now = time.monotonic()
    if now - _cache[1] >= 0.05:
        try:
            with open(_path) as f:
                _cache[0] = float(f.read().strip() or 0)
        except (OSError, ValueError):
            pass
        _cache[1] = now
    return _cache[0]

time.time = lambda: _real() + _offset()
time.time_ns = lambda: _real_ns() + int(_offset() * 1e9)
from katzenpost.cli import main      # after the patch: default arguments bind the patched clock
sys.argv[0] = "katzenpost"
sys.exit(main())
"""


class ClockOffset:
    """The offset file of one node started by `start_with_clock` (seconds, may be negative)."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.set(0.0)

    def set(self, seconds: float) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{seconds:.3f}\n")
        os.replace(tmp, self.path)            # the node never reads half a number

    def get(self) -> float:
        return float(self.path.read_text())


def use_clock_offset(mix, offset: ClockOffset) -> None:
    """Make `mix.start()` (node_support.MixNode) run the node under the offset clock."""
    launcher = offset.path.with_name("clock_launcher.py")
    launcher.write_text(CLOCK_LAUNCHER)

    def start(env=None, prefix=()):
        mix.proc = subprocess.Popen([sys.executable, str(launcher), str(offset.path), "-f", str(mix.config_path)],
                                    cwd=str(mix.data_dir.parent), env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return mix.proc
    mix.start = start


# --- counting outcomes ------------------------------------------------------------------------

def drop_total(mixes) -> int:
    """Every drop the mixes counted so far (STATUS, all reasons)."""
    return sum(sum(m.drops().values()) for m in mixes)


def sink_indexes(net) -> list[int]:
    """The 8-byte indexes (payload_of in fault tests) of the packets the sink received."""
    epochs = [net.clock.current() + d for d in (-1, 0, 1)]
    return sorted(int.from_bytes(body[:8], "big") for body in net.open_payloads(epochs))


def index_payload(base: int):
    """payload_of for Network.build_packets: index base+i in the first 8 bytes."""
    return lambda i: (base + i).to_bytes(8, "big") + os.urandom(24)


def room_in_epoch(clock, needed: float) -> None:
    """Wait for the next epoch if less than `needed` seconds of this one are left (a test whose
    packets must keep their keys valid)."""
    till = clock.till_next()
    if till < needed:
        time.sleep(till + 0.3)


def log_lines(mix, needle: str) -> list[str]:
    return [line for line in mix.log_text().splitlines() if needle in line]


def wait_log(mix, needle: str, timeout: float) -> list[str]:
    return wait_for(lambda: log_lines(mix, needle), timeout, f"{needle!r} in {mix.name}'s log")
