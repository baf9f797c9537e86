"""The deterministic reader behind the voting topology: keystream, Int63 and Go's Perm."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from voting_lib_support import load

from katzenpost.voting.errors import VotingError
from katzenpost.voting.rand import DeterministicRand

READERS = load("rng")["readers"]


@pytest.mark.parametrize("vector", READERS, ids=["zeros", "counting"])
def test_keystream_and_first_int63_match_the_reference(vector):
    key = bytes.fromhex(vector["key_hex"])
    assert DeterministicRand(key).read(16).hex() == vector["first16_hex"]
    assert DeterministicRand(key).int63() == vector["first_int63"]


@pytest.mark.parametrize("vector", READERS, ids=["zeros", "counting"])
def test_consecutive_perms_continue_the_keystream(vector):
    rng = DeterministicRand(bytes.fromhex(vector["key_hex"]))
    assert [rng.perm(n) for n in vector["perm_sizes"]] == vector["perms"]


def test_int63_is_little_endian_with_the_top_bit_cleared():
    key = bytes.fromhex(READERS[0]["key_hex"])
    raw = DeterministicRand(key).read(16)
    rng = DeterministicRand(key)
    assert rng.int63() == int.from_bytes(raw[:8], "little") & (2**63 - 1)
    assert rng.int63() == int.from_bytes(raw[8:16], "little") & (2**63 - 1)


@given(st.lists(st.integers(0, 200), max_size=8))
@settings(max_examples=50, deadline=None)
def test_reads_of_any_split_give_one_continuous_stream(sizes):
    key = bytes(range(32))
    whole = DeterministicRand(key).read(sum(sizes))
    rng = DeterministicRand(key)
    assert b"".join(rng.read(n) for n in sizes) == whole


def test_perm_consumes_eight_bytes_per_draw_and_perm0_nothing():
    key = bytes(32)
    rng = DeterministicRand(key)
    rng.perm(0)
    rng.perm(1)  # one Int31n(1) draw, result always 0
    assert rng.read(8) == DeterministicRand(key).read(16)[8:]


def test_int31n_power_of_two_masks_and_others_reject_above_the_limit():
    key = bytes(range(32))
    first = DeterministicRand(key).int31()
    assert DeterministicRand(key).int31n(8) == first & 7
    # 3 is not a power of two: the draw is kept (it is below the limit) and reduced mod 3.
    limit = 2**31 - 1 - (2**31 % 3)
    assert first <= limit
    assert DeterministicRand(key).int31n(3) == first % 3


@given(st.integers(0, 300), st.binary(min_size=32, max_size=32))
@settings(max_examples=40, deadline=None)
def test_perm_is_a_permutation(n, key):
    assert sorted(DeterministicRand(key).perm(n)) == list(range(n))


@pytest.mark.parametrize("key", [b"", bytes(31), bytes(33), "x" * 32, None])
def test_bad_keys_are_refused(key):
    with pytest.raises(VotingError):
        DeterministicRand(key)


@pytest.mark.parametrize("call", [lambda r: r.int31n(0), lambda r: r.int31n(-1),
                                  lambda r: r.int31n(2**31), lambda r: r.perm(-1),
                                  lambda r: r.read(-1)])
def test_bad_bounds_are_refused(call):
    with pytest.raises(VotingError):
        call(DeterministicRand(bytes(32)))


@pytest.mark.parametrize("seed", range(8))
def test_int31n_rejection_takes_the_first_draw_below_the_limit(seed):
    # With k = 2^30 + 1 about half the draws exceed the limit (2^30) and must be skipped.
    key = bytes([seed]) * 32
    k = 2**30 + 1
    raw = DeterministicRand(key).read(8 * 64)
    draws = [(int.from_bytes(raw[i:i + 8], "little") & (2**63 - 1)) >> 32
             for i in range(0, len(raw), 8)]
    expected = next(v for v in draws if v <= 2**30) % k
    rng = DeterministicRand(key)
    assert rng.int31n(k) == expected
    skipped = next(i for i, v in enumerate(draws) if v <= 2**30)
    assert rng.int31() == draws[skipped + 1]


def test_some_seed_exercises_the_rejection_path():
    rejected = [s for s in range(8)
                if (int.from_bytes(DeterministicRand(bytes([s]) * 32).read(8), "little")
                    & (2**63 - 1)) >> 32 > 2**30]
    assert rejected
