#!/usr/bin/env bash
# Builds the compiled cores (katzenpost/_core) with clang's AddressSanitizer and
# UndefinedBehaviorSanitizer, plus -fsanitize=fuzzer-no-link coverage hooks, into a separate
# tree, build/sanitized/src, so the in-place build everyone else uses is never touched. The tree
# is a copy of the package sources with the sanitized extensions beside them. It also links
# build/sanitized/asan_with_fuzzer.so: the ASan (with UBSan) runtime and libFuzzer in one
# library, to preload into Python, so that atheris's libFuzzer receives both the Python
# coverage and the C coverage of the cores (a plain ASan runtime preloaded alone would swallow
# the coverage callbacks). Then:
#
#   scripts/build-sanitized.sh
#   eval "$(scripts/build-sanitized.sh --env)"   # LD_PRELOAD, KATZENPOST_SANITIZED_TREE, options
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
runtime_dir() { dirname "$("$clang_bin" -print-file-name=libclang_rt.asan-x86_64.a)"; }
preload="$out/asan_with_fuzzer.so"

if [ "${1:-}" = "--env" ]; then
  # Only the environment, for eval: nothing is built.
  # python -m tests.fuzz puts this tree ahead of the checkout (the working directory, which
  # python -m puts first on sys.path); PYTHONPATH serves programs run from elsewhere.
  echo "export KATZENPOST_SANITIZED_TREE='$src'"
  echo "export PYTHONPATH='$src'"
  echo "export LD_PRELOAD='$preload'"
  # Python's own allocations are not leaks worth reporting; halt on the first UB report. A
  # 64 MiB quarantine of freed memory keeps a long run near 400 MiB (the default 256 MiB took
  # it past 1 GiB in two minutes, towards libFuzzer's 2 GiB limit).
  echo "export ASAN_OPTIONS='detect_leaks=0:allocator_may_return_null=1:abort_on_error=1:quarantine_size_mb=64'"
  echo "export UBSAN_OPTIONS='halt_on_error=1:abort_on_error=1:print_stacktrace=1'"
  exit 0
fi

if ! command -v "$clang_bin" >/dev/null || [ ! -e "$(runtime_dir)/libclang_rt.fuzzer_no_main-x86_64.a" ]; then
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
  LDFLAGS="-fsanitize=address,undefined" \
  KATZENPOST_EXTENSIONS="$modules" \
    "$root/.venv/bin/python" setup.py -q build_ext --inplace -t "$out/tmp" >"$out/build.log" 2>&1 \
    || { tail -n 40 "$out/build.log" >&2; exit 1; }
)

# The preload library: ASan's static runtime (UBSan's handlers are part of it) without its
# executable-only preinit object, ASan's operator new/delete, and libFuzzer without main.
rt=$(runtime_dir)
merge="$out/merge"
rm -rf "$merge" && mkdir -p "$merge"
(cd "$merge" && ar x "$rt/libclang_rt.asan-x86_64.a" && rm -f asan_preinit.cpp.o)
"${clang_bin}++" -shared -o "$preload" "$merge"/*.o \
  -Wl,--whole-archive "$rt/libclang_rt.asan_cxx-x86_64.a" "$rt/libclang_rt.fuzzer_no_main-x86_64.a" \
  -Wl,--no-whole-archive -ldl -lpthread -lrt -lm -lstdc++
rm -rf "$merge"
echo "sanitized cores in $src/katzenpost/_core ($modules); preload library $preload"
echo "run with:  eval \"\$(scripts/build-sanitized.sh --env)\""
