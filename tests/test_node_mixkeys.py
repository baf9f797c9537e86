"""The node's mix-key store: files and modes, generation ahead, loading on restart, pruning with
the replay filters, the in-memory mode, and the keys handed to the workers around a rollover
(an injected clock)."""
import os
import stat

import numpy as np
import pytest

from katzenpost import keys, sphinx
from katzenpost.pki.epochtime import EpochClock
from katzenpost.server import replay
from katzenpost.server.mixkeys import (
    MemoryReplayFilter, MixKeyError, MixKeys, grace_period, mix_key_epoch, mix_key_path,
)

E = 20_000_000
PERIOD = 60
SMALL = 1024          # filter entries: tests need no 50 MB filters


class FakeTime:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clock_time():
    return FakeTime(EpochClock(PERIOD).epoch_start(E) + 20)


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "data"
    path.mkdir(mode=0o700)
    return path


def store(data_dir, clock_time, **kwargs):
    return MixKeys(data_dir, EpochClock(PERIOD, clock=clock_time), expected_entries=SMALL, **kwargs)


def files(data_dir):
    return sorted(p.name for p in data_dir.iterdir())


def tag_rows(*tags):
    return np.frombuffer(b"".join(tags), np.uint8).reshape(len(tags), 32)


def test_start_creates_now_to_now_plus_two_as_private_files(data_dir, clock_time):
    mix_keys = store(data_dir, clock_time)
    mix_keys.start()
    assert sorted(mix_keys.keys) == [E, E + 1, E + 2]
    assert files(data_dir) == sorted([f"mixkey-{e}.private.pem" for e in (E, E + 1, E + 2)]
                                     + [f"replay-{e}.bloom" for e in (E, E + 1, E + 2)])
    for path in data_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    private = keys.read_pem_key(str(mix_key_path(data_dir, E)), "X25519 PRIVATE KEY", 32)
    assert sphinx.public_key(private) == mix_keys.public_key(E)
    assert mix_keys.public_key(E + 3) is None
    mix_keys.close()


def test_restart_loads_the_same_keys_and_the_filters_remember(data_dir, clock_time):
    first = store(data_dir, clock_time)
    first.start()
    publics = {e: first.public_key(e) for e in first.keys}
    seen = np.zeros(1, np.uint8)
    tag = os.urandom(32)
    first.keys[E].filter.check_and_add(tag_rows(tag), None, seen)
    first.close()
    second = store(data_dir, clock_time)
    second.start()
    assert {e: second.public_key(e) for e in second.keys} == publics
    second.keys[E].filter.check_and_add(tag_rows(tag), None, seen)
    assert seen[0] == 1                                   # a replay across the restart
    second.close()


def test_stale_keys_are_purged_at_start_and_the_previous_one_kept(data_dir, clock_time):
    mix_keys = store(data_dir, clock_time)
    mix_keys.start()
    mix_keys.close()
    clock_time.now += 2 * PERIOD                          # now E+2: E is stale, E+1 the previous
    later = store(data_dir, clock_time)
    later.start()
    assert sorted(later.keys) == [E + 1, E + 2, E + 3, E + 4]
    assert not mix_key_path(data_dir, E).exists()
    assert not replay.replay_filter_path(data_dir, E).exists()
    later.close()


def test_generate_and_prune_follow_the_publications(data_dir, clock_time):
    mix_keys = store(data_dir, clock_time)
    mix_keys.start()
    assert mix_keys.generate(E + 1) is True               # publication for E+1: E+3 appears
    assert mix_keys.generate(E + 1) is False
    assert mix_keys.prune() is False                      # nothing is older than now-1
    clock_time.now += 2 * PERIOD
    assert mix_keys.prune() is True                       # E < now-1: gone, with its filter
    assert sorted(mix_keys.keys) == [E + 1, E + 2, E + 3]
    assert not mix_key_path(data_dir, E).exists()
    assert not replay.replay_filter_path(data_dir, E).exists()
    mix_keys.close()


