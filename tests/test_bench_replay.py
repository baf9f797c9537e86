"""bench/bench_replay.py times what a node does: every probe is a tag never seen before."""
import importlib.util
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_replay.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_replay", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class RecordingFilter:
    def __init__(self):
        self.tags = []

    def check_and_add(self, tags, mask, out):
        assert tags.shape[1] == 32 and out.shape[0] >= tags.shape[0]
        self.tags.extend(bytes(t) for t in np.asarray(tags))
        return 0


def test_the_timed_loop_probes_only_fresh_tags():
    bench = load_bench()
    loops = 3 * bench.BATCHES + 5  # more than one chunk of fresh tags
    recorder = RecordingFilter()
    assert bench.time_filter(loops, recorder) >= 0
    assert len(recorder.tags) == loops * bench.BATCH
    assert len(set(recorder.tags)) == len(recorder.tags)


def test_the_two_thread_case_splits_fresh_tags_between_the_threads():
    bench = load_bench()
    recorder = RecordingFilter()
    batches = [tags[i * bench.BATCH:(i + 1) * bench.BATCH]
               for count, tags in bench.fresh_tag_batches(2 * bench.BATCHES + 1, seed=5)
               for i in range(count)]
    bench.add_all(recorder, batches)
    assert len(set(recorder.tags)) == len(recorder.tags) == (2 * bench.BATCHES + 1) * bench.BATCH
