"""Runs one harness under atheris (libFuzzer): instrumentation, corpus directories, arguments.

The working corpus (inputs libFuzzer finds) goes to build/fuzz/<name>/corpus, crash inputs to
build/fuzz/<name>/ unless told otherwise; the committed seeds in tests/fuzz/corpus/<name>/ are
read, never written.
"""
import importlib
import os
import re
import shlex
import subprocess
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


def child_command(name: str) -> str:
    """libFuzzer's argv[0]: with -jobs, -workers or -fork it starts each child as the shell
    command `argv[0] ARGS...`, so it must be a command that runs this harness with exactly those
    libFuzzer arguments."""
    return shlex.join([sys.executable, "-m", "tests.fuzz", name, "--libfuzzer-child", "--"])


def libfuzzer_args(name, module, *, seconds, runs, seed, work, artifacts, extra):
    work.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    args = [child_command(name), f"-max_len={module.MAX_LEN}", f"-timeout={INPUT_TIMEOUT_S}",
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


def use_sanitized_tree():
    """With KATZENPOST_SANITIZED_TREE set (scripts/build-sanitized.sh --env), import katzenpost
    from that tree, whose compiled cores carry ASan/UBSan, ahead of the checkout in the working
    directory; refuse to go on if the unsanitized package is already imported."""
    tree = os.environ.get("KATZENPOST_SANITIZED_TREE")
    if not tree:
        return None
    if "katzenpost" in sys.modules:
        raise SystemExit("fuzz: katzenpost was imported before the sanitized tree was put first")
    sys.path.insert(0, tree)
    return tree


def _check_sanitized(tree):
    core = sys.modules["katzenpost._core.sphinx"].__file__
    if not os.path.realpath(core).startswith(os.path.realpath(tree)):
        raise SystemExit(f"fuzz: {core} is not from the sanitized tree {tree}")
    print(f"fuzz: sanitized cores from {tree}", file=sys.stderr, flush=True)


def _load(name, instrument):
    """The harness module, instrumented, katzenpost taken from the sanitized tree if one is set."""
    import atheris

    tree = use_sanitized_tree()
    if instrument:
        with atheris.instrument_imports(include=INSTRUMENT):
            module = harness_module(name)
    else:
        module = harness_module(name)
    if tree:
        import katzenpost._core.sphinx  # noqa: F401 - loaded to check where it comes from
        _check_sanitized(tree)
    return module


def run_child(name, libfuzzer_argv, *, instrument=True):
    """A child libFuzzer started (-jobs, -workers, -fork): its arguments are used as given."""
    import atheris

    module = _load(name, instrument)
    atheris.Setup([child_command(name)] + list(libfuzzer_argv), module.TestOneInput)
    atheris.Fuzz()


def run(name, *, seconds=None, runs=None, seed=None, work=None, artifacts=None, extra=(),
        instrument=True):
    """Fuzz `name` in this process (atheris takes over; returns only through sys.exit)."""
    import atheris

    module = _load(name, instrument)
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


_DONE = re.compile(r"^#(\d+)\s+DONE\s+(?:cov: (\d+) )?ft: (\d+) corp: (\d+)/", re.M)
_RATE = re.compile(r"^stat::average_exec_per_sec:\s+(\d+)", re.M)


def run_all(names, *, seconds, seed, log_dir):
    """Each harness in its own process for `seconds`, one after the other; returns the rows of
    the summary (and writes each fuzzer's output to log_dir/NAME.log)."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        artifacts = WORK / name
        before = set(artifacts.glob("*-*")) if artifacts.is_dir() else set()
        cmd = [sys.executable, "-m", "tests.fuzz", name, "--seconds", str(seconds)]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=seconds * 3 + 300)
        output = proc.stdout + proc.stderr
        (log_dir / f"{name}.log").write_text(output)
        done, rate = _DONE.search(output), _RATE.search(output)
        findings = sorted(p.name for p in set(artifacts.glob("*-*")) - before)
        rows.append({"name": name, "exit": proc.returncode,
                     "runs": int(done.group(1)) if done else None,
                     "cov": int(done.group(2)) if done and done.group(2) else None,
                     "ft": int(done.group(3)) if done else None,
                     "corpus": int(done.group(4)) if done else None,
                     "exec_per_s": int(rate.group(1)) if rate else None,
                     "findings": findings})
        print(_row(rows[-1]), flush=True)
    return rows


def _row(row) -> str:
    findings = ", ".join(row["findings"]) or "none"
    return (f"| {row['name']} | {row['runs']} | {row['exec_per_s']} | {row['cov']} | {row['ft']} "
            f"| {row['corpus']} | {row['exit']} | {findings} |")
