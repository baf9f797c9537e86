"""Differential tests: the compiled AEZ (both backends) against the pure-Python reference
on random keys, nonces, AD vectors, tau and lengths; tampering, in-place use and threads."""
import os
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aez_support import backend  # noqa: F401 (fixture)
from katzenpost._core import aez as core
from katzenpost.reference import aez as ref
from katzenpost.sphinx import aez as api

keys = st.one_of(st.binary(min_size=48, max_size=48), st.binary(min_size=0, max_size=80))
nonces = st.binary(min_size=0, max_size=40)
ads = st.lists(st.binary(min_size=0, max_size=40), min_size=0, max_size=3)
taus = st.one_of(st.just(0), st.just(16), st.integers(min_value=0, max_value=40))


def sized_bytes(low, high):
    """Bytes whose length is drawn uniformly (plain st.binary favours short strings)."""
    return st.integers(min_value=low, max_value=high).flatmap(
        lambda n: st.binary(min_size=n, max_size=n))


messages = sized_bytes(0, 300)

SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(key=keys, nonce=nonces, ad=ads, tau=taus, msg=messages)
def test_compiled_matches_reference(backend, key, nonce, ad, tau, msg):
    ct = api.encrypt(key, nonce, ad, tau, msg)
    assert ct == ref.encrypt(key, nonce, ad, tau, msg)
    assert len(ct) == len(msg) + tau
    assert api.decrypt(key, nonce, ad, tau, ct) == msg
    assert ref.decrypt(key, nonce, ad, tau, ct) == msg


@SETTINGS
@given(key=keys, delta=st.binary(min_size=16, max_size=16),
       x=sized_bytes(1, 300))
def test_encipher_and_decipher_match_reference(backend, key, delta, x):
    c = core._encipher(key, delta, x)
    assert c == ref.encipher(key, delta, x)
    assert len(c) == len(x)
    assert core._decipher(key, delta, c) == x
    assert ref.decipher(key, delta, c) == x


@pytest.mark.parametrize("length", [2064, 2048 + 16 + 1, 4096 + 100])
@pytest.mark.parametrize("tau", [0, 16])
def test_large_messages_match_reference(backend, length, tau):
    """Sphinx's 2,064-byte SPRP input and a ciphertext above AEZ_STACK_MAX (malloc path)."""
    key, nonce, msg = os.urandom(48), os.urandom(16), os.urandom(length)
    ad = [os.urandom(5)] if tau else []
    ct = api.encrypt(key, nonce, ad, tau, msg)
    assert ct == ref.encrypt(key, nonce, ad, tau, msg)
    assert api.decrypt(key, nonce, ad, tau, ct) == msg


def test_many_ad_strings_match_reference(backend):
    """More AD strings than the wrapper keeps on the stack."""
    key, nonce, msg = os.urandom(48), os.urandom(16), os.urandom(77)
    ad = [os.urandom(n) for n in range(0, 40, 3)]
    ct = api.encrypt(key, nonce, ad, 16, msg)
    assert ct == ref.encrypt(key, nonce, ad, 16, msg)
    assert api.decrypt(key, nonce, ad, 16, ct) == msg
    assert api.decrypt(key, nonce, ad[:-1], 16, ct) is None


@SETTINGS
@given(key=keys, nonce=nonces, ad=ads, tau=st.integers(min_value=8, max_value=32),
       msg=messages, data=st.data())
