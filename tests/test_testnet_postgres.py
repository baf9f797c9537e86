"""`katzenpost-testnet --postgres DSN`: both providers keep their users and spools in
PostgreSQL (a schema each, the shipped schema loaded), the traffic loses nothing, and the
schemas are gone after the run. The server comes from KATZENPOST_TEST_POSTGRES_DSN
(scripts/test.sh starts one)."""
import re

import psycopg

from provider_support import postgres_dsn
from testnet_support import report, run_testnet, stop_leftovers


def test_providers_on_postgresql(tmp_path):
    dsn = postgres_dsn()
    try:
        proc = run_testnet(tmp_path, "--duration", "8", "--rate", "3", "--postgres", dsn)
    finally:
        stop_leftovers(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    result = report(tmp_path)
    assert result["settings"]["postgres"] is True
    total = result["total"]
    assert total["sent"] == 24 and total["delivered"] == 24 and total["lost"] == 0
    assert result["messages"]["acknowledged"] > 0 and result["messages"]["acknowledged_not_retrieved"] == 0
    schemas = []
    for name in ("provider1", "provider2"):
        config = (tmp_path / f"{name}.toml").read_text()
        assert 'Backend = "pgx"' in config
        schemas.append(re.search(r"search_path=(kp_testnet_\w+)", config).group(1))
    assert len(set(schemas)) == 2                      # a schema each
    with psycopg.connect(dsn, autocommit=True) as conn:
        left = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (schemas,)).fetchall()
    assert left == []


def test_an_unreachable_database_is_a_clear_error(tmp_path):
    proc = run_testnet(tmp_path, "--duration", "1", "--postgres", "host=127.0.0.1 port=1 dbname=none connect_timeout=2")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "katzenpost-testnet: PostgreSQL at the given DSN:" in proc.stderr
