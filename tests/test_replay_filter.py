"""Replay filter: keyed Bloom kernel against its Python twin and a set model, persistence across a
SIGKILL, refusal of damaged or foreign files, thread safety of check_and_add."""

import hashlib
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from katzenpost._core.replay import BloomKernel, siphash24_128
from katzenpost.reference import replay as ref
from katzenpost.server import replay as rp
from katzenpost.server.replay import ReplayFilter, ReplayFilterError

REPO = Path(__file__).resolve().parent.parent

# veorq/SipHash vectors.h, vectors_sip128: key 00..0f, message 00..(len-1).
SIPHASH128_KAT = {
    0: "a3817f04ba25a8e66df67214c7550293",
    1: "da87c1d86b99af44347659119b22fc45",
    8: "3b62a9ba6258f5610f83e264f31497b4",
    15: "5493e99933b0a8117e08ec0f97cfc3d9",
    32: "7c3956ca5eeafc3e363e9d556546eb68",
    63: "5150d1772f50834a503e069a973fbd7c",
}


def random_tags(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 32), dtype=np.uint8)


def kernel(m_bits=64 * 1024, k_probes=7, key=b"k" * 16):
    return BloomKernel(np.zeros(m_bits // 64, np.uint64), m_bits, k_probes, key, np.zeros(1, np.uint64))


@pytest.mark.parametrize("length", sorted(SIPHASH128_KAT))
def test_siphash128_matches_reference_vectors(length):
    key = bytes(range(16))
    msg = bytes(range(length))
    assert siphash24_128(key, msg).hex() == SIPHASH128_KAT[length]
    assert ref.siphash24_128(key, msg).hex() == SIPHASH128_KAT[length]


def test_siphash128_compiled_equals_twin_for_all_lengths():
    key = os.urandom(16)
    for length in range(70):
        msg = os.urandom(length)
        assert siphash24_128(key, msg) == ref.siphash24_128(key, msg), length


def test_siphash_rejects_bad_key_length():
    with pytest.raises(ValueError, match="16 bytes"):
        siphash24_128(b"short", b"")


def test_probe_indexes_equal_twin_and_depend_on_key():
    tag = bytes(random_tags(1, 5)[0])
    a = kernel(m_bits=362315200, k_probes=14, key=b"A" * 16)
    b = kernel(m_bits=362315200, k_probes=14, key=b"B" * 16)
    assert a.indexes(tag) == ref.bloom_indexes(362315200, 14, b"A" * 16, tag)
    assert all(0 <= i < 362315200 for i in a.indexes(tag))
    assert a.indexes(tag) != b.indexes(tag)
    assert (a.m_bits, a.k_probes, a.added) == (362315200, 14, 0)  # as built above


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=0, max_size=120), st.lists(st.booleans(), min_size=120, max_size=120),
       st.integers(1, 12), st.integers(1, 40))
