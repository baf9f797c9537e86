"""pyperf benchmark of AEZ v5 on the Sphinx SPRP size (2,064 bytes, 48-byte key, tau 0):
the AES-NI and portable compiled backends against the pure-Python reference, as ratios
measured in one run. Run: python3 bench/bench_aez.py --fast [-o out.json]."""
import os
import sys
import time
from pathlib import Path

import pyperf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from katzenpost._core import aez as core  # noqa: E402
from katzenpost.reference import aez as ref  # noqa: E402

SPRP_INPUT_LENGTH = 2064          # 16-byte zero tag + 2,048-byte payload (the Sphinx payload)
AESNI_TARGET_S = 3e-6             # the AES-NI target: <= 3 us per call

KEY = bytes(range(48))
NONCE = bytes(range(16))
PAYLOAD = os.urandom(SPRP_INPUT_LENGTH)


def timed_compiled(backend):
    def run(loops):
        core._set_backend(backend)
        encrypt = core.encrypt
        start = time.perf_counter()
        for _ in range(loops):
            encrypt(KEY, NONCE, [], 0, PAYLOAD)
        return time.perf_counter() - start
    return run


def timed_reference(loops):
    start = time.perf_counter()
    for _ in range(loops):
        ref.encrypt(KEY, NONCE, [], 0, PAYLOAD)
    return time.perf_counter() - start


def report(results):
    base = results.get("aez_reference_2064")
    print()
    print(f"{'benchmark':<26}{'median':>12}{'vs reference':>16}")
    for name, bench in results.items():
        median = bench.median()
        speedup = base.median() / median if base else float("nan")
        print(f"{name:<26}{median * 1e6:>10.2f} us{speedup:>15.0f}x")
    if "aez_aesni_2064" in results and "aez_portable_2064" in results:
        aesni = results["aez_aesni_2064"].median()
        portable = results["aez_portable_2064"].median()
        verdict = "meets" if aesni <= AESNI_TARGET_S else "MISSES"
        print(f"AES-NI {aesni * 1e6:.2f} us {verdict} the <= 3 us target "
              f"({aesni / AESNI_TARGET_S:.2f}x of it); portable/AES-NI = {portable / aesni:.1f}x")


def main():
    runner = pyperf.Runner()
    runner.metadata["description"] = "AEZ v5 encrypt, 2,064 bytes, tau 0, no AD"
    results = {}
    if core.cpu_has_aesni():
        results["aez_aesni_2064"] = runner.bench_time_func("aez_aesni_2064",
                                                           timed_compiled("aesni"))
    results["aez_portable_2064"] = runner.bench_time_func("aez_portable_2064",
                                                          timed_compiled("portable"))
    results["aez_reference_2064"] = runner.bench_time_func("aez_reference_2064",
                                                           timed_reference)
    if all(bench is not None for bench in results.values()):   # main process only
        report(results)


if __name__ == "__main__":
    main()
