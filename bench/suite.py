"""`python -m bench [GROUP ...] [--quick] [--list] [-o RESULTS.json] [pyperf options]`: the whole
benchmark suite, or the named groups, as pyperf benchmarks (each hot path beside its baseline in
the same run), then the measurements pyperf cannot make (rates at offered loads, latency
distributions, RSS, CPU per stage), then every ratio.

Output (docs/benchmarks.md): RESULTS.json is a pyperf BenchmarkSuite (pyperf's machine metadata
plus ours: CPU model, X25519 backend, git commit) that every pyperf tool reads; the other
measurements go to the sidecar RESULTS.extra.json, because pyperf metadata holds only scalars.
pyperf re-runs this module in worker processes (`--worker ...`): they register the same
benchmarks in the same order, run only theirs, and skip everything else.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (ROOT, HERE, ROOT / "tests"):          # the bench scripts import each other flat
    if str(path) not in sys.path:
        sys.path.insert(1, str(path))

import pyperf  # noqa: E402

from bench import suite_ratios  # noqa: E402
from bench.suite_files import extra_path, save  # noqa: E402
from bench.suite_groups import GROUP_NAMES, GROUPS, REFERENCE, Settings  # noqa: E402

QUICK_PYPERF = dict(processes=2, values=3, warmups=1, min_time=0.05)
FULL_PYPERF = dict(processes=6, values=3, warmups=1, min_time=0.1)


def own_metadata(quick: bool, groups: list[str]) -> dict:
    from katzenpost._core import sphinx as core
    return {"cpu_model": cpu_model(), "x25519_backend": core.x25519_backend(),
            "x25519_backends_available": ",".join(core.available_x25519_backends()),
            "x25519_ifma_status": core.ifma_status(), "git_commit": git_commit(),
            "bench_mode": "quick" if quick else "full", "bench_groups": ",".join(groups),
            "cpu_count_usable": len(os.sched_getaffinity(0))}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                        "unknown")
    except OSError:
        return "unknown"


def git_commit() -> str:
    """HEAD, with "-dirty" when tracked files differ from it (the figures are of the tree)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def make_runner(argv: list[str]):
    """The one pyperf Runner of this process, with our options; returns (runner, args)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--quick", action="store_true")
    quick = pre.parse_known_args(argv)[0].quick

    def worker_args(cmd, args):                  # what a worker needs to register the same list
        cmd.extend(args.groups)
        if args.quick:
            cmd.append("--quick")

    runner = pyperf.Runner(**(QUICK_PYPERF if quick else FULL_PYPERF),
                           program_args=("-m", "bench"), add_cmdline_args=worker_args)
    parser = runner.argparser
    parser.prog = "python -m bench"
    parser.description = ("Katzenpost benchmark suite: every hot path beside its baseline, in one "
                          "pyperf run. Subcommands: `python -m bench report RESULTS.json -o DIR`, "
                          "`python -m bench compare A.json B.json`.")
    parser.add_argument("groups", nargs="*", metavar="GROUP",
                        help=f"groups to run (default: all): {', '.join(GROUP_NAMES)}")
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes, shorter load steps, fewer processes (< 5 min on 2 cores)")
    parser.add_argument("--list", action="store_true", help="list the groups and their benchmarks")
    args = runner.parse_args(argv)
    unknown = [g for g in args.groups if g not in GROUP_NAMES]
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; groups: {', '.join(GROUP_NAMES)}")
    return runner, args


def list_groups(settings: Settings) -> None:
    print(f"groups ({'quick' if settings.quick else 'full'} run):")
    for group in GROUPS:
        print(f"  {group.name:<9} {group.summary}")
        for spec in group.specs(settings):
            print(f"      {spec.name:<44} {spec.description}")
        if group.extra:
            print(f"      + non-pyperf: {group.extra_summary}")


def register(runner, spec):
    metadata = {"description": spec.description} if spec.description else None
    return runner.bench_time_func(spec.name, spec.time_func, *spec.args, inner_loops=spec.inner_loops,
                                  metadata=metadata)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    runner, args = make_runner(argv)
    settings = Settings(quick=args.quick)
    selected = [g for g in GROUPS if not args.groups or g.name in args.groups]
    if args.list:
        if not args.worker:
            list_groups(settings)
        return 0
    output = args.output
    args.output = None                     # we write one suite (with our metadata), not pyperf
    parent = not args.worker
    if parent:
        mode = "quick" if settings.quick else "full"
        print(f"# python -m bench ({mode}): {', '.join(g.name for g in selected)}"
              + ("" if output else "; no -o: results are printed, not saved"), flush=True)
    metadata = own_metadata(settings.quick, [g.name for g in selected]) if parent else {}
    benchmarks, extra = [], {}
    started = time.monotonic()
    for group in [None] + selected:
        specs = [REFERENCE] if group is None else group.specs(settings)
        for spec in specs:
            bench = register(runner, spec)
            if bench is not None and parent:
                bench.update_metadata(metadata)
                benchmarks.append(bench)
        if parent and group is not None and group.extra:
            print(f"# {group.name}: {group.extra_summary}", flush=True)
            extra.update(group.extra(settings))
        if parent and output:
            save(output, benchmarks, extra, metadata)      # after each group: a partial run survives
    if not parent:
        return 0
    results = suite_ratios.compute(suite_ratios.medians_of(benchmarks), extra)
    print()
    print("\n".join(suite_ratios.format_results(results)))
    print(f"# {len(benchmarks)} pyperf benchmarks in {time.monotonic() - started:.0f} s; "
          f"commit {metadata['git_commit']}, X25519 backend {metadata['x25519_backend']}, "
          f"{metadata['cpu_model']}")
    if output:
        print(f"# saved {output} and {extra_path(output)}; `python -m bench report {output} -o DIR`")
    return 0
