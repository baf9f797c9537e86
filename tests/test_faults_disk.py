"""Faults of the node's own storage, with real processes: a DataDir on a full file system (a small
tmpfs, filled up) and a SIGKILL right after replay tags were added. What must hold: nothing that
was acknowledged or added is lost, nothing half-written is left, every refusal is a clear error,
never a crash (docs/reliability.md, "Faults")."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

import numpy as np

from fault_support import fill_up, kill_9, leftovers, small_tmpfs
from node_support import console_script, free_port, private_dir
from katzenpost import keys
from katzenpost.pki.epochtime import EpochClock
from katzenpost.server import mixkeys, replay

TAGS = 20_000          # over 1 M filter entries' ~970 pages: nearly every page gets a first tag


def tags_for(seed: int, count: int, start: int = 0) -> np.ndarray:
    """Deterministic 32-byte tags, so a parent process can check what its killed child added."""
    rows = b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(start, start + count))
    return np.frombuffer(rows, np.uint8).reshape(count, 32).copy()


def present(path, seed: int, count: int) -> int:
    with replay.ReplayFilter.open(path) as bloom:
        out = np.zeros(count, np.uint8)
        return bloom.contains(tags_for(seed, count), out)


CHILD_ADD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    from katzenpost.server import replay
    from test_faults_disk import tags_for
    bloom = replay.ReplayFilter.open(sys.argv[2])
    batch = int(sys.argv[4])
    for start in range(0, int(sys.argv[3]), batch):
        out = np.zeros(batch, np.uint8)
        bloom.check_and_add(tags_for(7, batch, start), None, out)
        print(start + batch, flush=True)      # added: the parent may kill us from here on
    if len(sys.argv) > 5:
        import time
        time.sleep(60)
""")


def add_in_child(path, count: int, batch: int, hang: bool = False) -> subprocess.Popen:
    tests = os.path.dirname(os.path.abspath(__file__))
    args = [sys.executable, "-c", CHILD_ADD, tests, str(path), str(count), str(batch)] + (["hang"] if hang else [])
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_replay_filter_keeps_working_when_its_file_system_fills_up(tmp_path):
    """The filter's pages are written through a shared mapping; were the file sparse, the first
    tag in a never-touched page would need a block from a full file system, and the kernel
    answers that with SIGBUS (the node died). Its blocks are allocated when it is created."""
    with small_tmpfs(tmp_path / "fs", 8) as fs:
        path = fs / "replay-1.bloom"
        replay.ReplayFilter.create(path, 1 << 20, epoch=1).close()
        fill_up(fs)
        child = add_in_child(path, TAGS, 1000)
        try:
            out, err = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
        assert child.returncode == 0, f"exit {child.returncode}: {err[-2000:]}"
        assert out.split()[-1] == str(TAGS)
        assert present(path, 7, TAGS) == TAGS


def test_a_replay_filter_cannot_be_created_on_a_full_file_system_and_leaves_nothing(tmp_path):
    with small_tmpfs(tmp_path / "fs", 2) as fs:
        fill_up(fs)
        path = fs / "replay-3.bloom"
        try:
            replay.ReplayFilter.create(path, 1 << 20, epoch=3)
        except replay.ReplayFilterError as exc:
            assert "No space left on device" in str(exc) and str(path) in str(exc)
        else:
            raise AssertionError("a filter was created on a full file system")
        assert not path.exists() and leftovers(fs) == []


def test_tags_added_just_before_a_kill_9_are_still_there(tmp_path):
    """kill -9 right after check_and_add returned (the node forwards a packet only after that):
    the bits live in the page cache shared with the file, so none is lost. Only a power loss
    between two syncs (60 s) can lose tags."""
    path = tmp_path / "replay-5.bloom"
    replay.ReplayFilter.create(path, 1 << 20, epoch=5).close()
    child = add_in_child(path, 5000, 250, hang=True)
    try:
        added = 0
        while added < 2500:
            added = int(child.stdout.readline())
        assert kill_9(child) == -9
        added = max([added] + [int(line) for line in child.stdout.read().split()])
    finally:
        if child.poll() is None:
            child.kill()
    assert present(path, 7, added) == added


