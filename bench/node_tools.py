"""Processes around the mix under test in bench_node.py: the packet builder (a pool worker), the
generator (a provider dialling the mix over a real wire session) and the sink (a provider the mix
dials). The generator and sink take commands over a multiprocessing pipe and exchange bulk data
as .npy files; their clocks are CLOCK_MONOTONIC, shared by every process of the machine.
"""
import asyncio
import os
import time

import numpy as np

from katzenpost import sphinx
from katzenpost.sphinx import geometry
from katzenpost.wire import WireError, accept, connect
from katzenpost.wire.commands import SendPacket

L = geometry.PACKET_LENGTH
ALPHA = slice(geometry.ALPHA_OFFSET, geometry.ALPHA_OFFSET + geometry.GROUP_ELEMENT_LENGTH)
TICK = 0.001                     # the generator's pacing interval (s)
SINK_CAPACITY = 1 << 20          # packets a sink records between two collections


# ------------------------------------------------------------------ packet building (pool worker)

def build_chunk(args):
    """(packets uint8[n, L], alpha after the mix uint8[n, 32]) for n packets mix -> sink.

    The alpha the sink will see is computed by unwrapping with the mix's key, which the
    benchmark reads from the mix's DataDir: it identifies each packet at the sink."""
    n, mix_id, mix_public, mix_private, sink_id, sink_public, delay_ms = args
    recipient = b"sink".ljust(geometry.RECIPIENT_ID_LENGTH, b"\0")
    path = [sphinx.PathHop(id=mix_id, public_key=mix_public, commands=[sphinx.NodeDelay(delay_ms)]),
            sphinx.PathHop(id=sink_id, public_key=sink_public, commands=[sphinx.Recipient(recipient)])]
    packets = np.empty((n, L), np.uint8)
    alphas = np.empty((n, 32), np.uint8)
    payload = bytes(geometry.FORWARD_PAYLOAD_LENGTH)
    for i in range(n):
        packet = sphinx.new_packet(path, payload)
        packets[i] = np.frombuffer(packet, np.uint8)
        alphas[i] = np.frombuffer(sphinx.unwrap(mix_private, packet).packet[ALPHA], np.uint8)
    return packets, alphas


def pin(core):
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})


# ------------------------------------------------------------------ generator

def generator_main(conn, core, host, port, link_private, identity_public, mix_id):
    pin(core)
    asyncio.run(_generator(conn, host, port, link_private, identity_public, mix_id))


async def _generator(conn, host, port, link_private, identity_public, mix_id):
    session = None
    while True:
        command = await asyncio.to_thread(conn.recv)
        if command[0] == "stop":
            break
        if session is None or session.closed:
            session = await _dial(host, port, link_private, identity_public, mix_id)
        _, packets_path, rate, times_path = command
        packets = np.load(packets_path, mmap_mode="r")
        sent_at = await _send_paced(session, packets, rate)
        np.save(times_path, sent_at)
        conn.send(("sent", int(len(packets))))
    if session is not None:
        await session.close()


async def _dial(host, port, link_private, identity_public, mix_id):
    for _ in range(100):
        try:
            return await connect(host, port, link_key=link_private, additional_data=identity_public,
                                 authenticator=lambda c: c.additional_data == mix_id,
                                 handshake_timeout=10, connect_timeout=10)
        except WireError:
            await asyncio.sleep(0.2)
    raise RuntimeError("generator: cannot connect to the mix")


async def _send_paced(session, packets, rate):
    """Send at `rate` packets/s in TICK-sized chunks; returns each packet's send time (ns)."""
    total = len(packets)
    sent_at = np.zeros(total, np.int64)
    sent = 0
    start = time.monotonic()
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        if due > sent:
            if not session.is_writable():
                await session.wait_writable()      # back-pressure: the generator falls behind
            # Stamped before the write: a packet cannot reach the sink before its stamp, so
            # the added latency is never under-stated (stamped after, a preempted generator
            # made some look shorter than the delay itself).
            sent_at[sent:due] = time.monotonic_ns()
            session.write_packets(packets[sent:due])
            sent = due
        await asyncio.sleep(TICK)
    await session.wait_writable()
    return sent_at


# ------------------------------------------------------------------ sink

def sink_main(conn, core, port, link_private, identity_public, mix_id):
    pin(core)
    asyncio.run(_sink(conn, port, link_private, identity_public, mix_id))


async def _sink(conn, port, link_private, identity_public, mix_id):
    state = {"alphas": np.zeros((SINK_CAPACITY, 32), np.uint8),
             "times": np.zeros(SINK_CAPACITY, np.int64), "count": 0}
    sessions = []

    async def on_connection(reader, writer):
        try:
            session = await accept(reader, writer, link_key=link_private, additional_data=identity_public,
                                   authenticator=lambda c: c.additional_data == mix_id,
                                   handshake_timeout=10)
        except WireError:
            return
        sessions.append(session)
        try:
            while True:
                commands = await session.recv_commands(256)
                now = time.monotonic_ns()
                for command in commands:
                    i = state["count"]
                    if type(command) is SendPacket and i < SINK_CAPACITY:
                        state["alphas"][i] = np.frombuffer(command.sphinx_packet, np.uint8, 32, ALPHA.start)
                        state["times"][i] = now
                        state["count"] = i + 1
        except (WireError, asyncio.CancelledError):
            return

    server = await asyncio.start_server(on_connection, "127.0.0.1", port)
    conn.send(("listening",))
    while True:
        command = await asyncio.to_thread(conn.recv)
        if command[0] == "stop":
            break
        _, path = command
        n = state["count"]
        np.savez(path, alphas=state["alphas"][:n], times=state["times"][:n])
        state["count"] = 0
        conn.send(("collected", n))
    server.close()
    for session in sessions:
        await session.close(abort=True)
