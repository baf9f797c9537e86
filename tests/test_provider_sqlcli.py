"""`katzenpost-provider-sql`: init loads the shipped schema (full or spool-only), check reports
it, and a second init or a database without our schema fails with a clear message."""
import subprocess
import sys

from tests.provider_support import PostgresSchema


def sqlcli(*args):
    return subprocess.run([sys.executable, "-m", "katzenpost.provider.sqlcli", *args],
                          capture_output=True, text=True, timeout=60)


def test_init_check_and_refusals():
    schema = PostgresSchema(load=False)
    try:
        missing = sqlcli("check", schema.dsn)
        assert missing.returncode == 1 and "no katzenpost schema" in missing.stderr
        first = sqlcli("init", schema.dsn)
        assert first.returncode == 0, first.stderr
        assert "user database and spool: ok" in first.stdout
        assert sqlcli("check", schema.dsn).returncode == 0
        again = sqlcli("init", schema.dsn)
        assert again.returncode == 1 and "already exists" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1
        tables = schema.execute("SELECT schema_version, spool_only FROM metadata")
        assert tables == [(0, False)]
    finally:
        schema.drop()


def test_init_spool_only():
    schema = PostgresSchema(load=False)
    try:
        result = sqlcli("init", "--spool-only", schema.dsn)
        assert result.returncode == 0 and "spool-only: ok" in result.stdout
        columns = schema.execute("SELECT column_name FROM information_schema.columns "
                                 "WHERE table_name = 'users' AND table_schema = current_schema()")
        assert sorted(c for (c,) in columns) == ["user_id", "user_name"]
    finally:
        schema.drop()


def test_schema_command_prints_the_shipped_sql():
    result = sqlcli("schema")
    assert result.returncode == 0 and "CREATE FUNCTION spool_get" in result.stdout


def test_unreachable_server_is_a_clean_error():
    result = sqlcli("check", "host=127.0.0.1 port=9 connect_timeout=2 dbname=x")
    assert result.returncode == 1 and result.stderr.startswith("katzenpost-provider-sql:")
    assert "Traceback" not in result.stderr
