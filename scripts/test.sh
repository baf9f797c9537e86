#!/usr/bin/env bash
# Installs katzenpost with its test dependencies (scripts/install.sh --test), starts a
# throw-away PostgreSQL server on 127.0.0.1 for the SQL backend tests, and runs the whole
# test suite. Exits non-zero on any failure. This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh --test

pg_pid_dir=""
# As postgres, from a directory postgres may enter (the checkout may be private to root, and
# the PostgreSQL tools complain about a working directory they cannot change to).
as_postgres() { (cd / && runuser -u postgres -- "$@"); }
cleanup() {
  if [ -n "$pg_pid_dir" ] && [ -d "$pg_pid_dir" ]; then
    as_postgres "$PG_BIN/pg_ctl" -D "$pg_pid_dir/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$pg_pid_dir"
  fi
}
trap cleanup EXIT

PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] && id postgres >/dev/null 2>&1; then
  pg_pid_dir=$(mktemp -d /tmp/katzenpost-pg.XXXXXX)
  chown postgres "$pg_pid_dir"
  port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  as_postgres "$PG_BIN/initdb" -D "$pg_pid_dir/data" -A trust -U postgres >/dev/null
  as_postgres "$PG_BIN/pg_ctl" -D "$pg_pid_dir/data" -l "$pg_pid_dir/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $pg_pid_dir" start >/dev/null
  as_postgres "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres katzenpost_test
  export KATZENPOST_TEST_POSTGRES_DSN="host=127.0.0.1 port=$port user=postgres dbname=katzenpost_test"
else
  echo "test.sh: PostgreSQL server binaries not found; SQL backend tests will fail" >&2
fi

.venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
