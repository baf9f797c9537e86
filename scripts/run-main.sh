#!/usr/bin/env bash
# The main job until the local test network exists: make a temporary DataDir, write a sample
# mix node configuration into it, and run key generation (`katzenpost -g`), which logs the
# start banner with the node's identity and link public keys. The DataDir is kept so the key
# files can be inspected; its path is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
KATZENPOST=${KATZENPOST:-.venv/bin/katzenpost}  # a test may point this at "python3 -m katzenpost"
umask 077

data_dir=$(mktemp -d -t katzenpost-mix.XXXXXX)   # under $TMPDIR or /tmp; created 0700, as required
chmod 0700 "$data_dir"
config="$data_dir/katzenpost.toml"
cat > "$config" <<TOML
# Sample mix node configuration written by scripts/run-main.sh (see README.md).
[Server]
Identifier = "mix1.example.org"
Addresses = ["127.0.0.1:30001"]
DataDir = "$data_dir"
IsProvider = false

[PKI]
  [PKI.Nonvoting]
  Address = "127.0.0.1:30000"
  PublicKey = "kAiVchOBwHVtKJVFJLsdCQ9UyN2SlfhLHYqT8ePBetg="

[Logging]
Level = "NOTICE"

[Management]
Enable = false
TOML

echo "== configuration check"
$KATZENPOST --check -f "$config"
echo "== key generation (katzenpost -g -f $config)"
$KATZENPOST -g -f "$config"
echo "== DataDir $data_dir"
ls -l "$data_dir"
