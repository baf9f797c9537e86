"""Spool throughput of the provider's storage backends: durable single stores (one commit each),
batched stores (one commit per batch, as the spool writer does), and Get round trips (peek and
advance), on SQLite and, with --dsn or KATZENPOST_TEST_POSTGRES_DSN, PostgreSQL (a throw-away
schema); then the provider's whole delivery path (on_local → commit → SURB-ACKs) and
RetrieveMessage round trips through its client handling. Every store is committed
(synchronous=FULL / PostgreSQL commit) before it counts.

    python3 bench/bench_provider_spool.py [--seconds 2] [--batch 64] [--dsn DSN] [--json out.json]
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from katzenpost.provider.spool.base import SpoolRecord  # noqa: E402
from katzenpost.sphinx.geometry import USER_FORWARD_PAYLOAD_LENGTH  # noqa: E402

USERS = [f"user{i}".encode() for i in range(32)]
BODY = os.urandom(USER_FORWARD_PAYLOAD_LENGTH)


def rate(operation, seconds: float, per_call: int = 1) -> float:
    """Operations per second of `operation()` (each call doing `per_call` operations)."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        operation()
        done += per_call
    return done / (time.perf_counter() - start)


def spool_operations(spool, batch: int) -> dict:
    """name: (operation, spool operations per call): a durable single store (one commit), a
    batch of stores (one commit), a Get (alternately peek and advance: a committed delete)."""
    counter = iter(range(10**12))
    records = [SpoolRecord(USERS[i % len(USERS)], None, BODY) for i in range(batch)]
    flips = iter(range(10**12))
    return {"store_single": (lambda: spool.store_message(USERS[next(counter) % len(USERS)], BODY), 1),
            "store_batched": (lambda: spool.store_batch(records), batch),
            "get_round_trips": (lambda: spool.get(USERS[0], next(flips) % 2 == 1), 1)}


def measure(spool, seconds: float, batch: int) -> dict:
    operations = spool_operations(spool, batch)
    figures = {f"{name}_per_s": round(rate(operation, seconds, per_call))
               for name, (operation, per_call) in operations.items()}
    figures["batch"] = batch
    return figures


def sqlite_case(seconds: float, batch: int) -> dict:
    from katzenpost.provider.spool.sqlite import SQLiteSpool

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        spool = SQLiteSpool(os.path.join(tmp, "spool.db"))
        try:
            return measure(spool, seconds, batch)
        finally:
            spool.close()


@contextlib.contextmanager
def throwaway_schema(dsn: str, spool_only: bool):
    """A DSN scoped to a fresh PostgreSQL schema holding the katzenpost objects."""
    import psycopg

    from katzenpost.provider.postgres import load_schema

    schema = "kp_bench_" + secrets.token_hex(4)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    scoped = f"{dsn} options='-c search_path={schema}'"
    try:
        load_schema(scoped, spool_only=spool_only)
        yield scoped
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def postgres_case(dsn: str, seconds: float, batch: int) -> dict:
    from katzenpost.provider.postgres import SQLDatabase
    from katzenpost.provider.spool.postgres import PostgresSpool

    with throwaway_schema(dsn, spool_only=True) as scoped:
        database = SQLDatabase(scoped)
        try:
            return measure(PostgresSpool(database), seconds, batch)
        finally:
            database.close()


def delivery_case(seconds: float, batch: int, backend_kwargs: dict | None = None) -> dict:
    """The whole provider delivery path: on_local (I/O thread) → parse, check, commit, SURB-ACKs
    (storage thread). Reports packets/s and the I/O thread's cost per packet in on_local."""
    import asyncio

    from katzenpost.provider.provider import Provider
    from tests.provider_support import SurbEndpoint, forward_payload, local_batch, provider_config

    surb = SurbEndpoint().surb
    acks = []

    async def scenario(tmp):
        cfg = provider_config(Path(tmp), **(backend_kwargs or {}))
        provider = Provider(cfg, schedule=lambda p, d, h: acks.append(len(p)),
                            get_raw_consensus=lambda e: (1, b""), submit_packet=lambda p: None)
        await provider.start()
        try:
            for user in USERS:
                await provider.user_commands.handle(["ADD_USER", user.decode(), os.urandom(32).hex()])
            rows = [(1, USERS[i % len(USERS)], 100, None, forward_payload(BODY, surb)) for i in range(batch)]
            template = local_batch(rows)
            io_ns = delivered = 0
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                fresh = dataclasses.replace(template, dispatch_ns=time.monotonic_ns())
                t0 = time.perf_counter_ns()
                provider.on_local(fresh)
                io_ns += time.perf_counter_ns() - t0
                delivered += batch
                await asyncio.sleep(0)
                if provider.writer._pending_rows > 4 * batch:
                    await provider.writer.flush(60)
            await provider.writer.flush(60)
            elapsed = time.perf_counter() - start
            figures = {"delivered_per_s": round(provider.writer.stored / elapsed),
                       "on_local_io_us_per_packet": round(io_ns / delivered / 1000, 2),
                       "surb_acks": sum(acks), "stored": provider.writer.stored,
                       "dropped": dict(provider.drops)}
            figures["retrieve_round_trips_per_s"] = await retrieve_rate(provider, seconds)
            return figures
        finally:
            await provider.halt()

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        return asyncio.run(scenario(tmp))


async def retrieve_rate(provider, seconds: float) -> int:
    """RetrieveMessage → Message round trips through the provider's client handling (storage
    thread hop included, no network), advancing through user0's spool."""
    from katzenpost.wire import commands as wire
    from tests.provider_support import FakeSession

    session = FakeSession(USERS[0])
    seq, done, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        if not await provider.handle_client_command(session, wire.RetrieveMessage(seq)):
            raise RuntimeError("retrieval refused")
        seq, done = (seq + 1) & 0xFFFFFFFF, done + 1
        session.sent.clear()
    return round(done / (time.perf_counter() - start))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dsn", default=os.environ.get("KATZENPOST_TEST_POSTGRES_DSN", ""))
    parser.add_argument("--json")
    args = parser.parse_args()
    results = {"sqlite": sqlite_case(args.seconds, args.batch),
               "sqlite_delivery": delivery_case(args.seconds, args.batch)}
    if args.dsn:
        results["postgresql"] = postgres_case(args.dsn, args.seconds, args.batch)
        with throwaway_schema(args.dsn, spool_only=False) as scoped:
            results["postgresql_delivery"] = delivery_case(
                args.seconds, args.batch, {"userdb": "sql", "spool": "sql", "dsn": scoped})
    for backend, figures in results.items():
        print(f"{backend:10s} " + "  ".join(f"{k}={v}" for k, v in figures.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
