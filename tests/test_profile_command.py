"""PROFILE <seconds> (our management extension) over a real management socket with a fake node,
and the recorder behind it: refused unless enabled, bounded in time, stack count, depth and
recordings kept, one at a time, files complete and mode 0600, bad arguments answered 501."""
import os
import stat
import threading
import time
import xml.etree.ElementTree as ET

import pytest

from katzenpost.server import flamegraph, profiler
from katzenpost.server.profiler import ProfileBusy, Profiler
from management_support import FakeControl
from test_management_commands import session

SYNTAX = "501 Syntax error in parameters or arguments"
DISABLED = "554 Transaction failed: profiling is disabled (Debug.EnableProfiling)"
BUSY = "554 Transaction failed: a profile is already being recorded"
WAIT = 15.0


def wait_for_file(path, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def read_folded(path):
    """[(frames, samples)] from a .folded file; every line must be 'a;b;c <int>'."""
    rows = []
    for line in open(path, encoding="utf-8").read().splitlines():
        stack, _, count = line.rpartition(" ")
        assert stack and count.isdigit(), line
        rows.append((stack.split(";"), int(count)))
    return rows


@pytest.fixture
def control(tmp_path):
    ctl = FakeControl()
    ctl.profiler = Profiler(tmp_path / "data")
    os.mkdir(tmp_path / "data", 0o700)
    yield ctl
    ctl.profiler.stop()


def test_profile_is_refused_unless_enabled(tmp_path):
    control = FakeControl()                       # no profiler: Debug.EnableProfiling is off

    async def body(client):
        assert await client.command("PROFILE 1") == DISABLED
        assert (await client.command("STATUS")).startswith("250 {")     # the session goes on
    session(tmp_path, control, body)
    assert not [n for n in os.listdir(tmp_path) if n.startswith("profile-")]


@pytest.mark.parametrize("line", ["PROFILE", "PROFILE 0", "PROFILE 61", "PROFILE x", "PROFILE -1",
                                  "PROFILE 1 2", "PROFILE 1.5", "PROFILE 99999999999999999999999"])
def test_bad_durations_are_501_and_start_nothing(tmp_path, control, line):
    async def body(client):
        assert await client.command(line) == SYNTAX
    session(tmp_path, control, body)
    assert not control.profiler.running
    assert os.listdir(tmp_path / "data") == []


def test_profile_writes_private_files_when_done_and_refuses_a_second_meanwhile(tmp_path, control):
    spinning = threading.Event()

    def busy_worker():                            # a thread with a recognisable stack to sample
        while not spinning.is_set():
            sum(range(200))

    worker = threading.Thread(target=busy_worker, name="test-busy-worker", daemon=True)
    worker.start()
    replies = []

    async def body(client):
        replies.append(await client.command("profile 1"))      # the verb in any case
        replies.append(await client.command("PROFILE 1"))      # while the first one runs
    started = time.monotonic()
    try:
        session(tmp_path, control, body)
        assert replies[0].startswith("250 ") and replies[1] == BUSY
        path = replies[0][4:]
        assert os.path.dirname(path) == str(tmp_path / "data") and path.endswith(".folded")
        wait_for_file(path)
    finally:
        spinning.set()
        worker.join(5)
    assert time.monotonic() - started < 1 + WAIT
    control.profiler.stop()
    assert not control.profiler.running                         # bounded: it ended by itself
    svg = path[:-len(".folded")] + ".svg"
    for name in (path, svg):
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path / "data")) == sorted(map(os.path.basename, (path, svg)))
    rows = read_folded(path)
    threads = {frames[0] for frames, _ in rows}
    assert "test-busy-worker" in threads
    busy = [frames for frames, _ in rows if frames[0] == "test-busy-worker"]
    assert any(any(".<locals>.busy_worker (tests/test_profile_command.py:" in f for f in frames) for frames in busy)
    samples = sum(count for frames, count in rows if frames[0] == "test-busy-worker")
    assert 20 <= samples <= 1 / profiler.INTERVAL_S + 20     # ~200 samples a second, never more
    assert "katzenpost-profiler" not in threads                 # never itself
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg") and "samples" in ET.tostring(root, encoding="unicode")

    async def again(client):                     # the next one is accepted once it ended
        reply = await client.command("PROFILE 1")
        assert reply.startswith("250 ") and reply[4:] != path
    session(tmp_path, control, again)


