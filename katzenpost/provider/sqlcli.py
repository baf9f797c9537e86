"""`katzenpost-provider-sql`: load the shipped PostgreSQL schema into an empty database, or
check a database's schema, for the provider's SQL user database and spool."""
from __future__ import annotations

import argparse
import logging
import sys

from katzenpost.provider.postgres import SQLDatabase, SQLDatabaseError, first_line, load_schema, schema_sql


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="katzenpost-provider-sql",
                                     description="PostgreSQL set-up for the katzenpost provider")
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="create the tables and functions in an empty database")
    init.add_argument("--spool-only", action="store_true",
                      help="a database for the spool only (no user keys)")
    init.add_argument("dsn", help="libpq connection string or postgresql:// URI")
    check = commands.add_parser("check", help="check that a database has the expected schema")
    check.add_argument("dsn")
    commands.add_parser("schema", help="print the schema SQL")
    args = parser.parse_args(argv)
    logging.getLogger("psycopg").setLevel(logging.CRITICAL)  # one error line below is enough
    if args.command == "schema":
        sys.stdout.write(schema_sql())
        return 0
    try:
        if args.command == "init":
            load_schema(args.dsn, spool_only=args.spool_only)
        db = SQLDatabase(args.dsn)
        spool_only = db.spool_only
        db.close()
    except SQLDatabaseError as err:
        print(f"katzenpost-provider-sql: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # psycopg errors: connection refused, objects already present, ...
        print(f"katzenpost-provider-sql: {type(err).__name__}: {first_line(err)}", file=sys.stderr)
        return 1
    print(f"schema version 0, {'spool-only' if spool_only else 'user database and spool'}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
