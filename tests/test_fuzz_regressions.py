"""Inputs the fuzzers found, kept as regression tests, and the committed seed corpus replayed
through every harness in-process (no atheris needed here). A finding's entry names the harness,
the input bytes and what was wrong; docs/fuzzing.md lists the findings and their fixes."""
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from katzenpost.provider.kaetzchen.http11 import HTTPError, ResponseParser
from tests.fuzz import HARNESSES
from tests.fuzz.runner import harness_module

CORPUS = Path(__file__).parent / "fuzz" / "corpus"

# (harness, input, what the fuzzer found)
FINDINGS = [
    ("wire_commands",
     bytes.fromhex("110000000826" "02" "01" "00000005") + bytes(0x826 - 6),
     "harness: a MessageEmpty with a non-zero queue-size hint re-encodes with hint 0 (the hint is "
     "ignored on receive, as documented), so the round trip compares the hint as sent"),
    ("cbor_plugin",
     bytes.fromhex("005d485454502f312e3120323030204f4b2e0a436fffffff7cff74696f6effffffffffffffffff2f6f63"
                   "0100000000000000616d0d0a5472616e736665722d456e636f64696e673a206368756e6b65640d0a0d0a"
                   "2d32380d0a656e646f6ffff77800000000000000ffffffffffffff2500000000000000000000006e0054"
                   "54502f72"),
     "hang: a chunked plugin response with chunk size '-28' (int() takes the sign) moved the "
     "dechunker backwards forever; fixed in http11 (hex digits only)"),
]
# A finding that was a hang must fail, not hang, if it comes back.
FINDING_TIMEOUT_S = 20


@contextmanager
def _deadline(seconds):
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s (a hang came back)")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


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
    module = harness_module(name)
    with _deadline(FINDING_TIMEOUT_S):
        module.TestOneInput(data)


@pytest.mark.parametrize("size", [b"-28", b"+1", b"1_0", b" ", b"0x10", b"1" * 17])
def test_plugin_chunk_size_must_be_hex_digits(size):
    parser = ResponseParser()
    with _deadline(FINDING_TIMEOUT_S), pytest.raises(HTTPError, match="bad chunk size"):
        parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size
                    + b"\r\n" + b"x" * 64 + b"\r\n0\r\n\r\n")


def test_plugin_chunk_size_with_extension_and_blanks_still_reads():
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"a ;name=value\r\n0123456789\r\n0\r\n\r\n")
    assert parser.done and parser.body == b"0123456789"


def test_every_harness_has_seeds_and_documents_itself():
    for name in HARNESSES:
        module = harness_module(name)
        assert "Documented outcome" in " ".join((module.__doc__ or "").split()), name
        assert callable(module.TestOneInput) and module.MAX_LEN > 0


# Imports every harness and replays its seeds, in a fresh interpreter (an import-time change
# would be hidden in this process by an earlier import), then prints the loggers whose level,
# handlers or propagation differ from a logger nobody configured.
_LOGGING_PROBE = """
import logging
from tests.fuzz import HARNESSES
from tests.fuzz.runner import SEEDS, harness_module
def state():
    loggers = logging.Logger.manager.loggerDict.values()
    return {l.name: (l.level, l.propagate, len(l.handlers)) for l in loggers
            if isinstance(l, logging.Logger)}
before = state()
for name in HARNESSES:
    module = harness_module(name)
    for path in sorted((SEEDS / name).iterdir()):
        module.TestOneInput(path.read_bytes())
changed = {n: s for n, s in state().items() if s != before.get(n, (logging.NOTSET, True, 0))}
print(sorted(changed.items()))
"""


def test_harnesses_leave_logging_as_found():
    """A harness that silences or diverts a logger does it for one input only: these tests share
    the pytest process with log-content tests (a silenced katzenpost.wire made the peer-address
    privacy test fail when it ran after the seed replay)."""
    proc = subprocess.run([sys.executable, "-c", _LOGGING_PROBE], cwd=CORPUS.parents[2],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]", "loggers left changed: " + proc.stdout
