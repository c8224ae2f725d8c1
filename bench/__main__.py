"""``python -m bench``: run the benchmark suite, print the table, write JSON, Markdown and PNG."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from bench import cases, provenance, report
from bench.suite import Suite

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 2 repeats: checks the suite runs (seconds)")
    p.add_argument("--repeats", type=int, metavar="N", help="runs per figure (default 5; 10,000-node graphs: 2)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR", help="where results.* go (default bench/results/)")
    p.add_argument("--only", nargs="+", metavar="CASE", help="cases, case-name prefixes or groups (inprocess, growth, http, rss)")
    p.add_argument("--no-prefect", action="store_true", help="skip the Prefect 3 reference")
    p.add_argument("--no-http", action="store_true", help="skip the HTTP cases")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser().error("--repeats must be at least 1")
    sizes = (cases.SMOKE if args.smoke else cases.DEFAULT).with_repeats(args.repeats)
    every = cases.cases(sizes)
    if args.list:
        for case in every:
            print(f"{case.name:<22} {case.group:<10} {case.title}")
        return 0
    selected = cases.select(every, args.only)
    if args.no_http:
        selected = [c for c in selected if c.group != "http"]
    logging.basicConfig(level=logging.WARNING)
    started, source = time.perf_counter(), provenance.source_files()
    with tempfile.TemporaryDirectory(prefix="graph-runtime-bench-") as workdir:
        suite = Suite(sizes, selected, Path(workdir), args.out / "logs", prefect=not args.no_prefect)
        if args.no_prefect:
            suite.skipped["Prefect 3"] = "skipped (--no-prefect)"
        if args.no_http:
            suite.skipped["HTTP"] = "skipped (--no-http)"
        rows = suite.run()
    seconds = time.perf_counter() - started
    edited = provenance.changed(source, provenance.source_files())
    if edited:
        suite.skipped["source"] = (f"the product's code changed during the run ({', '.join(edited)}): "
                                   "processes started at different times measured different code")
    written = report.write(rows, suite.skipped, sizes, args.out, seconds, provenance.digest(source))
    report.print_table(rows, suite.skipped)
    print(f"{len(rows)} rows in {seconds:.0f} s; wrote {', '.join(str(p) for p in written.values())}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
