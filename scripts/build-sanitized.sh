#!/usr/bin/env bash
# Builds the compiled cores (katzenpost/_core) with clang's AddressSanitizer and
# UndefinedBehaviorSanitizer (plus -fsanitize=fuzzer-no-link coverage hooks) into a separate
# tree, build/sanitized/src, so the in-place build everyone else uses is never touched. The
# tree is a copy of the package sources with sanitized extensions beside them; put it first on
# PYTHONPATH and preload the ASan runtime to run the fuzzers (or any test) against it:
#
#   scripts/build-sanitized.sh
#   eval "$(scripts/build-sanitized.sh --env)"     # PYTHONPATH, LD_PRELOAD, ASAN/UBSAN_OPTIONS
#   .venv/bin/python -m tests.fuzz sphinx_unwrap --seconds 300
#
# Needs clang and its runtimes (Debian: clang, libclang-rt-14-dev); installs them with apt-get
# when run as root and they are missing. docs/fuzzing.md has the details.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out="$root/build/sanitized"
src="$out/src"

clang_bin=${CLANG:-clang}
asan_runtime() { "$clang_bin" -print-file-name=libclang_rt.asan-x86_64.so; }

if [ "${1:-}" = "--env" ]; then
  # Only the environment, for eval: nothing is built.
  echo "export PYTHONPATH='$src'"
  echo "export LD_PRELOAD='$(asan_runtime)'"
  # Python's own allocations are not leaks worth reporting; halt on the first UB report.
  echo "export ASAN_OPTIONS='detect_leaks=0:allocator_may_return_null=1:abort_on_error=1'"
  echo "export UBSAN_OPTIONS='halt_on_error=1:abort_on_error=1:print_stacktrace=1'"
  echo "export KATZENPOST_SANITIZED=1"
  exit 0
fi

if ! command -v "$clang_bin" >/dev/null || [ ! -e "$(asan_runtime)" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || true
    apt-get install -y -qq clang libclang-rt-14-dev
  else
    echo "build-sanitized.sh: clang with its ASan runtime is required (apt-get install clang libclang-rt-14-dev)" >&2
    exit 1
  fi
fi

# A private copy of the sources: cythonize writes its .c files next to the .pyx, and the
# in-place .so files must not be replaced.
rm -rf "$src"
mkdir -p "$src"
tar -C "$root" --exclude='__pycache__' --exclude='*.so' --exclude='_core/*.c' -cf - \
    setup.py pyproject.toml katzenpost \
  | tar -C "$src" -xf -
# The hand-written C helpers were excluded with the generated .c files above: copy them back.
cp "$root"/katzenpost/_core/*_impl.c "$src/katzenpost/_core/"

flags="-fsanitize=address,undefined,fuzzer-no-link -fno-omit-frame-pointer -fno-sanitize-recover=undefined -g -O1"
modules=$(cd "$src/katzenpost/_core" && ls *.pyx | sed 's/\.pyx$//' | paste -sd, -)
(
  cd "$src"
  CC="$clang_bin" LDSHARED="$clang_bin -shared" CFLAGS="$flags" \
  LDFLAGS="-fsanitize=address,undefined -shared-libasan" \
  KATZENPOST_EXTENSIONS="$modules" \
    "$root/.venv/bin/python" setup.py -q build_ext --inplace -t "$out/tmp" >"$out/build.log" 2>&1 \
    || { tail -n 40 "$out/build.log" >&2; exit 1; }
)
echo "sanitized cores in $src/katzenpost/_core ($modules)"
echo "run with:  eval \"\$(scripts/build-sanitized.sh --env)\""