def test_tampered_ciphertext_is_rejected(backend, key, nonce, ad, tau, msg, data):
    ct = bytearray(api.encrypt(key, nonce, ad, tau, msg))
    bit = data.draw(st.integers(min_value=0, max_value=8 * len(ct) - 1))
    ct[bit // 8] ^= 1 << (bit % 8)
    assert api.decrypt(key, nonce, ad, tau, bytes(ct)) is None
    assert ref.decrypt(key, nonce, ad, tau, bytes(ct)) is None


def test_wrong_key_nonce_or_ad_is_rejected(backend):
    key, nonce, ad, msg = os.urandom(48), os.urandom(16), [b"ad"], os.urandom(100)
    ct = api.encrypt(key, nonce, ad, 16, msg)
    assert api.decrypt(os.urandom(48), nonce, ad, 16, ct) is None
    assert api.decrypt(key, os.urandom(16), ad, 16, ct) is None
    assert api.decrypt(key, nonce, [b"da"], 16, ct) is None
    assert api.decrypt(key, nonce, [], 16, ct) is None
    assert api.decrypt(key, nonce, ad, 15, ct) is None


@pytest.mark.parametrize("tau", [0, 1, 16, 40])
def test_short_ciphertexts(backend, tau):
    """Shorter than tau fails; exactly tau is the prf tag of the empty message."""
    key, nonce = os.urandom(48), os.urandom(16)
    tag = api.encrypt(key, nonce, [], tau, b"")
    assert len(tag) == tau
    assert api.decrypt(key, nonce, [], tau, tag) == b""
    if tau:
        assert api.decrypt(key, nonce, [], tau, tag[:-1]) is None
        bad = bytes([tag[0] ^ 1]) + tag[1:]
        assert api.decrypt(key, nonce, [], tau, bad) is None
        assert api.decrypt_into(key, nonce, [], tau, tag[:-1], bytearray(0)) is False


@SETTINGS
@given(key=keys, nonce=nonces, ad=ads, tau=taus, msg=messages)
def test_in_place_matches_out_of_place(backend, key, nonce, ad, tau, msg):
    expected = api.encrypt(key, nonce, ad, tau, msg)
    buf = bytearray(msg) + bytearray(tau)
    api.encrypt_into(key, nonce, ad, tau, memoryview(buf)[:len(msg)], buf)
    assert bytes(buf) == expected
    assert api.decrypt_into(key, nonce, ad, tau, buf, memoryview(buf)[:len(msg)]) is True
    assert bytes(buf[:len(msg)]) == msg
    separate = bytearray(len(msg))
    assert api.decrypt_into(key, nonce, ad, tau, expected, separate) is True
    assert bytes(separate) == msg


def test_failed_decrypt_into_leaves_out_untouched(backend):
    key, nonce = os.urandom(48), os.urandom(16)
    ct = bytearray(api.encrypt(key, nonce, [], 16, b"x" * 100))
    ct[3] ^= 0x40
    out = bytearray(b"\xaa" * 100)
    assert api.decrypt_into(key, nonce, [], 16, ct, out) is False
    assert out == bytearray(b"\xaa" * 100)


def test_sphinx_case_is_an_sprp(backend):
    """tau = 0, no AD: length preserving, decrypt never fails and inverts encrypt."""
    key, nonce, payload = os.urandom(48), os.urandom(16), os.urandom(2064)
    ct = api.encrypt(key, nonce, [], 0, payload)
    assert len(ct) == 2064 and ct != payload
    assert api.decrypt(key, nonce, [], 0, ct) == payload
    assert api.decrypt(key, nonce, [], 0, os.urandom(2064)) is not None


def test_concurrent_threads_agree(backend):
    """The C core releases the GIL and shares nothing: threads get the serial results."""
    jobs = [(os.urandom(48), os.urandom(16), os.urandom(2064)) for _ in range(16)]
    expected = [api.encrypt(k, n, [], 0, m) for k, n, m in jobs]
    results = [[None] * len(jobs) for _ in range(4)]

    def work(slot):
        for _ in range(20):
            for index, (k, n, m) in enumerate(jobs):
                results[slot][index] = api.encrypt(k, n, [], 0, m)

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(not thread.is_alive() for thread in threads)
    assert all(r == expected for r in results)


def test_backends_agree():
    if not core.cpu_has_aesni():
        pytest.skip("CPU has no AES-NI")
    key, nonce, msg = os.urandom(48), os.urandom(16), os.urandom(2064)
    try:
        core._set_backend("aesni")
        fast = api.encrypt(key, nonce, [b"a"], 16, msg)
        core._set_backend("portable")
        assert api.encrypt(key, nonce, [b"a"], 16, msg) == fast
    finally:
        core._set_backend("auto")


@pytest.mark.parametrize("length", [20, 64, 2064])
@pytest.mark.parametrize("shift", [-5, 3, 17])
def test_overlapping_buffers(backend, length, shift):
    """out may overlap the input at any offset, not only coincide with it."""
    key, nonce, msg = os.urandom(48), os.urandom(16), os.urandom(length)
    for tau in (0, 16):
        expected = api.encrypt(key, nonce, [], tau, msg)
        buf = bytearray(length + tau + 40)
        src, dst = 20, 20 + shift
        buf[src:src + length] = msg
        view = memoryview(buf)
        api.encrypt_into(key, nonce, [], tau, view[src:src + length], view[dst:dst + length + tau])
        assert bytes(buf[dst:dst + length + tau]) == expected
        ct_at = dst
        out_at = dst - shift
        assert api.decrypt_into(key, nonce, [], tau, view[ct_at:ct_at + length + tau],
                                view[out_at:out_at + length])
        assert bytes(buf[out_at:out_at + length]) == msg
