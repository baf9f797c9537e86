#!/usr/bin/env bash
# Installs katzenpost on a fresh Debian machine (run as root): system packages through
# apt-get, then a virtual environment in .venv with the package (compiled Cython cores)
# and, with --test, the test dependencies and PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
want_tests=0
[ "${1:-}" = "--test" ] && want_tests=1

pkgs="build-essential libssl-dev libsodium23 python3-venv python3-dev socat"
[ $want_tests = 1 ] && pkgs="$pkgs postgresql valgrind"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || true
  apt-get install -y -qq $missing
fi

# setuptools warns on every editable install that a folder named like the package sits in the
# working directory: that folder is the package itself, so the warning is noise here.
export PYTHONWARNINGS="ignore:Editable installation"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
if [ $want_tests = 1 ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
# The X25519 lane backend's libraries (extra "ifma", docs/sphinx-backends.md) where the CPU has
# AVX-512 IFMA, read from pyproject.toml and installed without rebuilding the package.
if grep -qw avx512ifma /proc/cpuinfo 2>/dev/null; then
  .venv/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["ifma"]))' \
    | xargs -d '\n' .venv/bin/python -m pip install -q
fi
