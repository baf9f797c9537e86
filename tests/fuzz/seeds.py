"""Writes the seed corpus: every harness's `seeds()` (valid inputs made from the project's own
code, keys derived from fixed labels) into tests/fuzz/corpus/<name>/<sha1 prefix>.

Run `python -m tests.fuzz --make-seeds [NAME ...]` after changing a harness's input layout and
commit the result; old seeds of the named harnesses are replaced.
"""
import hashlib

from tests.fuzz import HARNESSES
from tests.fuzz.runner import SEEDS, harness_module


def write_seeds(names=None) -> dict[str, int]:
    counts = {}
    for name in names or HARNESSES:
        module = harness_module(name)
        directory = SEEDS / name
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.iterdir():
            old.unlink()
        for label, data in sorted(module.seeds().items()):
            assert len(data) <= module.MAX_LEN, f"{name}/{label}: {len(data)} > MAX_LEN"
            module.TestOneInput(data)  # every seed must pass its own harness
            digest = hashlib.sha1(data).hexdigest()[:12]
            (directory / f"{label}-{digest}").write_bytes(data)
        counts[name] = len(list(directory.iterdir()))
    return counts
