"""Spool throughput of the provider's storage backends: durable single stores (one commit each),
batched stores (one commit per batch, as the spool writer does), and Get round trips (peek and
advance), on SQLite and, with --dsn or KATZENPOST_TEST_POSTGRES_DSN, PostgreSQL (a throw-away
schema). Every store is committed (synchronous=FULL / PostgreSQL commit) before it counts.

    python3 bench/bench_provider_spool.py [--seconds 2] [--batch 64] [--dsn DSN] [--json out.json]
"""
from __future__ import annotations

import argparse
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


def measure(spool, seconds: float, batch: int) -> dict:
    counter = iter(range(10**12))
    single = rate(lambda: spool.store_message(USERS[next(counter) % len(USERS)], BODY), seconds)
    records = [SpoolRecord(USERS[i % len(USERS)], None, BODY) for i in range(batch)]
    batched = rate(lambda: spool.store_batch(records), seconds, batch)
    flips = iter(range(10**12))
    gets = rate(lambda: spool.get(USERS[0], next(flips) % 2 == 1), seconds)
    return {"store_single_per_s": round(single), "store_batched_per_s": round(batched),
            "batch": batch, "get_round_trips_per_s": round(gets)}


def sqlite_case(seconds: float, batch: int) -> dict:
    from katzenpost.provider.spool.sqlite import SQLiteSpool

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        spool = SQLiteSpool(os.path.join(tmp, "spool.db"))
        try:
            return measure(spool, seconds, batch)
        finally:
            spool.close()


def postgres_case(dsn: str, seconds: float, batch: int) -> dict:
    import psycopg

    from katzenpost.provider.postgres import SQLDatabase, load_schema
    from katzenpost.provider.spool.postgres import PostgresSpool

    schema = "kp_bench_" + secrets.token_hex(4)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    scoped = f"{dsn} options='-c search_path={schema}'"
    try:
        load_schema(scoped, spool_only=True)
        database = SQLDatabase(scoped)
        try:
            return measure(PostgresSpool(database), seconds, batch)
        finally:
            database.close()
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dsn", default=os.environ.get("KATZENPOST_TEST_POSTGRES_DSN", ""))
    parser.add_argument("--json")
    args = parser.parse_args()
    results = {"sqlite": sqlite_case(args.seconds, args.batch)}
    if args.dsn:
        results["postgresql"] = postgres_case(args.dsn, args.seconds, args.batch)
    for backend, figures in results.items():
        print(f"{backend:10s} " + "  ".join(f"{k}={v}" for k, v in figures.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
