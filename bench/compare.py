"""`python -m bench compare A.json B.json`: what changed between two saved runs (for example two
commits). First pyperf's own comparison of every benchmark both runs hold (`pyperf compare_to`,
with its significance test; other pyperf compare_to options pass through), then the change of
every ratio and figure (bench/suite_ratios.py) from A to B, a change worse than --threshold
marked REGRESSION. Ratios are the numbers to trust on a shared machine: both sides of a ratio
were measured in the same run, under the same load.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from bench import suite_ratios
from bench.suite_files import NotARun, load

IDENTITY = ("git_commit", "bench_mode", "cpu_model", "x25519_backend", "python_version")


def ratio_changes(a: list, b: list, threshold: float) -> tuple[list[str], int]:
    """Lines of the comparison and the number of regressions beyond `threshold` (a fraction)."""
    before = {r.key: r for r in a}
    lines, regressions = [], 0
    for new in b:
        old = before.pop(new.key, None)
        if old is None:
            lines.append(f"  {new.label:<70} {'-':>10} -> {new.format_value():>10}  (only in B)")
            continue
        change = new.value / old.value - 1 if old.value else 0.0
        better = change > 0 if new.higher_is_better else change < 0
        verdict = ""
        if abs(change) > threshold:
            verdict = "improved" if better else "REGRESSION"
            regressions += not better
        lines.append(f"  {new.label:<70} {old.format_value():>10} -> {new.format_value():>10}  "
                     f"{change:+7.1%} {verdict}".rstrip())
    lines += [f"  {old.label:<70} {old.format_value():>10} -> {'-':>10}  (only in A)" for old in before.values()]
    return lines, regressions


def identity_lines(suite_a, suite_b) -> list[str]:
    meta_a, meta_b = suite_a.get_metadata(), suite_b.get_metadata()
    return [f"  {key}: {meta_a.get(key, '?')} -> {meta_b.get(key, '?')}" for key in IDENTITY
            if meta_a.get(key) is not None or meta_b.get(key) is not None]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench compare", description=__doc__.split("\n\n")[0],
                                     epilog="Unknown options go to `pyperf compare_to` (e.g. --min-speed 5).")
    parser.add_argument("a", type=Path, help="the earlier run (RESULTS.json)")
    parser.add_argument("b", type=Path, help="the later run")
    parser.add_argument("--threshold", type=float, default=10.0,
                        help="percent change of a ratio or figure reported as a regression (default 10)")
    parser.add_argument("--fail-on-regression", action="store_true",
                        help="exit with status 1 if any ratio or figure regressed beyond the threshold")
    args, pyperf_args = parser.parse_known_args(argv)
    for path in (args.a, args.b):
        if not path.exists():
            parser.error(f"{path}: no such file")
    try:
        (suite_a, extra_a), (suite_b, extra_b) = load(args.a), load(args.b)
    except NotARun as exc:
        parser.error(str(exc))
    print(f"A = {args.a}, B = {args.b}")
    print("\n".join(identity_lines(suite_a, suite_b)))
    print("\npyperf compare_to (every benchmark in both runs):", flush=True)
    subprocess.run([sys.executable, "-m", "pyperf", "compare_to", str(args.a), str(args.b), "--table",
                    *pyperf_args], check=False)
    results_a = suite_ratios.compute(suite_ratios.medians_of(suite_a), extra_a)
    results_b = suite_ratios.compute(suite_ratios.medians_of(suite_b), extra_b)
    lines, regressions = ratio_changes(results_a, results_b, args.threshold / 100)
    print(f"\nRatios and figures, A -> B (beyond ±{args.threshold:g} %: improved / REGRESSION):")
    print("\n".join(lines))
    print(f"\n{regressions} regression(s) beyond {args.threshold:g} %")
    return 1 if regressions and args.fail_on_regression else 0
