#!/usr/bin/env bash
# The main job: a whole Katzenpost network on this machine for a short, bounded time
# (`katzenpost-testnet`, docs/testnet.md): an authority, three mix layers and two providers
# on 127.0.0.1, client traffic between two users and to the providers' echo, keyserver and
# loop services with live progress, then the report (delivered, lost, latency p50/p99, per-node
# packets and drops) and a clean stop of every process. Options are passed on to
# katzenpost-testnet (e.g. `--duration 60 --rate 10`, `--keep --dir /tmp/kp`).
# Exit status: the testnet's (0 = nothing lost).
set -euo pipefail
cd "$(dirname "$0")/.."
# A test may point this at "python3 -m katzenpost.testnet.cli".
TESTNET=${KATZENPOST_TESTNET:-.venv/bin/katzenpost-testnet}
umask 077
exec $TESTNET --duration 30 --rate 5 "$@"