def test_check_and_add_equals_python_twin(tag_ids, mask_bits, k_probes, words):
    # Few distinct tags (ids 0..40) so batches hold replays and in-batch duplicates.
    pool = random_tags(41, 99)
    tags = np.ascontiguousarray(pool[tag_ids]).reshape(len(tag_ids), 32)
    mask = np.array(mask_bits[: len(tag_ids)], dtype=np.uint8)
    key = b"0123456789abcdef"
    compiled = kernel(m_bits=64 * words, k_probes=k_probes, key=key)
    twin = ref.ReferenceBloom(64 * words, k_probes, key)
    for half in (slice(0, len(tag_ids) // 2), slice(len(tag_ids) // 2, None)):
        batch, batch_mask = np.ascontiguousarray(tags[half]), np.ascontiguousarray(mask[half])
        out = np.full(len(batch), 7, np.uint8)
        present = compiled.check_and_add(batch, batch_mask, out)
        expected = twin.check_and_add([bytes(t) for t in batch], batch_mask)
        got = [int(o) if m else 0 for o, m in zip(out, batch_mask)]
        assert got == expected
        assert all(o == 7 for o, m in zip(out, batch_mask) if not m), "masked rows must be untouched"
        assert present == sum(expected)
    assert compiled.added == twin.added


def test_membership_matches_set_model_without_false_negatives():
    n = 20000
    compiled = kernel(*rp.bloom_parameters(n, 1e-3))
    seen = set()
    tags = random_tags(n, 1)
    reuse = np.concatenate([tags[:500], random_tags(500, 2)])
    out = np.zeros(n, np.uint8)
    compiled.check_and_add(tags, None, out)
    false_positives = 0
    for i, tag in enumerate(tags):
        key = bytes(tag)
        false_positives += bool(out[i]) and key not in seen
        assert not (key in seen and not out[i])
        seen.add(key)
    out2 = np.zeros(len(reuse), np.uint8)
    compiled.check_and_add(reuse, None, out2)
    assert out2[:500].all(), "every replayed tag must be reported"
    for i in range(500, 1000):
        false_positives += bool(out2[i]) and bytes(reuse[i]) not in seen
    assert false_positives <= 40  # ~10 expected at p=1e-3


def test_in_batch_duplicate_is_reported():
    tags = random_tags(3, 3)
    tags[2] = tags[0]
    out = np.zeros(3, np.uint8)
    assert kernel().check_and_add(tags, None, out) == 1
    assert list(out) == [0, 0, 1]


def test_measured_false_positive_rate_within_1_5x_of_target():
    n, target = 50000, 1e-3
    m_bits, k_probes = rp.bloom_parameters(n, target)
    compiled = kernel(m_bits, k_probes)
    compiled.check_and_add(random_tags(n, 10), None, np.zeros(n, np.uint8))
    probes = 300000
    out = np.zeros(probes, np.uint8)
    rate = compiled.contains(random_tags(probes, 11), out) / probes
    assert rate <= 1.5 * target, rate


def test_kernel_rejects_bad_shapes_and_parameters():
    k = kernel()
    with pytest.raises(ValueError, match="rows of 32"):
        k.check_and_add(np.zeros((2, 31), np.uint8), None, np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="out holds"):
        k.check_and_add(np.zeros((4, 32), np.uint8), None, np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="mask holds"):
        k.check_and_add(np.zeros((4, 32), np.uint8), np.zeros(2, np.uint8), np.zeros(4, np.uint8))
    with pytest.raises(ValueError):
        k.check_and_add(np.zeros((2, 32), np.int32), None, np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="indexes|32 bytes"):
        k.indexes(b"x" * 31)
    with pytest.raises(ValueError, match="multiple of 64"):
        BloomKernel(np.zeros(1, np.uint64), 63, 3, b"k" * 16, np.zeros(1, np.uint64))
    with pytest.raises(ValueError, match="words"):
        BloomKernel(np.zeros(2, np.uint64), 64, 3, b"k" * 16, np.zeros(1, np.uint64))
    with pytest.raises(ValueError, match="k_probes"):
        BloomKernel(np.zeros(1, np.uint64), 64, 0, b"k" * 16, np.zeros(1, np.uint64))
    with pytest.raises(ValueError, match="key"):
        BloomKernel(np.zeros(1, np.uint64), 64, 3, b"k", np.zeros(1, np.uint64))
    assert k.check_and_add(np.zeros((0, 32), np.uint8), None, np.zeros(0, np.uint8)) == 0


def test_concurrent_threads_see_each_tag_new_exactly_once():
    n, threads = 4096, 4
    compiled = kernel(*rp.bloom_parameters(n * 4, 1e-6))
    tags = random_tags(n, 4)
    results = [np.zeros(n, np.uint8) for _ in range(threads)]

    def worker(out):
        for base in range(0, n, 256):
            compiled.check_and_add(tags[base:base + 256], None, out[base:base + 256])

    pool = [threading.Thread(target=worker, args=(r,)) for r in results]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=30)
    new_counts = sum((1 - r).astype(int) for r in results)
    assert (new_counts == 1).all(), "a tag was accepted as new by two threads (replay window)"
    assert compiled.added == n


# ---- sizing and naming -------------------------------------------------------------------------

def test_parameters_stay_within_memory_slack_and_target():
    for n, p in [(12_000_000, 1e-6), (2_400_000, 1e-5), (1000, 1e-3), (37_000_000, 1e-3)]:
        m_bits, k_probes = rp.bloom_parameters(n, p)
        ideal = -n * np.log(p) / np.log(2) ** 2
        assert m_bits <= 1.05 * ideal and m_bits % 64 == 0
        assert rp.bloom_false_positive_rate(m_bits, k_probes, n) <= p


@pytest.mark.parametrize("n,p", [(0, 1e-6), (10, 0.0), (10, 0.5), (10, -1.0), (1 << 40, 1e-9)])
def test_parameters_refuse_bad_values(n, p):
    with pytest.raises(ValueError, match="replay"):
        rp.bloom_parameters(n, p)


def test_expected_entries_has_a_floor():
    assert rp.expected_entries_for_rate(0, 1200) == rp.MIN_EXPECTED_ENTRIES
    assert rp.expected_entries_for_rate(10_000, 1200) == 12_000_000
    with pytest.raises(ValueError):
        rp.expected_entries_for_rate(10, 0)


def test_file_naming_helpers(tmp_path):
    assert rp.replay_filter_path(tmp_path, 42) == tmp_path / "replay-42.bloom"
    assert rp.replay_filter_epoch("replay-42.bloom") == 42
    assert rp.replay_filter_epoch("replay-x.bloom") is None
    assert rp.replay_filter_epoch("mixkey-42.db") is None
    with pytest.raises(ValueError):
        rp.replay_filter_path(tmp_path, -1)
    ReplayFilter.create(rp.replay_filter_path(tmp_path, 7), 1000, epoch=7).close()
    ReplayFilter.create(rp.replay_filter_path(tmp_path, 9), 1000, epoch=9).close()
    (tmp_path / "other.txt").write_text("x")
    assert rp.list_replay_filters(tmp_path) == {7: tmp_path / "replay-7.bloom", 9: tmp_path / "replay-9.bloom"}


# ---- the persistent filter ---------------------------------------------------------------------

def test_create_add_reopen_keeps_tags(tmp_path):
    path = tmp_path / "replay-3.bloom"
    tags = random_tags(1000, 7)
    with ReplayFilter.create(path, 10_000, 1e-6, epoch=3) as filt:
        assert (path.stat().st_mode & 0o777) == 0o600
        out = np.zeros(1000, np.uint8)
        assert filt.check_and_add(tags, None, out) == 0
        assert filt.added == 1000
        filt.sync()
    with ReplayFilter.open(path, epoch=3) as filt:
        out = np.zeros(1000, np.uint8)
        assert filt.check_and_add(tags, None, out) == 1000
        assert filt.added == 1000
        assert filt.epoch == 3 and filt.k_probes >= 1


def test_is_replay_single_tag_and_wrong_length(tmp_path):
    with ReplayFilter.create(tmp_path / "r.bloom", 1000) as filt:
        assert filt.is_replay(b"\x01" * 32) is False
        assert filt.is_replay(b"\x01" * 32) is True
        assert filt.is_replay(b"\x01" * 31) is True
        assert filt.added == 1


def test_check_and_add_requires_out(tmp_path):
    with ReplayFilter.create(tmp_path / "r.bloom", 1000) as filt:
        with pytest.raises(ValueError, match="out"):
            filt.check_and_add(random_tags(2, 1))


def test_closed_filter_refuses_use_and_close_is_idempotent(tmp_path):
    filt = ReplayFilter.create(tmp_path / "r.bloom", 1000)
    filt.close()
    filt.close()
    assert filt.closed
    with pytest.raises(ValueError, match="closed"):
        filt.check_and_add(random_tags(1, 1), None, np.zeros(1, np.uint8))


def test_unlink_deletes_the_file(tmp_path):
    path = tmp_path / "replay-5.bloom"
    filt = ReplayFilter.create(path, 1000, epoch=5)
    filt.unlink()
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_create_refuses_to_overwrite(tmp_path):
    path = tmp_path / "r.bloom"
    ReplayFilter.create(path, 1000).close()
    with pytest.raises(ReplayFilterError, match="already exists"):
        ReplayFilter.create(path, 1000)
    assert [p.name for p in tmp_path.iterdir()] == ["r.bloom"], "no temporary file left behind"


def test_second_open_of_same_file_is_refused(tmp_path):
    path = tmp_path / "r.bloom"
    with ReplayFilter.create(path, 1000):
        with pytest.raises(ReplayFilterError, match="in use"):
            ReplayFilter.open(path)
    ReplayFilter.open(path).close()


def _damage(path, offset, data):
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def _rewrite_header(path, **changes):
    """Re-pack a header with changed fields and a valid checksum (a well-formed foreign file)."""
    raw = path.read_bytes()
    fields = list(rp._HEADER_FIELDS.unpack_from(raw))
    names = ["magic", "version", "header_length", "hash_id", "k_probes", "m_bits",
             "expected_entries", "fp_rate", "epoch", "key", "owner"]
    for name, value in changes.items():
        fields[names.index(name)] = value
    packed = rp._HEADER_FIELDS.pack(*fields)
    checksum = hashlib.blake2b(packed, digest_size=32).digest()
    _damage(path, 0, packed + checksum)


@pytest.mark.parametrize("damage,message", [
    (lambda p: os.truncate(p, p.stat().st_size - 8), "truncated"),
    (lambda p: os.truncate(p, 100), "truncated"),
    (lambda p: os.truncate(p, 0), "bad magic"),
    (lambda p: os.truncate(p, 4), "truncated"),
    (lambda p: open(p, "ab").write(b"\0" * 8), "oversized"),
    (lambda p: _damage(p, 0, b"NOTMAGIC"), "bad magic"),
    (lambda p: _damage(p, 30, b"\xff"), "checksum"),
    (lambda p: _damage(p, 60, b"\x01"), "checksum"),  # inside the key
    (lambda p: _rewrite_header(p, version=2), "version 2"),
    (lambda p: _rewrite_header(p, k_probes=0), "invalid parameters"),
    (lambda p: _rewrite_header(p, m_bits=100), "invalid parameters"),
    (lambda p: _rewrite_header(p, hash_id=9), "unsupported layout"),
])
def test_damaged_files_are_refused_never_reset(tmp_path, damage, message):
    path = tmp_path / "replay-1.bloom"
    ReplayFilter.create(path, 1000, epoch=1).close()
    damage(path)
    before = path.read_bytes()
    with pytest.raises(ReplayFilterError, match=message) as info:
        ReplayFilter.open(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before, "a refused file must be left as it is"


def test_foreign_epoch_or_owner_is_refused(tmp_path):
    path = tmp_path / "replay-1.bloom"
    ReplayFilter.create(path, 1000, epoch=1, owner=b"\x11" * 32).close()
    with pytest.raises(ReplayFilterError, match="epoch 1, expected 2"):
        ReplayFilter.open(path, epoch=2)
    with pytest.raises(ReplayFilterError, match="owner"):
        ReplayFilter.open(path, owner=b"\x22" * 32)
    ReplayFilter.open(path, epoch=1, owner=b"\x11" * 32).close()


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ReplayFilterError, match="cannot open"):
        ReplayFilter.open(tmp_path / "nope.bloom")
    with pytest.raises(ReplayFilterError, match="nodir.*cannot create"):
        ReplayFilter.create(tmp_path / "nodir" / "replay-1.bloom", 1000)


CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from katzenpost.server.replay import ReplayFilter
    path, count = sys.argv[1], int(sys.argv[2])
    filt = ReplayFilter.create(path, 100000, 1e-6, epoch=11)
    tags = np.random.default_rng(1234).integers(0, 256, (count, 32), dtype=np.uint8)
    out = np.zeros(256, np.uint8)
    for base in range(0, count, 256):
        filt.check_and_add(tags[base:base + 256], None, out[:len(tags[base:base + 256])])
    print("added", filt.added, flush=True)
    time.sleep(60)
""")


def test_sigkilled_process_loses_no_added_tag(tmp_path):
    path = tmp_path / "replay-11.bloom"
    count = 5000
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(count)],
                             stdout=subprocess.PIPE, env=env, text=True)
    watchdog = threading.Timer(60, child.kill)  # a child stuck before printing cannot hang the test
    watchdog.start()
    try:
        line = child.stdout.readline()
        assert line.strip() == f"added {count}", line
    finally:
        child.kill()  # SIGKILL: no close(), no msync, no atexit
        child.wait(timeout=10)
        watchdog.cancel()
    assert child.returncode == -9
    tags = np.random.default_rng(1234).integers(0, 256, (count, 32), dtype=np.uint8)
    with ReplayFilter.open(path, epoch=11) as filt:
        out = np.zeros(count, np.uint8)
        assert filt.contains(tags, out) == count
        assert filt.added == count


def test_probing_bits_that_are_already_set_writes_nothing():
    """A replayed (or colliding) tag must not write its words again: on the mmap'd filter file
    each such write would dirty a page for nothing. Checked with the bit pages made read-only,
    in a child process (a write there is a segmentation fault)."""
    import subprocess
    import sys
    code = """
import ctypes, mmap, numpy as np
from katzenpost._core.replay import BloomKernel
m_bits = 64 * 4096
region = mmap.mmap(-1, m_bits // 8)
bits = np.frombuffer(region, dtype=np.uint64)
kernel = BloomKernel(bits, m_bits, 7, bytes(range(16)), np.zeros(1, np.uint64))
tags = np.random.default_rng(5).integers(0, 256, (64, 32), dtype=np.uint8)
out = np.zeros(64, np.uint8)
assert kernel.check_and_add(tags, None, out) == 0
libc = ctypes.CDLL(None, use_errno=True)
address = bits.ctypes.data  # page-aligned: an anonymous mmap starts on a page
assert libc.mprotect(ctypes.c_void_p(address), ctypes.c_size_t(m_bits // 8), 1) == 0  # PROT_READ
assert kernel.check_and_add(tags, None, out) == 64 and out.all()
print("no write")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "no write" in result.stdout, (result.returncode, result.stderr)
