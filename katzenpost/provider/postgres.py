"""The PostgreSQL database shared by the SQL user database and spool: a psycopg 3 connection
pool sized as the reference (max(5, 2 × NumProviderWorkers)), the schema check at start, and
loading the shipped schema (`katzenpost-provider-sql init`)."""
from __future__ import annotations

import logging
from importlib import resources

SCHEMA_VERSION = 0
SCHEMA_FILE = "create_database-postgresql.sql"
CONNECT_TIMEOUT = 10.0  # seconds to get a connection from the pool before a request fails

log = logging.getLogger("katzenpost.provider.sqldb")


class SQLDatabaseError(Exception):
    """The database cannot be used (unreachable, not created by our schema, wrong version)."""


def _psycopg():
    try:
        import psycopg
        import psycopg_pool
    except ImportError as err:
        raise SQLDatabaseError("sqldb: the PostgreSQL backend needs psycopg 3 and psycopg_pool "
                               "(pip install 'katzenpost[postgresql]')") from err
    return psycopg, psycopg_pool


def first_line(err: BaseException) -> str:
    """psycopg errors carry the query and hints on further lines; logs want one line."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def pool_size(num_provider_workers: int) -> int:
    return max(5, 2 * num_provider_workers)


def schema_sql() -> str:
    return resources.files("katzenpost.provider").joinpath("sql", SCHEMA_FILE).read_text("utf-8")


def load_schema(dsn: str, *, spool_only: bool = False) -> None:
    """Create the tables and functions in the (empty) database at `dsn`."""
    psycopg, _ = _psycopg()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT set_config('katzenpost.spool_only', %s, false)",
                     ("true" if spool_only else "false",))
        conn.execute(schema_sql())


class SQLDatabase:
    """A pool of connections to a database created by our (or the reference's) schema."""

    def __init__(self, dsn: str, *, num_provider_workers: int = 1):
        psycopg, psycopg_pool = _psycopg()
        try:  # one direct attempt first: its error says why (the pool would only time out)
            psycopg.connect(dsn, connect_timeout=int(CONNECT_TIMEOUT)).close()
        except psycopg.Error as err:
            raise SQLDatabaseError(f"sqldb: cannot connect to the PostgreSQL database: "
                                   f"{first_line(err)}") from None
        self.errors = psycopg.errors
        self.OperationalError = psycopg.OperationalError
        self.Error = psycopg.Error
        self.pool = psycopg_pool.ConnectionPool(
            dsn, min_size=1, max_size=pool_size(num_provider_workers), open=False,
            timeout=CONNECT_TIMEOUT, check=psycopg_pool.ConnectionPool.check_connection,
            name="katzenpost-sqldb")
        try:
            self.pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except psycopg_pool.PoolTimeout:
            self.pool.close()
            raise SQLDatabaseError("sqldb: cannot connect to the PostgreSQL database: timed out") from None
        try:
            self.spool_only = self._check_schema()
        except BaseException:
            self.pool.close()
            raise

    def _check_schema(self) -> bool:
        try:
            with self.pool.connection() as conn:
                row = conn.execute("SELECT * FROM metadata_get() AS m(schema_version smallint, "
                                   "spool_only boolean)").fetchone()
        except self.Error as err:
            raise SQLDatabaseError(f"sqldb: the database has no katzenpost schema (load it with "
                                   f"katzenpost-provider-sql init): {first_line(err)}") from None
        version, spool_only = row
        if version != SCHEMA_VERSION:
            raise SQLDatabaseError(f"sqldb: schema version {version} is not supported "
                                   f"(expected {SCHEMA_VERSION})")
        return bool(spool_only)

    def close(self) -> None:
        self.pool.close()
