"""Runs one harness under atheris (libFuzzer): instrumentation, corpus directories, arguments.

The working corpus (inputs libFuzzer finds) goes to build/fuzz/<name>/corpus, crash inputs to
build/fuzz/<name>/ unless told otherwise; the committed seeds in tests/fuzz/corpus/<name>/ are
read, never written.
"""
import importlib
import os
import sys
from pathlib import Path

from tests.fuzz import HARNESSES

ROOT = Path(__file__).resolve().parents[2]
SEEDS = Path(__file__).resolve().parent / "corpus"
WORK = ROOT / "build" / "fuzz"
# Python packages whose bytecode is instrumented for coverage feedback (the parsers and the
# pure-Python libraries they stand on).
INSTRUMENT = ["katzenpost", "tests.fuzz", "cbor2", "tomllib", "json"]
# A single input running longer than this is a hang (a finding, like a crash).
INPUT_TIMEOUT_S = 10


def harness_module(name: str):
    if name not in HARNESSES:
        raise SystemExit(f"unknown harness {name!r}; python -m tests.fuzz --list")
    return importlib.import_module(f"tests.fuzz.harnesses.{name}")


def libfuzzer_args(name, module, *, seconds, runs, seed, work, artifacts, extra):
    work.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    args = [f"tests.fuzz:{name}", f"-max_len={module.MAX_LEN}", f"-timeout={INPUT_TIMEOUT_S}",
            "-rss_limit_mb=2048", f"-artifact_prefix={artifacts}{os.sep}", "-print_final_stats=1"]
    if seconds is not None:
        args.append(f"-max_total_time={int(seconds)}")
    if runs is not None:
        args.append(f"-runs={int(runs)}")
    if seed is not None:
        args.append(f"-seed={int(seed)}")
    args += list(extra)
    seeds = SEEDS / name
    args += [str(work)] + ([str(seeds)] if seeds.is_dir() else [])
    return args


def run(name, *, seconds=None, runs=None, seed=None, work=None, artifacts=None, extra=(),
        instrument=True):
    """Fuzz `name` in this process (atheris takes over; returns only through sys.exit)."""
    import atheris

    if instrument:
        with atheris.instrument_imports(include=INSTRUMENT):
            module = harness_module(name)
    else:
        module = harness_module(name)
    work = Path(work) if work else WORK / name / "corpus"
    artifacts = Path(artifacts) if artifacts else WORK / name
    args = libfuzzer_args(name, module, seconds=seconds, runs=runs, seed=seed, work=work,
                          artifacts=artifacts, extra=extra)
    print(f"fuzz: {name}: {' '.join(args[1:])}", file=sys.stderr, flush=True)
    atheris.Setup(args, module.TestOneInput)
    atheris.Fuzz()


def reproduce(name, paths):
    """Run inputs through a harness without atheris: tracebacks as Python prints them."""
    module = harness_module(name)
    failures = 0
    for path in paths:
        data = Path(path).read_bytes()
        try:
            module.TestOneInput(data)
        except Exception:
            failures += 1
            print(f"{path}: FAILED ({len(data)} bytes: {data[:64].hex()}...)", file=sys.stderr)
            import traceback
            traceback.print_exc()
        else:
            print(f"{path}: ok")
    return 1 if failures else 0
