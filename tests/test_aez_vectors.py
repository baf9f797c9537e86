"""AEZ v5 against every Yawning/aez JSON vector (the Yawning/aez test vectors), on both compiled backends and
on the pure-Python reference, plus checks of the building blocks (BLAKE2b, the AES round)."""
import hashlib
import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from aez_support import ENCRYPT_FILES, backend, h, load  # noqa: F401 (fixture)
from katzenpost._core import aez as core
from katzenpost.reference import aez as ref
from katzenpost.sphinx import aez as api


def test_vector_files_are_complete():
    counts = {name: len(load(name)) for name in ["extract.json", "hash.json", "prf.json"]
              + ENCRYPT_FILES}
    assert counts == {"extract.json": 110, "hash.json": 27, "prf.json": 16,
                      "encrypt.json": 1024, "encrypt_no_ad.json": 4,
                      "encrypt_33_byte_ad.json": 4, "encrypt_16_byte_key.json": 4}


def test_extract_vectors(backend):
    for case in load("extract.json"):
        assert core._extract(h(case["a"])) == h(case["b"]), case["a"]


def test_hash_vectors(backend):
    for case in load("hash.json"):
        data = [h(x) for x in case["data"]]
        assert core._hash(h(case["k"]), case["tau"], data) == h(case["v"]), case


def test_prf_vectors(backend):
    for case in load("prf.json"):
        assert core._prf(h(case["k"]), h(case["delta"]), case["tau"]) == h(case["r"]), case


@pytest.mark.parametrize("name", ENCRYPT_FILES)
def test_encrypt_and_decrypt_vectors(backend, name):
    for case in load(name):
        key, nonce, ad = h(case["k"]), h(case["nonce"]), [h(x) for x in case["data"]]
        msg, ct, tau = h(case["m"]), h(case["c"]), case["tau"]
        assert api.encrypt(key, nonce, ad, tau, msg) == ct, (name, len(msg), tau)
        assert api.decrypt(key, nonce, ad, tau, ct) == msg, (name, len(msg), tau)


def test_encrypt_vectors_in_place(backend):
    """encrypt_into / decrypt_into on one buffer reproduce every encrypt.json case."""
    for case in load("encrypt.json")[::7]:
        key, nonce, ad = h(case["k"]), h(case["nonce"]), [h(x) for x in case["data"]]
        msg, ct, tau = h(case["m"]), h(case["c"]), case["tau"]
        buf = bytearray(msg) + bytearray(tau)
        api.encrypt_into(key, nonce, ad, tau, memoryview(buf)[:len(msg)], buf)
        assert bytes(buf) == ct
        assert api.decrypt_into(key, nonce, ad, tau, buf, memoryview(buf)[:len(msg)])
        assert bytes(buf[:len(msg)]) == msg


def test_reference_extract_hash_prf_vectors():
    for case in load("extract.json"):
        assert ref.extract(h(case["a"])) == h(case["b"])
    for case in load("hash.json"):
        assert ref.aez_hash(h(case["k"]), case["tau"], [h(x) for x in case["data"]]) == h(case["v"])
    for case in load("prf.json"):
        assert ref.aez_prf(h(case["k"]), h(case["delta"]), case["tau"]) == h(case["r"])


@pytest.mark.parametrize("name", ENCRYPT_FILES)
def test_reference_encrypt_and_decrypt_vectors(name):
    for case in load(name):
        key, nonce, ad = h(case["k"]), h(case["nonce"]), [h(x) for x in case["data"]]
        msg, ct, tau = h(case["m"]), h(case["c"]), case["tau"]
        assert ref.encrypt(key, nonce, ad, tau, msg) == ct, (name, len(msg), tau)
        assert ref.decrypt(key, nonce, ad, tau, ct) == msg, (name, len(msg), tau)


@pytest.mark.parametrize("length", [0, 1, 47, 48, 49, 127, 128, 129, 255, 256, 257, 1000])
@pytest.mark.parametrize("digest_size", [1, 32, 48, 64])
def test_c_blake2b_matches_hashlib(length, digest_size):
    data = os.urandom(length)
    assert core._blake2b(data, digest_size) == hashlib.blake2b(
        data, digest_size=digest_size).digest()


def _aes128_key_schedule(key):
    words = [key[4 * k:4 * k + 4] for k in range(4)]
    rcon = 1
    for k in range(4, 44):
        t = words[k - 1]
        if k % 4 == 0:
            t = bytes([ref.SBOX[t[1]] ^ rcon, ref.SBOX[t[2]], ref.SBOX[t[3]], ref.SBOX[t[0]]])
            rcon = (rcon << 1) ^ (0x11B if rcon & 0x80 else 0)
        words.append(bytes(a ^ b for a, b in zip(words[k - 4], t)))
    return [b"".join(words[4 * r:4 * r + 4]) for r in range(11)]


def test_reference_aes_round_composes_to_aes128():
    """Spec 7.3 tip: initial AddRoundKey + 9 aesenc + a final round without MixColumns is
    AES-128; checked against OpenSSL through cryptography."""
    for _ in range(8):
        key, block = os.urandom(16), os.urandom(16)
        round_keys = _aes128_key_schedule(key)
        state = bytes(a ^ b for a, b in zip(block, round_keys[0]))
        for r in range(1, 10):
            state = ref.aes_round(state, round_keys[r])
        sub = [ref.SBOX[b] for b in state]
        shifted = bytes(sub[r + 4 * ((c + r) % 4)] for c in range(4) for r in range(4))
        state = bytes(a ^ b for a, b in zip(shifted, round_keys[10]))
        expected = Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(block)
        assert state == expected
