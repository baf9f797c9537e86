"""Link-layer benchmarks (pyperf): handshake cost per role and per-command frame cost per direction.

Baselines measured in the same run: the handshake with kyber-py's pure-Python Kyber (the test
oracle) for the KEM; for SendPacket frames, the pure-Python twin of _core.linkframe (Python
calls into cryptography). Each SendPacket figure is also given against the 10 µs target, and a
loopback asyncio session (send + receive over 127.0.0.1) is timed for context.

    python3 bench/bench_wire.py --fast            # ratios are printed at the end
"""
import asyncio
import os
import sys
import time
from pathlib import Path

import pyperf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from katzenpost._core.linkframe import FrameCipher as CompiledCipher  # noqa: E402
from katzenpost.reference.linkframe import FrameCipher as ReferenceCipher  # noqa: E402
from katzenpost.sphinx.geometry import PACKET_LENGTH  # noqa: E402
from katzenpost.wire import accept, connect  # noqa: E402
from katzenpost.wire.commands import SendPacket, parse_command  # noqa: E402
from katzenpost.wire.framing import HEADER_LENGTH, FrameOpener, FrameSealer  # noqa: E402
from katzenpost.wire.handshake import Handshake  # noqa: E402
from katzenpost.wire.kem import CryptographyKyber1024, KyberPyKyber1024  # noqa: E402

TARGET_PER_PACKET = 10e-6
PACKET = os.urandom(PACKET_LENGTH)


def timed_handshakes(loops: int, kem_factory, role: str) -> float:
    """Full handshakes; only the calls made by ``role`` are timed."""
    kem = kem_factory()
    keys = (os.urandom(32), os.urandom(32))
    spent = {"initiator": 0.0, "responder": 0.0}
    clock = time.perf_counter
    for _ in range(loops):
        sides = {"initiator": Handshake(initiator=True, link_key=keys[0], additional_data=b"client", kem=kem),
                 "responder": Handshake(initiator=False, link_key=keys[1], additional_data=b"node", kem=kem)}
        message = None
        for writer, reader in (("initiator", "responder"), ("responder", "initiator"),
                               ("initiator", "responder")):
            start = clock()
            message = sides[writer].write_message()
            middle = clock()
            sides[reader].read_message(message)
            end = clock()
            spent[writer] += middle - start
            spent[reader] += end - middle
        start = clock()
        sides[role].split()
        spent[role] += clock() - start
    return spent[role]


RING = 1024  # pre-sealed frames, replayed with a fresh opener every RING frames


def send_packet_send(loops: int, cipher_class) -> float:
    sealer = FrameSealer(os.urandom(32), cipher_class=cipher_class)
    clock = time.perf_counter
    start = clock()
    for _ in range(loops):
        sealer.seal(SendPacket(PACKET).to_bytes())
    return clock() - start


def send_packet_receive(loops: int, cipher_class) -> float:
    key = os.urandom(32)
    sealer = FrameSealer(key, cipher_class=cipher_class)
    command = SendPacket(PACKET).to_bytes()
    # Split like the session's two readexactly() calls deliver them.
    ring = [(frame[:HEADER_LENGTH], frame[HEADER_LENGTH:])
            for frame in (sealer.seal(command) for _ in range(RING))]
    clock = time.perf_counter
    elapsed = 0.0
    done = 0
    while done < loops:
        batch = ring[:min(RING, loops - done)]
        opener = FrameOpener(key, cipher_class=cipher_class)
        start = clock()
        for header, body in batch:
            opener.open_header(header)
            parse_command(opener.open_body(body))
        elapsed += clock() - start
        done += len(batch)
    return elapsed


def session_loopback(loops: int) -> float:
    """SendPacket through connect()/accept() sessions over 127.0.0.1 (send + receive)."""
    async def scenario() -> float:
        accepted: asyncio.Queue = asyncio.Queue()

        async def handle(reader, writer):
            await accepted.put(await accept(reader, writer, link_key=os.urandom(32),
                                            additional_data=b"node", authenticator=lambda c: True,
                                            handshake_timeout=10))
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        client = await connect("127.0.0.1", server.sockets[0].getsockname()[1],
                               link_key=os.urandom(32), additional_data=b"client",
                               authenticator=lambda c: True, handshake_timeout=10)
        node = await accepted.get()
        command = SendPacket(PACKET)

        async def receive_all():
            for _ in range(loops):
                await node.recv_command()
        start = time.perf_counter()
        receiver = asyncio.ensure_future(receive_all())
        for _ in range(loops):
            await client.send_command(command)
        await receiver
        elapsed = time.perf_counter() - start
        await client.close()
        await node.close()
        server.close()
        await server.wait_closed()
        return elapsed
    return asyncio.run(scenario())


def mean(benchmark) -> float:
    return benchmark.mean() if benchmark is not None else float("nan")


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["description"] = "katzenpost link layer: handshake and SendPacket frames"
    results = {}
    for role in ("initiator", "responder"):
        results[f"handshake {role}"] = runner.bench_time_func(
            f"handshake {role} (cryptography ML-KEM adapter)", timed_handshakes,
            CryptographyKyber1024, role)
        results[f"handshake {role} baseline"] = runner.bench_time_func(
            f"handshake {role} (baseline: kyber-py round-3 KEM)", timed_handshakes,
            KyberPyKyber1024, role)
    for direction, func in (("send", send_packet_send), ("receive", send_packet_receive)):
        results[direction] = runner.bench_time_func(
            f"SendPacket 2524 B {direction} (_core.linkframe)", func, CompiledCipher)
        results[f"{direction} baseline"] = runner.bench_time_func(
            f"SendPacket 2524 B {direction} (baseline: pure-Python twin over cryptography)", func,
            ReferenceCipher)
    results["loopback"] = runner.bench_time_func("SendPacket over a loopback session (send+receive)",
                                                 session_loopback)
    if runner.args.worker:
        return
    print()
    print("Ratios (same run):")
    for role in ("initiator", "responder"):
        ours, base = mean(results[f"handshake {role}"]), mean(results[f"handshake {role} baseline"])
        print(f"  handshake {role}: {ours * 1e6:8.0f} us; kyber-py baseline {base * 1e6:8.0f} us; "
              f"ratio {ours / base:.3f}")
    for direction in ("send", "receive"):
        ours, base = mean(results[direction]), mean(results[f"{direction} baseline"])
        print(f"  SendPacket {direction}: {ours * 1e6:6.2f} us = {ours / TARGET_PER_PACKET:.2f} x the "
              f"10 us target; pure-Python twin {base * 1e6:6.2f} us ({base / TARGET_PER_PACKET:.2f} x "
              f"target); compiled/twin ratio {ours / base:.2f}")
    loopback = mean(results["loopback"])
    pair = mean(results["send"]) + mean(results["receive"])
    print(f"  loopback session send+receive: {loopback * 1e6:6.2f} us per packet "
          f"({loopback / pair:.2f} x frame send+receive)")


if __name__ == "__main__":
    main()