def test_stop_ends_a_recording_early_and_old_recordings_are_pruned(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rec = Profiler(data, keep=2)
    paths = []
    for _ in range(3):
        paths.append(rec.start(60))
        with pytest.raises(ProfileBusy):
            rec.start(1)
        t0 = time.monotonic()
        rec.stop()
        assert time.monotonic() - t0 < 5 and not rec.running
        assert os.path.exists(paths[-1])
        time.sleep(0.02)                         # distinct modification times
    assert len(set(paths)) == 3
    assert sorted(os.listdir(data)) == sorted(
        os.path.basename(p[:-len(".folded")]) + ext for p in paths[1:] for ext in (".folded", ".svg"))
    with pytest.raises(ValueError):
        rec.start(61)
    with pytest.raises(ValueError):
        rec.start(True)


def record_briefly(directory):
    rec = Profiler(directory)
    path = rec.start(60)
    time.sleep(0.2)
    rec.stop()
    return read_folded(path)


def test_stack_depth_and_count_are_bounded(tmp_path, monkeypatch):
    release = threading.Event()

    def deep(n):
        if n:
            return deep(n - 1)
        release.wait(10)

    thread = threading.Thread(target=deep, args=(40,), name="test-deep", daemon=True)
    thread.start()
    try:
        monkeypatch.setattr(profiler, "MAX_DEPTH", 8)
        (tmp_path / "a").mkdir()
        rows = record_briefly(tmp_path / "a")
        assert all(len(frames) <= 1 + 1 + 8 for frames, _ in rows)     # thread, marker, 8 frames
        [deep_row] = [frames for frames, _ in rows if frames[0] == "test-deep"]
        assert deep_row[1] == "[deeper]" and deep_row[-1].startswith("Condition.wait (")
        assert any(".<locals>.deep (tests/test_profile_command.py:" in f for f in deep_row)

        monkeypatch.setattr(profiler, "MAX_STACKS", 1)
        (tmp_path / "b").mkdir()
        rows = record_briefly(tmp_path / "b")
        assert sum(1 for frames, _ in rows if frames[-1] != "[other stacks]") == 1
        assert any(frames[-1] == "[other stacks]" for frames, _ in rows)
    finally:
        release.set()
        thread.join(5)


def test_collapsed_lines_and_svg():
    stacks = {("io", "main", "a;b"): 3, ("io", "main", "c"): 5, ("w", "x" * 400): 1}
    assert flamegraph.collapsed_lines(stacks) == ["io;main;c 5", "io;main;a:b 3", "w;" + "x" * 400 + " 1"]
    svg = flamegraph.render_svg(stacks, "t <&>")
    root = ET.fromstring(svg)
    titles = [el.text for el in root.iter() if el.tag.endswith("title")]
    texts = [el.text for el in root.iter() if el.tag.endswith("text")]
    assert "main (8 samples, 88.89%)" in titles and texts[0] == "t <&> (9 samples)"
    # Frames narrower than the minimum are not drawn: the size is bounded whatever the input.
    many = {("t", f"f{i}"): 1 for i in range(100_000)}
    assert len(flamegraph.render_svg(many, "many")) < 2_000_000


def test_the_files_of_the_worst_recording_stay_within_the_documented_size():
    """MAX_STACKS distinct stacks, each MAX_DEPTH distinct frames of MAX_LABEL characters and the
    '[deeper]' marker: the bound docs/operations.md gives (12 MiB .folded, 24 MiB .svg)."""
    stacks = {(f"thread-{i % 8}", "[deeper]",
               *(f"f{i:05d}_{j:02d}".ljust(profiler.MAX_LABEL, "x") for j in range(profiler.MAX_DEPTH))): 6
              for i in range(profiler.MAX_STACKS)}
    folded = "".join(line + "\n" for line in flamegraph.collapsed_lines(stacks))
    svg = flamegraph.render_svg(stacks, "worst")
    assert len(folded.encode()) < 12 * 2**20 and len(svg.encode()) < 24 * 2**20
    assert folded.count("\n") == profiler.MAX_STACKS
