"""`python -m bench`: the benchmark suite (bench/suite.py), `python -m bench report` (HTML and
PNG charts of a saved run, bench/report.py) and `python -m bench compare` (two saved runs,
bench/compare.py). Run from the repository root; docs/benchmarks.md."""
import sys


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "report":
        from bench import report
        return report.main(sys.argv[2:])
    if command == "compare":
        from bench import compare
        return compare.main(sys.argv[2:])
    from bench import suite
    return suite.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
