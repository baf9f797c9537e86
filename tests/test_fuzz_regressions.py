"""Inputs the fuzzers found, kept as regression tests, and the committed seed corpus replayed
through every harness in-process (no atheris needed here). A finding's entry names the harness,
the input bytes and what was wrong; docs/fuzzing.md lists the findings and their fixes."""
from pathlib import Path

import pytest

from tests.fuzz import HARNESSES
from tests.fuzz.runner import harness_module

CORPUS = Path(__file__).parent / "fuzz" / "corpus"

# (harness, input, what the fuzzer found)
FINDINGS = [
    ("wire_commands",
     bytes.fromhex("110000000826" "02" "01" "00000005") + bytes(0x826 - 6),
     "harness: a MessageEmpty with a non-zero queue-size hint re-encodes with hint 0 (the hint is "
     "ignored on receive, as documented), so the round trip compares the hint as sent"),
]


@pytest.mark.parametrize("name", list(HARNESSES))
def test_seed_corpus_passes(name):
    module = harness_module(name)
    seeds = sorted((CORPUS / name).iterdir())
    assert seeds, f"no committed seeds for {name} (python -m tests.fuzz --make-seeds {name})"
    for path in seeds:
        data = path.read_bytes()
        assert len(data) <= module.MAX_LEN, path.name
        module.TestOneInput(data)


@pytest.mark.parametrize("name,data,why", FINDINGS, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(FINDINGS)])
def test_finding_stays_fixed(name, data, why):
    harness_module(name).TestOneInput(data)


def test_every_harness_has_seeds_and_documents_itself():
    for name in HARNESSES:
        module = harness_module(name)
        assert "Documented outcome" in " ".join((module.__doc__ or "").split()), name
        assert callable(module.TestOneInput) and module.MAX_LEN > 0
