"""pyperf benchmarks of Sphinx unwrap: compiled against its two X25519 operations, absolute
time, the batch API with one and two threads, the pure-Python reference, and X25519 from
libsodium against OpenSSL's EVP path. Ratios are printed from medians of the same run.

    python3 bench/bench_sphinx.py               (3 processes x 3 values: a short run)
    python3 bench/bench_sphinx.py -p 10 -n 5    (steadier figures on a quiet machine)
"""
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyperf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import katzenpost.sphinx as sphinx  # noqa: E402
from katzenpost._core import sphinx as core  # noqa: E402
from katzenpost.reference import sphinx as ref  # noqa: E402
from katzenpost.sphinx import NodeDelay, PathHop, Recipient, batch  # noqa: E402
from katzenpost.sphinx import geometry as g  # noqa: E402

BATCH = 64
NODE_KEYS = [bytes([7 * i + 1]) * 32 for i in range(3)]
PATH = [PathHop(bytes([i]) * 32, sphinx.public_key(k), [NodeDelay(100)]) for i, k in enumerate(NODE_KEYS)]
PATH[-1] = PathHop(PATH[-1].id, PATH[-1].public_key, [Recipient(bytes(64))])
PACKET = sphinx.new_packet(PATH, bytes(g.FORWARD_PAYLOAD_LENGTH), rng=lambda n: b"\x05" * n,
                           filler=lambda n: bytes(n))
assert len(PACKET) == g.PACKET_LENGTH
KEY = NODE_KEYS[0]
ALPHA = PACKET[2:34]
BLINDING = core.kdf(core.x25519(KEY, ALPHA))[112:144]


def two_x25519(loops, backend):
    core.set_x25519_backend(backend)
    x25519 = core.x25519
    t0 = time.perf_counter()
    for _ in range(loops):
        x25519(KEY, ALPHA)
        x25519(BLINDING, ALPHA)
    return time.perf_counter() - t0


def unwrap_core(loops, backend):
    """One forward-hop unwrap of a 2,524-byte packet (buffer refreshed each time: 2.5 KB copy)."""
    core.set_x25519_backend(backend)
    buf = bytearray(PACKET)
    unwrap, keys = core.unwrap, KEY
    t0 = time.perf_counter()
    for _ in range(loops):
        buf[:] = PACKET
        unwrap(keys, buf)
    return time.perf_counter() - t0


def unwrap_api(loops):
    unwrap = sphinx.unwrap
    t0 = time.perf_counter()
    for _ in range(loops):
        unwrap(KEY, PACKET)
    return time.perf_counter() - t0


def unwrap_reference(loops):
    t0 = time.perf_counter()
    for _ in range(loops):
        ref.unwrap(KEY, PACKET)
    return time.perf_counter() - t0


def _batch_worker(loops, barrier):
    original = np.frombuffer(PACKET * BATCH, dtype=np.uint8).reshape(BATCH, -1)
    packets = original.copy()
    keys = batch.keys_array([KEY])
    result = batch.UnwrapBatch(BATCH)
    barrier.wait()
    for _ in range(loops):
        np.copyto(packets, original)
        if batch.unwrap_batch(packets, BATCH, keys, result) != BATCH:
            raise RuntimeError("bench: batch unwrap failed")


def unwrap_batch_threads(loops, threads):
    """Per-packet time of `threads` workers each unwrapping `loops` batches of 64."""
    barrier = threading.Barrier(threads + 1)
    workers = [threading.Thread(target=_batch_worker, args=(loops, barrier)) for _ in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    return (time.perf_counter() - t0) / (threads * BATCH)


def main():
    # Short by default: the development machines are small and shared.
    runner = pyperf.Runner(processes=3, values=3, warmups=1, min_time=0.05)
    runner.metadata["x25519_default_backend"] = core.x25519_backend()
    backends = core.available_x25519_backends()
    results = {}
    for backend in backends:
        results[f"x25519_x2_{backend}"] = runner.bench_time_func(f"two_x25519_{backend}", two_x25519, backend)
        results[f"unwrap_{backend}"] = runner.bench_time_func(f"unwrap_2524_core_{backend}", unwrap_core, backend)
    results["unwrap_api"] = runner.bench_time_func("unwrap_2524_public_api", unwrap_api)
    results["batch_1"] = runner.bench_time_func("unwrap_batch_per_packet_1_thread", unwrap_batch_threads, 1)
    results["batch_2"] = runner.bench_time_func("unwrap_batch_per_packet_2_threads", unwrap_batch_threads, 2)
    results["reference"] = runner.bench_time_func("unwrap_2524_pure_python_reference", unwrap_reference)
    if any(r is None for r in results.values()):
        return  # a worker process: the parent prints the summary
    med = {k: r.median() for k, r in results.items()}
    best = backends[0]
    print("\n--- Sphinx unwrap summary (medians of this run) ---")
    for backend in backends:
        print(f"{backend:9s}: unwrap {med['unwrap_' + backend] * 1e6:6.1f} us, two X25519 "
              f"{med['x25519_x2_' + backend] * 1e6:6.1f} us, ratio "
              f"{med['unwrap_' + backend] / med['x25519_x2_' + backend]:.3f} (target <= 1.15)")
    if len(backends) == 2:
        print(f"X25519 libsodium / openssl-EVP time: {med['x25519_x2_libsodium'] / med['x25519_x2_openssl']:.3f}")
    print(f"default ({best}) unwrap: {med['unwrap_' + best] * 1e6:.1f} us (target <= 66 us; "
          f"Go anchor 91.5 us -> {91.5e-6 / med['unwrap_' + best]:.2f}x its throughput)")
    print(f"public API unwrap: {med['unwrap_api'] * 1e6:.1f} us "
          f"({med['unwrap_api'] / med['unwrap_' + best]:.3f}x the core call)")
    print(f"batch: 1 thread {med['batch_1'] * 1e6:.1f} us/pkt, 2 threads {med['batch_2'] * 1e6:.1f} us/pkt, "
          f"throughput ratio {med['batch_1'] / med['batch_2']:.2f}x (target >= 1.8)")
    print(f"pure-Python reference: {med['reference'] * 1e6:.0f} us = "
          f"{med['reference'] / med['unwrap_' + best]:.1f}x the compiled unwrap")


if __name__ == "__main__":
    main()
