"""Floods against ONE real `katzenpost -f` mix on 127.0.0.1 (tests/test_flood_*.py and the long
mode, bench/flood.py).

The network is the node benchmark's (tests/node_support.Network with one layer and the providers'
sessions run elsewhere): a real `katzenpost-authority`, the mix under test, and two providers of
the document played by helper processes: `sender` dials the mix (the flood source; it may also
listen, as the slow reader of the mix's outgoing link to it) and `sink` is dialled by the mix and
reads everything (bench/node_tools.sink_main). Everything measured about the mix comes from
outside the process: /proc/<pid>/status (VmRSS, VmHWM), /proc/<pid>/fd, the management socket's
STATUS, its log.
"""
from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import re
import resource
import shutil
import socket
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "bench"))

import node_tools  # noqa: E402
from node_support import Network, wait_for  # noqa: E402

from katzenpost import keys, sphinx  # noqa: E402
from katzenpost.sphinx import geometry  # noqa: E402
from katzenpost.wire import WireError, accept, connect  # noqa: E402

L = geometry.PACKET_LENGTH
MIB = 1 << 20
SELF_TEST = re.compile(r"Sphinx self-test: unwraps ~(\d+) packets/s with (\d+) workers")
IN_FLIGHT = re.compile(r"SphinxQueuePackets: (\d+) packets in flight per worker")
SLOW_RCVBUF = 16384        # the slow reader's receive buffer (the kernel doubles it)
# Bounds the flood tests configure on the mix: every queue that holds packets has a stated size,
# so the memory ceiling follows from the configuration (SchedulerQueueSize is unlimited by default,
# as in the reference; a flood test states it).
FLOOD_DEBUG = {"SchedulerQueueSize": 4096, "OutgoingQueueSize": 64, "HandshakeTimeout": 2000}


def proc_status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def raise_fd_limit(wanted: int) -> None:
    """This process opens thousands of sockets in the connection flood: raise its soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def debug_lines(knobs: dict) -> str:
    return "\n".join(f"{k} = {v}" for k, v in knobs.items())


class FloodNet:
    """One mix, its authority, the sink process; flood sources are started on demand."""

    def __init__(self, root: Path, *, debug: dict | None = None, workers: int = 1, period: int = 20,
                 slow_sender: bool = False) -> None:
        self.root = root
        self.knobs = dict(FLOOD_DEBUG, **(debug or {}))
        self.net = Network(root, period=period, layers=1, serve_providers=False, log_level="INFO",
                           workers=workers, management=True, mix_debug=debug_lines(self.knobs))
        self.mix = self.net.mixes[0]
        self.ctx = multiprocessing.get_context("spawn")
        self.slow_sender = slow_sender
        self._procs: list = []
        self.sink_conn = self.slow_conn = None
        # The alpha (group element after the mix) of every packet the sink received: a packet
        # that got out twice (a replay the filter missed) shows as a repeated alpha.
        self.sink_alphas: set[bytes] = set()

    # --- processes -------------------------------------------------------------------------

    def spawn(self, target, *args):
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=target, args=(child, *args), daemon=True)
        proc.start()
        self._procs.append((proc, parent))
        return proc, parent

    def start(self) -> None:
        sink, self.sink_conn = self.spawn(node_tools.sink_main, None, self.net.sink.port,
                                          self.net.sink.link.private, self.net.sink.identity.public,
                                          self.mix.identity.public)
        assert self.sink_conn.poll(30) and self.sink_conn.recv() == ("listening",)
        if self.slow_sender:
            _, self.slow_conn = self.spawn(slow_reader_main, self.net.sender.port,
                                           self.net.sender.link.private,
                                           self.net.sender.identity.public, self.mix.identity.public)
            assert self.slow_conn.poll(30) and self.slow_conn.recv() == ("listening",)
        self.net.start()
        wait = ["Connected to sink"] + (["Connected to sender"] if self.slow_sender else [])
        wait_for(lambda: self._alive() and all(w in self.mix.log_text() for w in wait), 90,
                 f"the mix to fetch its document and dial {wait}", interval=0.25)

    @contextlib.contextmanager
    def running(self):
        """Started, and every process of it killed on the way out whatever happened."""
        try:
            self.start()
            yield self
        finally:
            self.close()

    def _alive(self) -> bool:
        self.net.check_alive()
        return True

    def close(self) -> None:
        for proc, conn in self._procs:
            try:
                conn.send(("stop",))
            except OSError:
                pass
        for proc, _ in self._procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        self.net.close()

    # --- the mix, seen from outside --------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.mix.proc.pid

    def rss_mb(self) -> float:
        return proc_status_kb(self.pid, "VmRSS") / 1024

    def capacity(self) -> int:
        """The node's own self-test estimate of its unwrap rate (packets/s, all workers)."""
        found = SELF_TEST.search(self.mix.log_text())
        assert found, "no self-test line in the mix's log"
        return int(found.group(1))

    def in_flight_per_worker(self) -> int:
        configured = self.knobs.get("SphinxQueuePackets")
        if configured:
            return configured
        found = IN_FLIGHT.search(self.mix.log_text())
        assert found, "no SphinxQueuePackets line in the mix's log"
        return int(found.group(1))

    def timed_status(self) -> tuple[dict, float]:
        started = time.monotonic()
        status = self.mix.status()
        return status, time.monotonic() - started

    # --- packets ---------------------------------------------------------------------------

    def build(self, count: int, to: str = "sink") -> np.ndarray:
        """`count` valid packets mix -> `to` (a provider) for the current epoch's key."""
        epoch = self.net.clock.current()
        desc = self.net.document(epoch).node_by_identity(self.mix.identity.public)
        mix_private = keys.read_pem_key(str(self.mix.data_dir / f"mixkey-{epoch}.private.pem"),
                                        "X25519 PRIVATE KEY", 32)
        provider = getattr(self.net, to)
        packets, _ = node_tools.build_chunk((count, self.mix.identity.public, desc.mix_keys[epoch],
                                             mix_private, provider.identity.public,
                                             sphinx.public_key(provider.mix_key(epoch)), 1))
        return packets

    def wait_for_room(self, seconds: float) -> None:
        """Packets carry this epoch's key: start a phase only with `seconds` left in the epoch."""
        till = self.net.clock.till_next()
        if till < seconds:
            time.sleep(till + 1.0)
            wait_for(lambda: self._has_document(), 60, "the new epoch's document")

    def _has_document(self) -> bool:
        try:
            self.net.document(self.net.clock.current())
            return True
        except Exception:
            return False

    def sink_count(self) -> int:
        """Packets the sink received since the last call."""
        path = self.root / "received.npz"
        self.sink_conn.send(("collect", str(path)))
        assert self.sink_conn.poll(30)
        count = self.sink_conn.recv()[1]
        with np.load(path) as received:
            self.sink_alphas.update(row.tobytes() for row in received["alphas"])
        return count

    def sink_received(self, expected: int, timeout: float = 10.0) -> int:
        """Packets at the sink since the last collection, collected until `expected` arrived or
        `timeout` passed (on a loaded machine the last ones can take a while)."""
        received, deadline = 0, time.monotonic() + timeout
        while True:
            received += self.sink_count()
            if received >= expected or time.monotonic() > deadline:
                return received
            time.sleep(0.2)

    def flood(self, packets: np.ndarray, rate: float, seconds: float):
        """Start a flood source (the `sender` provider) sending `packets` round and round at
        `rate` packets/s for `seconds`; returns its pipe (it answers ("done", sent, seconds))."""
        path = self.root / f"flood-{time.monotonic_ns()}.npy"
        np.save(path, packets)
        _, conn = self.spawn(flooder_main, "127.0.0.1", self.mix.port, self.net.sender.link.private,
                             self.net.sender.identity.public, self.mix.identity.public, str(path),
                             rate, seconds)
        return conn