def test_mix_keys_on_a_full_data_dir_fail_cleanly_and_recover(tmp_path):
    clock = EpochClock(20)
    now = clock.current()
    with small_tmpfs(tmp_path / "fs", 24) as fs:
        store = mixkeys.MixKeys(fs, clock, expected_entries=1 << 20)
        store.start()                                       # keys now .. now+2
        assert sorted(store.keys) == [now, now + 1, now + 2]
        out = np.zeros(TAGS, np.uint8)
        assert store.keyset_at(clock.unix_now()).filters[0].check_and_add(tags_for(9, TAGS), None, out) == 0
        filler = fill_up(fs)
        try:
            store.generate(now + 1)                         # needs the key of now+3
        except mixkeys.MixKeyError as exc:
            assert f"epoch {now + 3}" in str(exc) and "No space left on device" in str(exc)
        else:
            raise AssertionError("a mix key was created on a full DataDir")
        # Nothing half-made: no key without its filter, no filter without its key, no temp file.
        assert sorted(store.keys) == [now, now + 1, now + 2]
        assert sorted(mixkeys.mix_key_epoch(p) for p in fs.glob("mixkey-*")) == [now, now + 1, now + 2]
        assert sorted(replay.list_replay_filters(fs)) == [now, now + 1, now + 2]
        assert leftovers(fs) == []
        filler.unlink()
        assert store.generate(now + 1) is True
        assert sorted(store.keys) == [now, now + 1, now + 2, now + 3]
        store.close()
        # Everything reloads after a restart (the tags too).
        again = mixkeys.MixKeys(fs, clock, expected_entries=1 << 20)
        again.start()
        out[:] = 0
        assert again.keyset_at(clock.unix_now()).filters[0].check_and_add(tags_for(9, TAGS), None, out) == TAGS
        again.close()


def test_a_node_started_on_a_full_data_dir_stops_with_one_clear_error(tmp_path):
    with small_tmpfs(tmp_path / "fs", 4) as fs:
        data_dir = private_dir(fs / "mix")
        keys.load_or_create_identity_key(str(data_dir))
        keys.load_or_create_link_key(str(data_dir))
        config = tmp_path / "mix.toml"
        log_file = tmp_path / "mix.log"                    # off the full file system, to be read
        config.write_text(f'''[Server]
Identifier = "mix.example"
Addresses = ["127.0.0.1:{free_port()}"]
DataDir = "{data_dir}"
[Logging]
File = "{log_file}"
Level = "INFO"
[PKI]
  [PKI.Nonvoting]
  Address = "127.0.0.1:{free_port()}"
  PublicKey = "{keys.IdentityKey.generate().public.hex()}"
[Debug]
EpochPeriod = 20
''')
        fill_up(fs)
        result = subprocess.run([*console_script("katzenpost"), "-f", str(config)], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 1, result.stderr
        errors = [line for line in log_file.read_text().splitlines() if " ERRO " in line]
        assert len(errors) == 1, errors
        assert "Failed to initialize mix keys" in errors[0] and "No space left on device" in errors[0]
        assert "Traceback" not in result.stderr
        assert leftovers(data_dir) == []
        assert list(data_dir.glob("mixkey-*")) == [] and replay.list_replay_filters(data_dir) == {}


def test_a_publication_on_a_full_data_dir_is_retried_and_the_tick_goes_on(tmp_path, caplog):
    """The PKI worker posts for E+1 at the first tick of E, which needs the key of E+3: on a full
    DataDir that fails. The post is skipped with a warning and retried at the next tick (as the
    reference does), the rest of the tick still runs, and once space returns the post goes out."""
    import asyncio

    from test_pki_worker import FakeClient
    from katzenpost.pki.worker import NodeSelf, PKIWorker

    clock = EpochClock(20)
    epoch = clock.current()
    now = clock.epoch_start(epoch) + 1.0            # early in E: E+1 may still be posted
    identity, link = keys.IdentityKey.generate(), keys.LinkKey.generate()
    node = NodeSelf(identifier="mix.example", identity_seed=identity.seed, identity_public=identity.public,
                    link_public=link.public, addresses={"tcp4": ["127.0.0.1:1"]})
    with small_tmpfs(tmp_path / "fs", 24) as fs:
        store = mixkeys.MixKeys(fs, clock, expected_entries=1 << 20)
        store.start()
        client = FakeClient()
        worker = PKIWorker(node, client, store, clock)
        filler = fill_up(fs)
        asyncio.run(worker.tick(now))                # must not raise
        assert [e for e, _ in client.posts] == [epoch]
        assert "Failed to post descriptor for epoch %d (will retry)" % (epoch + 1) in caplog.text
        assert "No space left on device" in caplog.text
        filler.unlink()
        asyncio.run(worker.tick(now + 1.0))
        assert [e for e, _ in client.posts] == [epoch, epoch + 1]
        assert epoch + 3 in store.keys
        store.close()
