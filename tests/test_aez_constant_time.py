"""Constant-time check of the C AEZ (ctgrind method): key, nonce and message are marked
undefined for valgrind's memcheck, which then reports any branch or memory index that
depends on them. Run on both backends; a planted leak shows the check can fail."""
import shutil
import subprocess
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "katzenpost" / "_core"
MEMCHECK_H = Path("/usr/include/valgrind/memcheck.h")

HARNESS = r"""
#include "aez_impl.c"
#include <stdio.h>
#include <valgrind/memcheck.h>

int main(int argc, char **argv)
{
    static const size_t lens[] = {1, 2, 7, 15, 16, 17, 31, 32, 33, 47, 48, 63, 64, 100, 2064};
    if (aez_set_backend(atoi(argv[1])) != 0)
        return 2;
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        for (size_t tau = 0; tau <= 16; tau += 16) {
            size_t len = lens[li];
            uint8_t key[48] = {1}, nonce[16] = {2}, msg[2100] = {3}, ct[2200], pt[2200];
            const uint8_t *ad[1] = {msg};
            size_t ad_len[1] = {5};
            aez_ctx ctx;
            VALGRIND_MAKE_MEM_UNDEFINED(key, sizeof key);
            VALGRIND_MAKE_MEM_UNDEFINED(nonce, sizeof nonce);
            VALGRIND_MAKE_MEM_UNDEFINED(msg, len);
            aez_setup(&ctx, key, sizeof key);
            aez_encrypt(&ctx, nonce, sizeof nonce, ad, ad_len, 1, tau, msg, len, ct);
            if (tau == 0)   /* with tau > 0 the verdict itself is public */
                aez_decrypt(&ctx, nonce, sizeof nonce, ad, ad_len, 1, 0, ct, len, pt);
        }
    }
    uint8_t short_key[16] = {0};
    aez_ctx hashed;
    VALGRIND_MAKE_MEM_UNDEFINED(short_key, sizeof short_key);
    aez_setup(&hashed, short_key, sizeof short_key);     /* BLAKE2b Extract */
#ifdef PLANT_LEAK
    if (hashed.I[0] & 1)
        puts("leak");
#endif
    return 0;
}
"""


def _build(tmp_path, planted):
    if shutil.which("valgrind") is None or shutil.which("gcc") is None or not MEMCHECK_H.exists():
        pytest.skip("needs gcc, valgrind and valgrind/memcheck.h")
    source = tmp_path / "ct_harness.c"
    source.write_text(HARNESS)
    binary = tmp_path / ("ct_leak" if planted else "ct_harness")
    flags = ["-DPLANT_LEAK"] if planted else []
    subprocess.run(["gcc", "-O2", "-g", "-w", *flags, f"-I{CORE}", str(source), "-o", str(binary)],
                   check=True, timeout=120)
    return binary


def _memcheck(binary, backend_code):
    return subprocess.run(["valgrind", "-q", "--error-exitcode=9", str(binary), str(backend_code)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("backend_code, name", [(1, "portable"), (2, "aesni")])
def test_no_secret_dependent_branches_or_indices(tmp_path, backend_code, name):
    from katzenpost._core import aez as core
    if name == "aesni" and not core.cpu_has_aesni():
        pytest.skip("CPU has no AES-NI")
    result = _memcheck(_build(tmp_path, planted=False), backend_code)
    assert result.returncode == 0, f"{name} backend leaks secrets:\n{result.stderr[-3000:]}"


def test_planted_leak_is_detected(tmp_path):
    result = _memcheck(_build(tmp_path, planted=True), 1)
    assert result.returncode == 9
    assert "depends on uninitialised value" in result.stderr
