"""pyperf benchmark of the replay filter: check_and_add per tag in batches of 256 on a memory-mapped
filter sized for 12 M tags at 1e-6, against a Python set doing the same test-and-set, plus the
filter's memory against the theoretical Bloom size and its measured false-positive rate.

    .venv/bin/python bench/bench_replay.py --fast [--fp-probes 10000000]

Every timed probe uses a fresh random tag, as a node sees (each packet's tag is new): probing
the same tags again would find their cache lines warm and flatter the filter. Tags are made
outside the timed region. Single-thread values are the thread's CPU time per tag (the shared
2-core machine preempts us often; wall time mostly measured the neighbours). The two-thread
value is wall time per tag.
"""

import atexit
import hashlib
import math
import os
import shutil
import sys
import tempfile
import threading
import time

import numpy as np
import pyperf

# Run from a source checkout without installing (pyperf workers do not inherit PYTHONPATH).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from katzenpost._core.replay import BloomKernel  # noqa: E402
from katzenpost.server.replay import (  # noqa: E402
    HEADER_LENGTH, ReplayFilter, bloom_false_positive_rate, bloom_parameters)

EXPECTED = 12_000_000
FP_TARGET = 1e-6
BATCH = 256
BATCHES = 64  # batches of fresh tags made at a time, between timed stretches
SET_PREFILL = 2_000_000


def random_tags(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 32), dtype=np.uint8)


def prefill_bits(bits, m_bits, k_probes, entries, seed):
    """Set bits at the density `entries` insertions would leave (cheaper than inserting them)."""
    density = 1.0 - math.exp(-k_probes * entries / m_bits)
    rng = np.random.default_rng(seed)
    chunk = 1 << 22
    for start in range(0, len(bits), chunk):
        words = min(chunk, len(bits) - start)
        mask = np.zeros(words, dtype=np.uint64)
        for bit in range(64):
            mask |= (rng.random(words) < density).astype(np.uint64) << np.uint64(bit)
        bits[start:start + words] |= mask


