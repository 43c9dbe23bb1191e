"""python -m jobengine demo [--jobs N] [--workers N]

Owns: the command line.  Never does: anything the public API does not offer."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobengine")
    sub = ap.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a CPU-heavy batch on all cores and report")
    demo.add_argument("--jobs", type=int, default=300, help="number of jobs (default 300)")
    demo.add_argument("--workers", type=int, default=None, help="worker processes (default: cores)")
    demo.add_argument("--limit", type=int, default=12_000, help="work per job (default 12000)")
    args = ap.parse_args(argv)
    if args.command == "demo":
        from .demo import run

        if args.jobs < 1:
            ap.error("--jobs must be >= 1")
        run(jobs=args.jobs, workers=args.workers, limit=args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
