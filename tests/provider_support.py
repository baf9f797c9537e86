"""Helpers for the provider tests: a throw-away PostgreSQL schema per test (the server comes from
KATZENPOST_TEST_POSTGRES_DSN, set by scripts/test.sh), X25519-sized keys."""
from __future__ import annotations

import os
import secrets

import pytest

DSN_VARIABLE = "KATZENPOST_TEST_POSTGRES_DSN"


def postgres_dsn() -> str:
    dsn = os.environ.get(DSN_VARIABLE)
    if not dsn:
        # Not a skip: CI must run the SQL backends (scripts/test.sh starts a server).
        pytest.fail(f"{DSN_VARIABLE} is not set: run scripts/test.sh, or start PostgreSQL and set it")
    return dsn


class PostgresSchema:
    """A fresh PostgreSQL schema with the katzenpost objects; dropped by `drop()`."""

    def __init__(self, *, spool_only: bool = False, load: bool = True):
        import psycopg

        from katzenpost.provider.postgres import load_schema

        self.base_dsn = postgres_dsn()
        self.name = "kp_test_" + secrets.token_hex(6)
        with psycopg.connect(self.base_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {self.name}")
        self.dsn = f"{self.base_dsn} options='-c search_path={self.name}'"
        if load:
            load_schema(self.dsn, spool_only=spool_only)

    def execute(self, query: str, args=()):
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cursor = conn.execute(query, args)
            return cursor.fetchall() if cursor.description else None

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.base_dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")


@pytest.fixture
def pg_schema():
    schema = PostgresSchema()
    try:
        yield schema
    finally:
        schema.drop()


def key() -> bytes:
    return secrets.token_bytes(32)
