"""The provider inside the node, over real wire sessions (Noise handshake, per-frame AEAD): the
node's listeners with the real Provider as their client service, as `katzenpost -f` wires them.

1. Ingress of client SendPackets: a sender process floods SendPacket frames on a client session
   (username + link key, registered with ADD_USER); the node's command loop checks each against
   the client's token bucket and submits it. Baseline in the same run: the same flood on a mix
   session (no gate). Reported: packets/s through the listener, the listener process's CPU per
   packet, and client / mix ratios. The pipeline is a counter here (its cost is bench_pipeline's).
2. RetrieveMessage round trips (one client, sequential, each one deleting the previous head): a
   storage-thread hop and a committed delete per round trip. Baseline: GetConsensus round trips
   on the same session (answered from memory). On SQLite and, with --dsn, PostgreSQL.
3. Spool writes per second: the provider's delivery path (on_local -> group commit -> SURB-ACKs)
   from bench_provider_spool, on SQLite and PostgreSQL. Every store is committed before it
   counts: durability is never traded for these figures.

    python3 bench/bench_provider.py [--seconds 3] [--dsn DSN] [--json out.json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_provider_spool  # noqa: E402

from katzenpost import keys  # noqa: E402
from katzenpost.provider.provider import Provider  # noqa: E402
from katzenpost.provider.spool.base import SpoolRecord  # noqa: E402
from katzenpost.server.incoming import Listeners, ListenerSettings  # noqa: E402
from katzenpost.sphinx.geometry import PACKET_LENGTH, USER_FORWARD_PAYLOAD_LENGTH  # noqa: E402
from katzenpost.wire import connect  # noqa: E402
from katzenpost.wire import commands as wire  # noqa: E402
from tests.provider_support import provider_config  # noqa: E402

USER = b"bench"
NODE = keys.IdentityKey.generate()
NODE_LINK = keys.LinkKey.generate()
MIX = keys.IdentityKey.generate()
DOCUMENT = os.urandom(30_000)            # what GetConsensus returns: a document-sized blob
SEND_CHUNK = 256


class CountingPipeline:
    """The listener's view of the pipeline: submit() and end_of_read() only, counted."""

    def __init__(self):
        self.submitted = self.from_client = 0

    def submit(self, packet, recv_at_ns, from_client=False, *, caller_flushes=False):
        if len(packet) != PACKET_LENGTH:
            raise ValueError("bad length")
        self.submitted += 1
        self.from_client += from_client

    def end_of_read(self):
        pass


class MixPKI:
    """Accepts the one benchmark mix as a peer of the previous layer."""

    def authenticate_connection(self, creds, is_outgoing):
        ok = creds.additional_data == MIX.public
        return ok, ok


def flood(port: int, node_id: bytes, ad: bytes, link_private: bytes, seconds: float) -> None:
    """Sender process: SendPacket frames as fast as the session takes them, for `seconds`."""
    async def go():
        session = await connect("127.0.0.1", port, link_key=link_private, additional_data=ad,
                                authenticator=lambda c: c.additional_data == node_id,
                                handshake_timeout=10)
        command = wire.SendPacket(os.urandom(PACKET_LENGTH))
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(SEND_CHUNK):
                await session.send_command(command)
        await session.close("done")
    asyncio.run(go())


async def started_node(tmp: Path, backend: dict):
    cfg = provider_config(tmp, **backend)
    provider = Provider(cfg, schedule=lambda p, d, h: None, get_raw_consensus=lambda e: (0, DOCUMENT),
                        submit_packet=lambda p: None)
    await provider.start()
    port = bench_port()
    listeners = Listeners([f"127.0.0.1:{port}"], link_key=NODE_LINK.private, identity_public=NODE.public,
                          pki=MixPKI(), pipeline=CountingPipeline(),
                          settings=ListenerSettings(reauth_interval=3600), clients=provider)
    await listeners.start()
    return provider, listeners, port


