"""TCP ports for a local test network, reserved until the processes that use them start.

A port found "free" with `bind(port 0)` and released at once comes from the kernel's ephemeral
range, the same range every outgoing connection on the machine draws from: by the time a node
binds it (a second or more later, after Python's imports) another process may have taken it.
`reserve()` therefore picks ports *below* the ephemeral range, from a random base chosen per
run (two networks started together rarely meet), and holds every one of them with a bound
socket until `release()` is called just before the process that listens on it starts. A port
some other program listens on is skipped. What is left is the short gap between `release()`
and the child's own bind; the caller detects a collision there from the child's "address
already in use" error (`is_port_clash`) and starts again on new ports.
"""
from __future__ import annotations

import random
import socket

EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
LOWEST = 20000                       # above the well-known and most registered service ports
DEFAULT_EPHEMERAL_LOW = 32768        # Linux's default when the range cannot be read
CLASH_MARKERS = ("address already in use", "errno 98")


class PortError(Exception):
    """Not enough free ports could be reserved."""


def _range_below_ephemeral() -> tuple[int, int]:
    """[low, high) of the ports to draw from: between LOWEST and the kernel's ephemeral range
    (the whole upper range when that range starts too low to leave room)."""
    try:
        with open(EPHEMERAL_RANGE_FILE) as f:
            ephemeral_low, ephemeral_high = (int(x) for x in f.read().split()[:2])
    except (OSError, ValueError):
        ephemeral_low, ephemeral_high = DEFAULT_EPHEMERAL_LOW, 60999
    if ephemeral_low - LOWEST >= 1000:
        return LOWEST, ephemeral_low
    return ephemeral_high + 1, 65536


def _hold(host: str, port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))      # no SO_REUSEADDR: stricter than the listener's own bind
    except OSError:
        sock.close()
        return None
    return sock


class PortBlock:
    """Ports held by bound (not listening) sockets until released."""

    def __init__(self, held: dict[int, socket.socket]):
        self._held = held
        self.ports = list(held)

    def release(self, ports=None) -> None:
        """Close the sockets holding `ports` (all when None), so their processes can bind them."""
        for port in list(self._held if ports is None else ports):
            sock = self._held.pop(port, None)
            if sock is not None:
                sock.close()

    @property
    def held(self) -> list[int]:
        return list(self._held)

    def __enter__(self) -> "PortBlock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def reserve(count: int, *, host: str = "127.0.0.1", rng: random.Random | None = None) -> PortBlock:
    """`count` distinct ports on `host`, each held by a bound socket (PortError if the range
    has too few free ones). Ports are taken upwards from a random base, wrapping around."""
    if count < 1:
        raise ValueError("count must be at least 1")
    low, high = _range_below_ephemeral()
    span = high - low
    rng = rng or random.SystemRandom()
    start = rng.randrange(span)
    held: dict[int, socket.socket] = {}
    for offset in range(span):
        port = low + (start + offset) % span
        sock = _hold(host, port)
        if sock is not None:
            held[port] = sock
            if len(held) == count:
                return PortBlock(held)
    PortBlock(held).release()
    raise PortError(f"only {len(held)} of {count} TCP ports free on {host} in {low}-{high - 1}")


def is_port_clash(text: str) -> bool:
    """Does a process's error output say that its address was taken?"""
    lowered = text.lower()
    return any(marker in lowered for marker in CLASH_MARKERS)
