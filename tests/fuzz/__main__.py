"""python -m tests.fuzz: list, run, reproduce and seed the fuzz harnesses (docs/fuzzing.md).

    python -m tests.fuzz --list
    python -m tests.fuzz NAME [--seconds N] [--runs N] [--seed N] [--work DIR] [-- LIBFUZZER ARGS]
    python -m tests.fuzz NAME --reproduce FILE [FILE ...]
    python -m tests.fuzz --all --seconds N [NAME ...]   (each in turn; a summary table)
    python -m tests.fuzz --make-seeds [NAME ...]
"""
import argparse
import sys

from tests.fuzz import HARNESSES


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME")
    parser.add_argument("--list", action="store_true", help="list the harnesses")
    parser.add_argument("--make-seeds", action="store_true",
                        help="(re)write tests/fuzz/corpus for the named harnesses (default all)")
    parser.add_argument("--all", action="store_true",
                        help="run the named harnesses (default all) one after the other, each in "
                             "its own process for --seconds, and print a summary table")
    parser.add_argument("--log-dir", default="build/fuzz/logs", help="fuzzer output of --all")
    parser.add_argument("--reproduce", nargs="+", metavar="FILE",
                        help="run these inputs through NAME without atheris and show tracebacks")
    parser.add_argument("--seconds", type=float, help="stop after this long (-max_total_time)")
    parser.add_argument("--runs", type=int, help="stop after this many inputs (-runs)")
    parser.add_argument("--seed", type=int, help="libFuzzer's random seed (-seed)")
    parser.add_argument("--work", help="working corpus directory (default build/fuzz/NAME/corpus)")
    parser.add_argument("--artifacts", help="where crash inputs go (default build/fuzz/NAME/)")
    parser.add_argument("--no-instrument", action="store_true",
                        help="no Python coverage instrumentation (C coverage only, if sanitized)")
    # How libFuzzer starts its children (-jobs, -workers, -fork): runner.child_command.
    parser.add_argument("--libfuzzer-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.list:
        for name, text in HARNESSES.items():
            print(f"{name:18} {text}")
        return 0
    if args.make_seeds:
        from tests.fuzz.seeds import write_seeds
        for name, count in write_seeds(args.names or None).items():
            print(f"{name}: {count} seeds")
        return 0
    if args.all:
        from tests.fuzz import runner
        if args.seconds is None:
            parser.error("--all needs --seconds")
        print("| harness | inputs executed | exec/s | cov | ft | corpus | exit | findings |")
        print("|---|---|---|---|---|---|---|---|")
        rows = runner.run_all(args.names or list(HARNESSES), seconds=args.seconds,
                              seed=args.seed, log_dir=args.log_dir)
        return 1 if any(row["exit"] or row["findings"] for row in rows) else 0
    if len(args.names) != 1:
        parser.error("name exactly one harness (see --list)")
    from tests.fuzz import runner
    if args.libfuzzer_child:
        runner.run_child(args.names[0], extra, instrument=not args.no_instrument)
        return 0
    if args.reproduce:
        return runner.reproduce(args.names[0], args.reproduce)
    runner.run(args.names[0], seconds=args.seconds, runs=args.runs, seed=args.seed,
               work=args.work, artifacts=args.artifacts, extra=extra,
               instrument=not args.no_instrument)
    return 0


if __name__ == "__main__":
    sys.exit(main())