def garbage(count: int) -> np.ndarray:
    """Packets of the right length whose unwrap fails (random group element and MAC)."""
    return np.frombuffer(os.urandom(count * L), np.uint8).reshape(count, L)


# ------------------------------------------------------------------ flood source (a process)

def flooder_main(conn, host, port, link_private, identity_public, mix_id, packets_path, rate, seconds):
    result = asyncio.run(_flood(host, port, link_private, identity_public, mix_id,
                                np.load(packets_path), rate, seconds))
    conn.send(result)


async def _flood(host, port, link_private, identity_public, mix_id, packets, rate, seconds):
    """Send packets round and round, paced at `rate` (falling behind under back-pressure:
    the offered load is then all the mix's socket takes), for `seconds`."""
    session = await connect(host, port, link_key=link_private, additional_data=identity_public,
                            authenticator=lambda c: c.additional_data == mix_id,
                            handshake_timeout=10, connect_timeout=10)
    total, sent, chunk = len(packets), 0, 256
    start = time.monotonic()
    deadline = start + seconds
    while (now := time.monotonic()) < deadline:
        due = int((now - start) * rate)
        if due <= sent:
            await asyncio.sleep(0.001)
            continue
        if not session.is_writable():
            try:
                async with asyncio.timeout(max(0.0, deadline - now)):
                    await session.wait_writable()
            except TimeoutError:
                break
            continue
        n = min(chunk, due - sent)
        first = sent % total
        rows = packets[first:first + n]
        session.write_packets(rows)
        sent += len(rows)
        await asyncio.sleep(0)
    elapsed = time.monotonic() - start
    # Every packet counted as sent reaches the mix: let the transport drain, then close with a
    # FIN (an abort would throw away what is still buffered here, and a reset what the mix has
    # not read yet).
    try:
        async with asyncio.timeout(30):
            await session.wait_writable()
            writer = session._writer
            writer.write_eof()
            while not writer.transport.is_closing() and writer.transport.get_write_buffer_size():
                await asyncio.sleep(0.01)
            await session._reader.read()          # the mix closes after reading everything
    except (TimeoutError, OSError, WireError):
        pass
    await session.close()
    return ("done", sent, elapsed)


# ------------------------------------------------------------------ slow reader (a process)

def slow_reader_main(conn, port, link_private, identity_public, mix_id):
    asyncio.run(_slow_reader(conn, port, link_private, identity_public, mix_id))


async def _slow_reader(conn, port, link_private, identity_public, mix_id):
    """A provider the mix dials that completes the handshake and then never reads again: its
    receive buffer fills, then the mix's send buffer, then the mix's outgoing queue for it."""
    sessions = []

    async def on_connection(reader, writer):
        try:
            session = await accept(reader, writer, link_key=link_private,
                                   additional_data=identity_public,
                                   authenticator=lambda c: c.additional_data == mix_id,
                                   handshake_timeout=10)
        except WireError:
            return
        writer.transport.pause_reading()          # from now on nothing is read
        sessions.append(session)

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)   # inherited by accept
    listener.bind(("127.0.0.1", port))
    server = await asyncio.start_server(on_connection, sock=listener)
    conn.send(("listening",))
    while True:
        command = await asyncio.to_thread(conn.recv)
        if command[0] == "stop":
            break
        conn.send(("sessions", len(sessions)))
    server.close()
    for session in sessions:
        await session.close(abort=True)


def cleanup(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
