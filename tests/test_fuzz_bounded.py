"""Bounded coverage-guided fuzzing in CI: every harness of tests/fuzz runs for a few seconds
under atheris (libFuzzer, Python coverage instrumentation) in a subprocess, from its committed
seeds, with a fixed libFuzzer seed. A crash, a hang or a failed assertion in a harness makes
libFuzzer exit non-zero; the test then fails with the input that did it (hex) and the tail of
the fuzzer's output. The long runs are `python -m tests.fuzz NAME --seconds N` (docs/fuzzing.md).

The harnesses run two at a time (the CI machine has two cores), started when the first of these
tests asks for its result.
"""
import os
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fuzz import HARNESSES

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 3          # -max_total_time per harness
MAX_RUNS = 200_000   # -runs: a cap the fast harnesses reach before the time is up
LIBFUZZER_SEED = 20261205
WALL_LIMIT = 120     # a harness subprocess still running after this is killed: a hang
_DONE = re.compile(r"^#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+)", re.M)


def _run(name: str, work: Path) -> dict:
    artifacts = work / "artifacts"
    cmd = [sys.executable, "-m", "tests.fuzz", name, "--seconds", str(SECONDS), "--runs",
           str(MAX_RUNS), "--seed", str(LIBFUZZER_SEED), "--work", str(work / "corpus"),
           "--artifacts", str(artifacts)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=WALL_LIMIT,
                              stdin=subprocess.DEVNULL)
        code, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        code = "timeout"
        output = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
    crashes = sorted(artifacts.glob("*")) if artifacts.is_dir() else []
    return {"code": code, "output": output,
            "crashes": [(path.name, path.read_bytes()) for path in crashes]}


class _Pool:
    """Starts every harness on first use, two at a time; each test waits for its own."""

    def __init__(self, base: Path):
        self._base = base
        self._lock = threading.Lock()
        self._futures = None
        self._executor = None

    def result(self, name: str) -> dict:
        with self._lock:
            if self._futures is None:
                self._executor = ThreadPoolExecutor(max_workers=2)
                self._futures = {n: self._executor.submit(_run, n, self._base / n) for n in HARNESSES}
        return self._futures[name].result()

    def close(self):
        if self._executor is not None:
            for future in self._futures.values():
                future.cancel()
            self._executor.shutdown(wait=True)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    try:
        import atheris  # noqa: F401
    except ImportError:
        pytest.fail("atheris is not installed: scripts/install.sh --test installs the test extra")
    runner = _Pool(tmp_path_factory.mktemp("fuzz"))
    try:
        yield runner
    finally:
        runner.close()


def _report(name: str, result: dict) -> str:
    lines = [f"fuzz harness {name} exited with {result['code']}"]
    for file_name, data in result["crashes"]:
        lines.append(f"input {file_name} ({len(data)} bytes): {data.hex()}")
    lines.append("reproduce: python -m tests.fuzz " + name + " --reproduce <file>")
    lines.append("--- fuzzer output (tail) ---")
    lines.append("\n".join(result["output"].splitlines()[-60:]))
    return "\n".join(lines)


@pytest.mark.parametrize("name", list(HARNESSES))
def test_fuzz_harness_bounded(pool, name):
    result = pool.result(name)
    assert result["code"] == 0 and not result["crashes"], _report(name, result)
    done = _DONE.search(result["output"])
    assert done, "libFuzzer printed no DONE line:\n" + result["output"][-3000:]
    runs, coverage = int(done.group(1)), int(done.group(2))
    # Coverage-guided execution really ran: beyond the seeds, with instrumented Python edges.
    assert runs > len(list((ROOT / "tests" / "fuzz" / "corpus" / name).iterdir()))
    assert coverage > 0


def test_libfuzzer_jobs_start_the_harness_as_children(tmp_path):
    """`python -m tests.fuzz NAME -- -jobs=N` (docs/fuzzing.md): libFuzzer starts each job as the
    shell command argv[0] ARGS, which must run the same harness (runner.child_command)."""
    pytest.importorskip("atheris")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "tests.fuzz", "wire_commands", "--runs", "300", "--seed",
           str(LIBFUZZER_SEED), "--work", str(tmp_path / "corpus"), "--artifacts",
           str(tmp_path / "artifacts"), "--", "-jobs=1"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=WALL_LIMIT, stdin=subprocess.DEVNULL)   # job logs: cwd/fuzz-N.log
    log = tmp_path / "fuzz-0.log"
    assert proc.returncode == 0 and log.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert _DONE.search(log.read_text()), log.read_text()[-2000:]