def open_half_full_filter(directory, expected=EXPECTED, fp_target=FP_TARGET):
    """A file-backed filter as the node maps it, with the bit density of half its expected tags."""
    filt = ReplayFilter.create(os.path.join(directory, f"replay-{os.getpid()}.bloom"), expected, fp_target)
    bits = np.frombuffer(filt._mapping, dtype=np.uint64, count=filt.m_bits // 64, offset=HEADER_LENGTH)
    prefill_bits(bits, filt.m_bits, filt.k_probes, expected // 2, 1)
    del bits
    return filt


def fresh_tag_batches(loops, seed=None):
    """(count, tags) chunks covering `loops` batches of BATCH tags, none of them seen before."""
    rng = np.random.default_rng(seed)
    for start in range(0, loops, BATCHES):
        count = min(BATCHES, loops - start)
        yield count, rng.integers(0, 256, (count * BATCH, 32), dtype=np.uint8)


def time_filter(loops, filt, seed=None):
    """Thread CPU time of `loops` check_and_add calls, each on BATCH fresh tags."""
    out = np.zeros(BATCH, np.uint8)
    elapsed = 0.0
    for count, tags in fresh_tag_batches(loops, seed):
        start = time.thread_time()
        for i in range(count):
            filt.check_and_add(tags[i * BATCH:(i + 1) * BATCH], None, out)
        elapsed += time.thread_time() - start
    return elapsed


def add_all(filt, batches):
    out = np.zeros(BATCH, np.uint8)
    for tags in batches:
        filt.check_and_add(tags, None, out)


_cache = {}   # per process: building a half-full 12 M filter or a big set takes seconds


def cached_half_full_filter(expected, fp_target):
    """One half-full filter per size and process, reused by every value pyperf takes in it (the
    tags each value adds are a few per cent of the prefill), removed when the process exits."""
    key = ("filter", expected, fp_target)
    if key not in _cache:
        directory = tempfile.mkdtemp(dir=os.environ.get("BENCH_DIR"))
        filt = open_half_full_filter(directory, expected, fp_target)
        atexit.register(shutil.rmtree, directory, True)
        atexit.register(filt.close)
        _cache[key] = filt
    return _cache[key]


def bench_mmap_filter(loops, expected=EXPECTED, fp_target=FP_TARGET):
    return time_filter(loops, cached_half_full_filter(expected, fp_target))


def bench_small_kernel(loops):
    """Hash-bound cost: the same kernel on an L1-resident filter (k as for 1e-6)."""
    m_bits, k_probes = 64 * 256, bloom_parameters(EXPECTED, FP_TARGET)[1]
    kernel = BloomKernel(np.zeros(m_bits // 64, np.uint64), m_bits, k_probes, os.urandom(16),
                         np.zeros(1, np.uint64))
    return time_filter(loops, kernel)


def bench_two_threads(loops):
    """Two crypto-worker threads sharing one filter (per-batch lock): wall time per tag of both."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as directory:
        filt = open_half_full_filter(directory)
        try:
            half = max(1, loops // 2)
            # Fresh tags made before the clock starts (wall time would count their making).
            work = [[tags[i * BATCH:(i + 1) * BATCH] for count, tags in fresh_tag_batches(half, seed)
                     for i in range(count)] for seed in (5, 6)]
            threads = [threading.Thread(target=add_all, args=(filt, batches)) for batches in work]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return time.perf_counter() - start
        finally:
            filt.close()


def bench_set(loops, prefill=SET_PREFILL):
    """Baseline: a Python set of bytes tags doing the same test-and-set, pre-grown to `prefill` tags (a 6 M set would need ~0.7 GB per worker); one set per process and size."""
    seen = _cache.setdefault(("set", prefill), set())
    while len(seen) < prefill:
        seen.add(os.urandom(32))
    elapsed = 0.0
    for count, array in fresh_tag_batches(loops):
        tags = [bytes(t) for t in array]
        start = time.thread_time()
        for tag in tags:
            if tag not in seen:
                seen.add(tag)
        elapsed += time.thread_time() - start
    return elapsed


def bench_blake2b_keyed(loops):
    """Keyed BLAKE2b (hashlib, 16-byte digest) of each tag: the alternative index hash."""
    key = os.urandom(16)
    elapsed = 0.0
    for count, array in fresh_tag_batches(loops, 3):
        tags = [bytes(t) for t in array]
        start = time.thread_time()
        for tag in tags:
            hashlib.blake2b(tag, key=key, digest_size=16).digest()
        elapsed += time.thread_time() - start
    return elapsed


def report_memory_and_false_positives(fp_probes):
    m_bits, k_probes = bloom_parameters(EXPECTED, FP_TARGET)
    ideal = -EXPECTED * math.log(FP_TARGET) / math.log(2) ** 2
    print(f"memory: {m_bits / 8 / 2**20:.2f} MiB for {EXPECTED:,} tags at {FP_TARGET:g} "
          f"(theoretical {ideal / 8 / 2**20:.2f} MiB, ratio {m_bits / ideal:.3f}, target <= 1.05), "
          f"k={k_probes}, predicted FP {bloom_false_positive_rate(m_bits, k_probes, EXPECTED):.3g}")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as directory:
        with ReplayFilter.create(os.path.join(directory, "fp.bloom"), EXPECTED, FP_TARGET) as filt:
            chunk = 1 << 20
            out = np.zeros(chunk, np.uint8)
            start = time.perf_counter()
            for i in range(0, EXPECTED, chunk):
                n = min(chunk, EXPECTED - i)
                filt.check_and_add(random_tags(n, 1000 + i // chunk), None, out[:n])
            fill_s = time.perf_counter() - start
            assert filt.added >= EXPECTED - 100
            hits = 0
            for i in range(0, fp_probes, chunk):
                n = min(chunk, fp_probes - i)
                hits += filt.contains(random_tags(n, 10**6 + i // chunk), out[:n])
    rate = hits / fp_probes
    print(f"false positives: {hits} of {fp_probes:,} non-members after {EXPECTED:,} tags: rate {rate:.3g} "
          f"= {rate / FP_TARGET:.2f}x target (target <= 1.5x); fill took {fill_s:.1f} s "
          f"({fill_s / EXPECTED * 1e9:.0f} ns/tag incl. tag generation)")


def main():
    runner = pyperf.Runner(values=3, processes=3)
    runner.argparser.add_argument("--fp-probes", type=int, default=10_000_000)
    runner.argparser.add_argument("--skip-fp", action="store_true")
    args = runner.parse_args()
    results = {}
    for name, func, *extra in [("replay_mmap_12M_1e-6", bench_mmap_filter),
                       ("replay_mmap_12M_1e-3", bench_mmap_filter, EXPECTED, 1e-3),
                       ("replay_two_threads", bench_two_threads),
                       ("replay_kernel_l1_hash_bound", bench_small_kernel),
                       ("set_baseline", bench_set),
                       ("blake2b_keyed_hashlib", bench_blake2b_keyed)]:
        results[name] = runner.bench_time_func(name, func, *extra, inner_loops=BATCH)
    if args.worker or any(b is None for b in results.values()):
        return
    base = results["set_baseline"].mean()
    for name, bench in results.items():
        print(f"{name}: {bench.mean() * 1e9:.1f} ns/tag, {base / bench.mean():.2f}x the set baseline")
    print(f"target: <= 150 ns/tag; replay_mmap_12M_1e-6 = {results['replay_mmap_12M_1e-6'].mean() * 1e9:.1f} ns/tag")
    if not args.skip_fp:
        report_memory_and_false_positives(args.fp_probes)


if __name__ == "__main__":
    main()