def test_missing_filter_or_corrupt_key_refuses_to_start(data_dir, clock_time):
    mix_keys = store(data_dir, clock_time)
    mix_keys.start()
    mix_keys.close()
    replay.replay_filter_path(data_dir, E + 1).unlink()
    with pytest.raises(MixKeyError, match="replay filter .* missing"):
        store(data_dir, clock_time).start()
    mix_key_path(data_dir, E + 1).unlink()                # the operator discarded the key
    mix_key_path(data_dir, E).write_bytes(b"not a key")
    with pytest.raises(MixKeyError, match="mixkey-"):
        store(data_dir, clock_time).start()


def test_filter_of_another_key_is_refused(data_dir, clock_time):
    mix_keys = store(data_dir, clock_time)
    mix_keys.start()
    mix_keys.close()
    other = keys.encode_pem("X25519 PRIVATE KEY", os.urandom(32))
    keys.write_file_atomic(str(mix_key_path(data_dir, E)), other)
    with pytest.raises(MixKeyError, match="owner mismatch"):
        store(data_dir, clock_time).start()


def test_orphan_filter_without_its_key_is_replaced(data_dir, clock_time):
    replay.ReplayFilter.create(replay.replay_filter_path(data_dir, E + 2), SMALL, epoch=E + 2).close()
    mix_keys = store(data_dir, clock_time)
    mix_keys.start()
    assert E + 2 in mix_keys.keys
    mix_keys.close()


def test_in_memory_keys_never_touch_the_disk(data_dir, clock_time):
    mix_keys = store(data_dir, clock_time, in_memory=True)
    mix_keys.start()
    mix_keys.generate(E + 1)
    assert files(data_dir) == []
    seen = np.zeros(2, np.uint8)
    tag = os.urandom(32)
    flt = mix_keys.keys[E].filter
    assert isinstance(flt, MemoryReplayFilter)
    assert flt.check_and_add(tag_rows(tag, tag), None, seen) == 1 and list(seen) == [0, 1]
    private = mix_keys.keys[E].private
    mix_keys.close()
    assert files(data_dir) == [] and bytes(private) == bytes(32)   # zeroed at halt


def test_close_zeroes_every_key(data_dir, clock_time):
    mix_keys = store(data_dir, clock_time)
    mix_keys.start()
    privates = [k.private for k in mix_keys.keys.values()]
    mix_keys.close()
    assert all(bytes(p) == bytes(32) for p in privates)
    assert mix_keys.keys == {}


def test_keys_tried_around_the_rollover(data_dir, clock_time):
    clock = EpochClock(PERIOD)
    grace = grace_period(clock)
    assert grace == PERIOD / 8 and grace_period(EpochClock()) == 120.0
    mix_keys = store(data_dir, clock_time)
    mix_keys.start()
    start = clock.epoch_start(E)
    assert mix_keys.candidate_epochs(start + grace + 1) == [E]
    assert mix_keys.candidate_epochs(start + PERIOD - grace + 0.5) == [E, E + 1]
    # The previous key during the grace after the rollover (E is previous at E+1).
    assert mix_keys.candidate_epochs(start + PERIOD + 0.5) == [E + 1, E]
    assert mix_keys.candidate_epochs(start + PERIOD + grace + 0.5) == [E + 1]
    keyset = mix_keys.keyset_at(start + PERIOD - 1)
    assert keyset.keys.shape == (2, 32)
    assert bytes(keyset.keys[0]) == bytes(mix_keys.keys[E].private)
    assert keyset.filters == (mix_keys.keys[E].filter, mix_keys.keys[E + 1].filter)
    assert bytes(keyset.keys[0]).hex() not in repr(keyset)
    assert mix_keys.keyset_at(clock.epoch_start(E + 5)) is None     # no key for that epoch
    mix_keys.close()


def test_next_change_is_the_next_grace_boundary_or_rollover(data_dir, clock_time):
    clock = EpochClock(PERIOD)
    grace = grace_period(clock)
    mix_keys = store(data_dir, clock_time)
    start = clock.epoch_start(E)
    assert mix_keys.seconds_to_next_change(start + 1) == pytest.approx(grace - 1)
    assert mix_keys.seconds_to_next_change(start + 20) == pytest.approx(PERIOD - grace - 20)
    assert mix_keys.seconds_to_next_change(start + PERIOD - 1) == pytest.approx(1)


def test_file_names_parse_back():
    assert mix_key_epoch("mixkey-123.private.pem") == 123
    assert mix_key_epoch("mixkey-x.private.pem") is None
    assert mix_key_epoch("identity.private.pem") is None
