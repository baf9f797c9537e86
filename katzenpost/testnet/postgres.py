"""`--postgres DSN`: each provider of the test network gets a schema of its own in that
database (`kp_testnet_<provider>_<random>`, the shipped schema loaded into it), reached through
the DSN with its `search_path` set; the schemas are dropped when the network stops."""
from __future__ import annotations

import re
import secrets

from katzenpost.provider.postgres import SQLDatabaseError, _psycopg, first_line, load_schema

_NAME = re.compile(r"kp_testnet_[a-z0-9_]+")


class PostgresSetupError(Exception):
    pass


def schema_dsn(dsn: str, schema: str) -> str:
    psycopg, _ = _psycopg()
    return psycopg.conninfo.make_conninfo(dsn, options=f"-c search_path={schema}")


def create_schemas(dsn: str, providers) -> dict[str, tuple[str, str]]:
    """{provider: (schema, DSN for it)}; PostgresSetupError if the server refuses."""
    try:
        psycopg, _ = _psycopg()
        created = {}
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            for provider in providers:
                schema = f"kp_testnet_{provider}_{secrets.token_hex(4)}"
                conn.execute(f"CREATE SCHEMA {schema}")
                created[provider] = (schema, schema_dsn(dsn, schema))
        for schema, schema_conninfo in created.values():
            load_schema(schema_conninfo)
        return created
    except SQLDatabaseError as err:
        raise PostgresSetupError(str(err)) from None
    except Exception as err:   # psycopg's errors: unreachable server, no privilege, bad DSN
        raise PostgresSetupError(f"PostgreSQL at the given DSN: {first_line(err)}") from None


def drop_schemas(dsn: str, schemas) -> None:
    """Drop the schemas this tool created (only names of its own form)."""
    psycopg, _ = _psycopg()
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        for schema in schemas:
            if _NAME.fullmatch(schema):
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
