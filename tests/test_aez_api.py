"""The public AEZ API (katzenpost.sphinx.aez): argument checking with clear errors, the
backend switch, HARDWARE_ACCELERATED, and the reference twin's matching checks."""
import array

import pytest

from katzenpost._core import aez as core
from katzenpost.reference import aez as ref
from katzenpost.sphinx import aez as api

KEY, NONCE = bytes(range(48)), bytes(16)


def test_hardware_accelerated_reflects_the_cpu():
    assert isinstance(api.HARDWARE_ACCELERATED, bool)
    assert api.HARDWARE_ACCELERATED == core.cpu_has_aesni()
    assert core.hardware_accelerated() == (core._backend() == "aesni")


def test_set_backend_switches_and_rejects_unknown_names():
    try:
        core._set_backend("portable")
        assert core._backend() == "portable" and core.hardware_accelerated() is False
        core._set_backend("auto")
        assert core._backend() == ("aesni" if core.cpu_has_aesni() else "portable")
        with pytest.raises(ValueError, match="backend must be one of"):
            core._set_backend("fast")
        if not core.cpu_has_aesni():
            with pytest.raises(RuntimeError, match="not available"):
                core._set_backend("aesni")
    finally:
        core._set_backend("auto")


@pytest.mark.parametrize("args, error, message", [
    (("k", NONCE, [], 0, b"m"), TypeError, "key must be a bytes-like object, got str"),
    ((KEY, None, [], 0, b"m"), TypeError, "nonce must be a bytes-like object, got NoneType"),
    ((KEY, NONCE, [], 0, 5), TypeError, "msg must be a bytes-like object, got int"),
    ((KEY, NONCE, b"ad", 0, b"m"), TypeError, "ad must be a list of byte strings, got bytes"),
    ((KEY, NONCE, None, 0, b"m"), TypeError, "ad must be a list of byte strings"),
    ((KEY, NONCE, [b"ok", "no"], 0, b"m"), TypeError, r"ad\[1\] must be a byte string"),
    ((KEY, NONCE, [7], 0, b"m"), TypeError, r"ad\[0\] must be a byte string, got int"),
    ((KEY, NONCE, [], -1, b"m"), ValueError, "tau must be in 0"),
    ((KEY, NONCE, [], 1 << 40, b"m"), ValueError, "tau must be in 0"),
    ((KEY, NONCE, [], "16", b"m"), TypeError, "tau must be an int"),
    ((KEY, NONCE, [], 16.0, b"m"), TypeError, "tau must be an int"),
    ((KEY, NONCE, [], True, b"m"), TypeError, "tau must be an int"),
    ((KEY, memoryview(bytes(32))[::2], [], 0, b"m"), TypeError, "nonce must be a contiguous"),
])
@pytest.mark.parametrize("function", [api.encrypt, api.decrypt])
def test_bad_arguments_raise_clear_errors(function, args, error, message):
    if function is api.decrypt:     # the last argument is called ct there
        message = message.replace("msg", "ct")
    with pytest.raises(error, match=message):
        function(*args)


@pytest.mark.parametrize("function", [ref.encrypt, ref.decrypt])
def test_reference_rejects_bad_ad_and_tau(function):
    with pytest.raises(TypeError, match="ad must be a list"):
        function(KEY, NONCE, b"ad", 0, b"m")
    with pytest.raises(ValueError, match="tau must be >= 0"):
        function(KEY, NONCE, [], -1, b"m")
    with pytest.raises(TypeError, match="tau must be an int"):
        function(KEY, NONCE, [], "1", b"m")


