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


class SurbEndpoint:
    """The far end of a one-hop SURB: makes SURBs and opens the reply packets built from them."""

    def __init__(self):
        from katzenpost import sphinx
        from katzenpost.sphinx.commands import Recipient, SURBReply
        from katzenpost.sphinx.types import PathHop

        self.private = secrets.token_bytes(32)
        self.node_id = secrets.token_bytes(32)
        self.surb_id = secrets.token_bytes(16)
        hop = PathHop(self.node_id, sphinx.public_key(self.private),
                      [Recipient(b"client".ljust(64, b"\x00")), SURBReply(self.surb_id)])
        self.surb, self._keys = sphinx.new_surb([hop])

    def open(self, packet) -> bytes:
        """The 2048-byte plaintext payload of a reply packet made from our SURB."""
        from katzenpost import sphinx

        unwrapped = sphinx.unwrap(self.private, bytes(packet))
        return sphinx.decrypt_surb_payload(unwrapped.payload, self._keys)


def forward_payload(body: bytes, surb: bytes | None) -> bytes:
    """A 2048-byte BlockSphinxPlaintext as a client builds it."""
    from katzenpost.sphinx.geometry import SURB_LENGTH, USER_FORWARD_PAYLOAD_LENGTH

    head = bytes([1 if surb else 0, 0]) + (surb or bytes(SURB_LENGTH))
    return head + body.ljust(USER_FORWARD_PAYLOAD_LENGTH, b"\x00")


class ScheduleRecorder:
    """A fake of the pipeline's schedule(packets, delay_ms, node_ids) callable."""

    def __init__(self):
        self.sent: list[tuple[bytes, int, bytes]] = []

    def __call__(self, packets, delay_ms, node_ids):
        for row in range(len(packets)):
            self.sent.append((bytes(packets[row]), int(delay_ms[row]), bytes(node_ids[row])))


def provider_config(tmp_path, *, userdb: str = "bolt", spool: str = "bolt", dsn: str = "",
                    extern_url: str = "", extra_provider: str = "", debug: str = "", kaetzchen: str = ""):
    """A provider Config with its DataDir under tmp_path (0700) and the chosen backends."""
    from katzenpost import config

    data_dir = tmp_path / "provider"
    data_dir.mkdir(mode=0o700, exist_ok=True)
    sqldb = f'[Provider.SQLDB]\nBackend = "pgx"\nDataSourceName = "{dsn}"\n' if dsn else ""
    extern = f'[Provider.UserDB.Extern]\nProviderURL = "{extern_url}"\n' if extern_url else ""
    text = f"""
[Server]
Identifier = "provider.example"
Addresses = ["127.0.0.1:30001"]
DataDir = "{data_dir}"
IsProvider = true
[PKI.Nonvoting]
Address = "127.0.0.1:30000"
PublicKey = "ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ="
[Debug]
{debug}
[Provider]
{extra_provider}
[Provider.UserDB]
Backend = "{userdb}"
{extern}
[Provider.SpoolDB]
Backend = "{spool}"
{sqldb}
{kaetzchen}
"""
    return config.load_text(text)


class FakeSession:
    """A client session as the provider sees it: credentials and a command recorder."""

    def __init__(self, user: bytes, link: bytes = b"\x00" * 32):
        from katzenpost.wire import PeerCredentials

        self.peer_credentials = PeerCredentials(user, link)
        self.sent = []

    async def send_command(self, cmd):
        self.sent.append(cmd)


class PrivatePostgres:
    """A PostgreSQL server of the test's own (to stop and restart it), on a free 127.0.0.1 port.
    Needs the server binaries (/usr/lib/postgresql/*/bin), as scripts/test.sh does."""

    def __init__(self, tmp_path):
        import glob
        import shutil
        import socket
        import subprocess

        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
        if not bins:
            pytest.fail("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin)")
        self.bin = bins[-1]
        import pathlib
        import tempfile

        # Not under tmp_path: pytest's base directory is 0700 and the server runs as postgres.
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="katzenpost-pg-"))
        self._as_user = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._run = lambda *args: subprocess.run([*self._as_user, *args], check=True,
                                                 capture_output=True, timeout=60)
        self._run(f"{self.bin}/initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres")
        self.start()
        self.dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def start(self):
        self._run(f"{self.bin}/pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w",
                  "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir}", "start")

    def stop(self):
        self._run(f"{self.bin}/pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def close(self):
        import shutil

        try:
            self.stop()
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
