"""Constant-time check of the compiled Sphinx core's scalar paths (ctgrind method): the node's
private key, the creator's ephemeral key and the primitives' keys are marked undefined for
valgrind's memcheck, which then reports any branch or memory index that depends on them. The
harness is built with SX_CTGRIND, which marks as defined the few values that are public by
design (whether a MAC matched, the decrypted routing commands, the payload tag verdict,
libsodium's low-order verdict). A planted leak shows the check can fail.

Valgrind cannot execute AVX-512 instructions, so the eight-lane X25519 backend (libcrypto_mb)
is not run here: the harness forces the scalar backends, and docs/sphinx-backends.md gives the
timing-independence argument for the lane code. OpenSSL's X25519 is not run either: libcrypto
itself branches on whether the result is zero (its small-order check), which memcheck would
report inside OpenSSL; the harness uses libsodium for X25519 and skips if it is missing."""
import shutil
import subprocess
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "katzenpost" / "_core"
MEMCHECK_H = Path("/usr/include/valgrind/memcheck.h")

HARNESS = r"""
#include "sphinx_impl.h"
#include <stdio.h>
#include <string.h>
#include <valgrind/memcheck.h>

#define SECRET(buf, len) VALGRIND_MAKE_MEM_UNDEFINED(buf, len)

int main(void)
{
    uint8_t node_key[32] = {7, 1, 2, 3}, node_pub[32], ephemeral[32] = {5, 4, 3};
    static const uint8_t base[32] = {9};
    uint8_t ids[64] = {1}, pubs[64], blocks[164] = {0}, filler[246] = {0};
    uint8_t header[SX_HEADER_LEN], sprp[128], packet[SX_HEADER_LEN + SX_TAG_LEN + 100];
    size_t lens[2] = {0, 0};
    if (sx_init() != 0 || sx_set_x25519_backend(SX_X25519_LIBSODIUM) != 0)
        return 2;
    sx_x25519(node_pub, node_key, base);
    memcpy(pubs, node_pub, 32);
    memcpy(pubs + 32, node_pub, 32);
    blocks[82] = SX_CMD_RECIPIENT; /* hop 1: Recipient (zero id); hop 0: NextNodeHop only */
    lens[1] = SX_RECIPIENT_LEN;

    /* Creation with a secret ephemeral key. */
    SECRET(ephemeral, sizeof ephemeral);
    if (sx_create_header(ephemeral, 2, ids, pubs, blocks, lens, filler, header, sprp) != SX_OK)
        return 3;
    uint8_t payload[100] = {0};
    VALGRIND_MAKE_MEM_DEFINED(header, sizeof header); /* the header goes out on the wire */
    memcpy(packet, header, SX_HEADER_LEN);
    sx_encrypt_payload(sprp, 2, payload, sizeof payload, packet + SX_HEADER_LEN);
    VALGRIND_MAKE_MEM_DEFINED(packet, sizeof packet);

    /* Two hops of unwrap with a secret node key (second key of the trial list first fails). */
    uint8_t keys[64] = {9, 9, 9};
    memcpy(keys + 32, node_key, 32);
    SECRET(keys, sizeof keys);
    sx_unwrap_result res;
    for (int hop = 0; hop < 2; hop++) {
        int status = sx_unwrap(keys, 2, packet, sizeof packet, &res);
        VALGRIND_MAKE_MEM_DEFINED(&status, sizeof status);
        if (status != SX_OK)
            return 10 + status;
        VALGRIND_MAKE_MEM_DEFINED(packet, sizeof packet); /* forwarded / delivered */
    }

    /* The primitives with secret keys. */
    uint8_t key[32] = {3}, iv[16] = {4}, buf[600] = {5}, out[32];
    sx_packet_keys pk;
    SECRET(key, sizeof key);
    SECRET(iv, sizeof iv);
    if (sx_kdf(key, &pk) != 0 || sx_hmac_sha256(key, sizeof key, buf, sizeof buf, out) != 0 ||
        sx_aes128_ctr(key, iv, buf, buf, sizeof buf) != 0)
        return 4;
#ifdef PLANT_LEAK
    if (pk.blinding[0] & 1)
        puts("leak");
#endif
    return 0;
}
"""


def _build(tmp_path, planted):
    if shutil.which("valgrind") is None or shutil.which("gcc") is None or not MEMCHECK_H.exists():
        pytest.skip("needs gcc, valgrind and valgrind/memcheck.h")
    source = tmp_path / "ct_sphinx.c"
    source.write_text(HARNESS)
    binary = tmp_path / ("ct_leak" if planted else "ct_sphinx")
    flags = ["-DPLANT_LEAK"] if planted else []
    sources = [str(source)] + [str(CORE / c) for c in ("sphinx_impl.c", "aez_impl.c", "x25519_mb_impl.c")]
    subprocess.run(["gcc", "-O2", "-g", "-w", "-DSX_CTGRIND", *flags, f"-I{CORE}", *sources,
                    "-o", str(binary), "-lcrypto", "-ldl", "-lpthread"], check=True, timeout=180)
    return binary


# OpenSSL's AES-CTR carries into the upper 96 bits of the counter block when the low 32 bits
# wrap inside a call, a branch on the IV (secret here: it comes from the KDF). It reveals
# only whether a 2^32-block boundary falls inside one call (for our <= 2 KiB calls, with
# probability about 2^-27) and is libcrypto's code, not ours: suppressed, and only it.
SUPPRESSIONS = """{
   openssl-ctr32-counter-carry
   Memcheck:Cond
   fun:CRYPTO_ctr128_encrypt_ctr32
}
"""


def _memcheck(binary):
    suppressions = binary.parent / "openssl-ctr.supp"
    suppressions.write_text(SUPPRESSIONS)
    return subprocess.run(["valgrind", "-q", "--error-exitcode=9", f"--suppressions={suppressions}",
                           str(binary)], capture_output=True, text=True, timeout=600)


def test_no_secret_dependent_branches_or_indices_on_the_scalar_paths(tmp_path):
    binary = _build(tmp_path, planted=False)
    plain = subprocess.run([str(binary)], capture_output=True, timeout=60)
    if plain.returncode == 2:
        pytest.skip("libsodium not installed: the scalar X25519 under test is missing")
    assert plain.returncode == 0, f"harness failed outside valgrind: {plain.returncode}"
    result = _memcheck(binary)
    assert result.returncode == 0, f"the Sphinx core leaks secrets:\n{result.stderr[-3000:]}"


def test_planted_leak_is_detected(tmp_path):
    binary = _build(tmp_path, planted=True)
    if subprocess.run([str(binary)], capture_output=True, timeout=60).returncode == 2:
        pytest.skip("libsodium not installed")
    result = _memcheck(binary)
    assert result.returncode == 9 and "uninitialised" in result.stderr