def test_into_variants_check_the_output_buffer():
    with pytest.raises(ValueError, match=r"out must hold len\(msg\) \+ tau = 17 bytes, got 16"):
        api.encrypt_into(KEY, NONCE, [], 16, b"m", bytearray(16))
    with pytest.raises(TypeError, match="out must be a writable contiguous bytes-like"):
        api.encrypt_into(KEY, NONCE, [], 0, b"m", b"x")
    with pytest.raises(TypeError, match="out must be a bytes-like object, got NoneType"):
        api.encrypt_into(KEY, NONCE, [], 0, b"m", None)
    ct = api.encrypt(KEY, NONCE, [], 16, b"hello")
    with pytest.raises(ValueError, match=r"out must hold len\(ct\) - tau = 5 bytes, got 6"):
        api.decrypt_into(KEY, NONCE, [], 16, ct, bytearray(6))
    with pytest.raises(TypeError, match="ct must be a bytes-like object, got str"):
        api.decrypt_into(KEY, NONCE, [], 16, "ct", bytearray(5))


def test_lower_level_entry_points_check_their_arguments():
    with pytest.raises(ValueError, match="delta must be 16 bytes, got 15"):
        core._prf(KEY, bytes(15), 4)
    with pytest.raises(ValueError, match="delta must be 16 bytes"):
        core._encipher(KEY, bytes(3), b"x" * 40)
    with pytest.raises(ValueError, match="tau_bits must be an int"):
        core._hash(KEY, -8, [NONCE])
    with pytest.raises(ValueError, match="digest_size must be in 1..64"):
        core._blake2b(b"", 65)
    with pytest.raises(TypeError, match="key must be"):
        core._extract("key")


def test_accepts_any_bytes_like_input():
    msg = b"0123456789abcdef0123456789abcdef!"
    expected = api.encrypt(KEY, NONCE, [b"ad"], 16, msg)
    assert api.encrypt(bytearray(KEY), memoryview(NONCE), (bytearray(b"ad"),), 16,
                       memoryview(bytearray(msg))) == expected
    words = array.array("B", msg)
    assert api.encrypt(KEY, NONCE, [memoryview(b"ad")], 16, words) == expected


def test_any_key_and_nonce_length_is_accepted():
    """AEZ Extract takes keys of any length (BLAKE2b unless 48 bytes); nonces any length."""
    for key_len in (0, 1, 16, 47, 49, 64, 200):
        for nonce_len in (0, 1, 16, 17, 50):
            key, nonce = bytes([key_len]) * key_len, bytes([nonce_len]) * nonce_len
            ct = api.encrypt(key, nonce, [], 4, b"message!")
            assert ct == ref.encrypt(key, nonce, [], 4, b"message!")
            assert api.decrypt(key, nonce, [], 4, ct) == b"message!"


def test_empty_message_and_zero_tau_give_empty_output():
    assert api.encrypt(KEY, NONCE, [], 0, b"") == b""
    assert api.decrypt(KEY, NONCE, [], 0, b"") == b""
    assert api.decrypt(KEY, NONCE, [], 16, b"") is None


def test_cpu_specific_instructions_stay_in_the_aesni_functions():
    """The module must load and run on x86-64 CPUs without AES-NI: AES, SSSE3, SSE4.1 and
    AVX instructions may appear only in the target-attributed ni_* functions."""
    import platform
    import re
    import shutil
    import subprocess

    if platform.machine() not in ("x86_64", "AMD64") or shutil.which("objdump") is None:
        pytest.skip("needs x86-64 and objdump")
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", core.__file__],
                             capture_output=True, text=True, timeout=120, check=True).stdout
    special = re.compile(r"\s(aes\w+|pshufb|palignr|pinsr[bdq]|pextr[bdq]|ptest|pblend\w+|"
                         r"pmov[sz]x\w+|v[a-z]\w*\s+%[xyz]mm)")
    offenders, function, seen_aesni = set(), "", False
    for line in listing.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if header:
            function = header.group(1)
            continue
        if special.search(line):
            if function.startswith("ni_aes"):
                seen_aesni = True
            else:
                offenders.add(function)
    assert seen_aesni, "the AES-NI functions were not found in the disassembly"
    assert not offenders, f"CPU-specific instructions outside ni_*: {sorted(offenders)}"