def bench_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def ingress(listeners, port: int, ad: bytes, link_private: bytes, seconds: float) -> dict:
    """Run a flood from another process; rate and this process's CPU per packet while it lasts."""
    pipeline = listeners.pipeline
    sender = multiprocessing.get_context("spawn").Process(target=flood,
                                                              args=(port, NODE.public, ad, link_private, seconds))
    sender.start()
    try:
        deadline = time.monotonic() + 20
        while pipeline.submitted == 0:                   # the handshake and first frames
            if time.monotonic() > deadline or not sender.is_alive():
                raise RuntimeError("the sender never got through")
            await asyncio.sleep(0.01)
        before, cpu0, t0 = pipeline.submitted, time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds * 0.8)               # the middle of the flood
        done, cpu, elapsed = pipeline.submitted - before, time.process_time() - cpu0, time.perf_counter() - t0
    finally:
        await asyncio.get_running_loop().run_in_executor(None, sender.join, 30)
        if sender.is_alive():
            sender.kill()
    return {"packets_per_s": round(done / elapsed), "cpu_us_per_packet": round(cpu / max(done, 1) * 1e6, 2)}


async def round_trips(session, make, seconds: float) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        await session.send_command(make(done))
        reply = await session.recv_command(timeout=10)
        if isinstance(reply, wire.MessageEmpty):
            raise RuntimeError("the spool ran empty: raise SPOOLED")
        done += 1
    return done / (time.perf_counter() - start)


async def retrieval(provider, port: int, client_link, seconds: float) -> dict:
    spooled = int(seconds * 6_000)                        # more than a run can read
    body = os.urandom(USER_FORWARD_PAYLOAD_LENGTH)
    for start in range(0, spooled, 1000):
        records = [SpoolRecord(USER, None, body)] * min(1000, spooled - start)
        await provider.storage.run(provider.storage.spool.store_batch, records)
    session = await connect("127.0.0.1", port, link_key=client_link.private, additional_data=USER,
                            authenticator=lambda c: c.additional_data == NODE.public, handshake_timeout=10)
    try:
        consensus = await round_trips(session, lambda i: wire.GetConsensus(1), seconds)
        # Sequence i+1 deletes the head read with i (and 0 peeks): one committed delete each.
        retrieve = await round_trips(session, lambda i: wire.RetrieveMessage(i & 0xFFFFFFFF), seconds)
    finally:
        await session.close("done")
    return {"retrieve_round_trips_per_s": round(retrieve), "get_consensus_round_trips_per_s": round(consensus),
            "retrieve_vs_get_consensus": round(retrieve / consensus, 3)}


async def node_case(backend: dict, seconds: float, with_ingress: bool) -> dict:
    client_link = keys.LinkKey.generate()
    mix_link = keys.LinkKey.generate()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        provider, listeners, port = await started_node(Path(tmp), backend)
        try:
            reply = await provider.user_commands.handle(["ADD_USER", USER.decode(), client_link.public.hex()])
            assert reply.startswith("250"), reply
            figures = {}
            if with_ingress:
                client = await ingress(listeners, port, USER, client_link.private, seconds)
                mix = await ingress(listeners, port, MIX.public, mix_link.private, seconds)
                figures = {"client_ingress": client, "mix_ingress": mix,
                           "client_vs_mix_rate": round(client["packets_per_s"] / max(mix["packets_per_s"], 1), 3),
                           "client_vs_mix_cpu": round(client["cpu_us_per_packet"]
                                                      / max(mix["cpu_us_per_packet"], 1e-9), 3)}
            figures.update(await retrieval(provider, port, client_link, seconds))
            figures["provider_drops"] = dict(provider.drops)
            return figures
        finally:
            await listeners.stop()
            await provider.halt()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=64, help="delivery batch (spool writes)")
    parser.add_argument("--dsn", default=os.environ.get("KATZENPOST_TEST_POSTGRES_DSN", ""))
    parser.add_argument("--json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)          # the mix is tried as a client first: ERROR lines
    results = {"sqlite": asyncio.run(node_case({}, args.seconds, with_ingress=True))}
    results["sqlite"]["delivery"] = bench_provider_spool.delivery_case(args.seconds, args.batch)
    if args.dsn:
        with bench_provider_spool.throwaway_schema(args.dsn, spool_only=False) as scoped:
            backend = {"userdb": "sql", "spool": "sql", "dsn": scoped}
            results["postgresql"] = asyncio.run(node_case(backend, args.seconds, with_ingress=False))
            results["postgresql"]["delivery"] = bench_provider_spool.delivery_case(args.seconds, args.batch, backend)
    for name, figures in results.items():
        print(f"{name}: {json.dumps(figures)}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
