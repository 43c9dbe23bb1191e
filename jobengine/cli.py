"""jobctl (also `python -m jobengine`): inspect a store, preview a crontab, run the demo.

    jobctl version
    jobctl demo [--jobs N] [--workers N]
    jobctl preview "0 9 * * 1-5" [--tz Europe/Paris] [--count 5]
    jobctl instances --store sqlite:///jobs.db [--kind K] [--state FINAL] [--since 1h]
    jobctl history UUID --store URL
    jobctl logs UUID --store URL [--level WARN] [--follow]

The store commands read a store directly (`--store`, or the JOBENGINE_STORE environment
variable; `--namespace`, or JOBENGINE_NAMESPACE), so they work with no manager running.
Every command prints a table for people, or JSON with `--json`.  A bad argument, an
unreachable store or an unknown uuid is one line on stderr and a non-zero exit status
(2: bad usage, 1: it failed), never a traceback.

Owns: the command line.  Never does: anything the public API does not offer.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

EXIT_FAILED = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """What went wrong, in one line for the user (exit status 1)."""


# -- argument types ----------------------------------------------------------------------
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since(text: str) -> datetime:
    """`--since`: a duration back from now (90s, 10m, 2h, 7d) or an ISO 8601 time."""
    m = _RELATIVE.match(text.strip())
    if m:
        return datetime.now(timezone.utc) - timedelta(seconds=float(m[1]) * _UNIT[m[2]])
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (90s, 10m, 2h, 7d) nor an ISO 8601 time"
        ) from None
    return value if value.tzinfo else value.astimezone()


def state(text: str) -> Any:
    from .state import State

    try:
        return State[text.strip().upper()]
    except KeyError:
        names = ", ".join(s.name for s in State)  # type: ignore[misc]
        raise argparse.ArgumentTypeError(f"unknown state {text!r} (one of {names})") from None


def level(text: str) -> Any:
    from .records import LogLevel

    try:
        return LogLevel[text.strip().upper()]
    except KeyError:
        names = ", ".join(LogLevel.__members__)
        raise argparse.ArgumentTypeError(f"unknown level {text!r} (one of {names})") from None


def positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return n


# -- output -------------------------------------------------------------------------------
def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, datetime):
        return v.isoformat(timespec="milliseconds")
    return str(v)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], out: Any) -> None:
    """Rows as aligned columns (the last one unpadded: messages can be long)."""
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = [[c.upper() for c in columns], *cells]
    for line in lines:
        padded = [v.ljust(w) for v, w in zip(line[:-1], widths[:-1], strict=True)]
        out.write("  ".join([*padded, line[-1]]).rstrip() + "\n")


def _json_default(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    return str(v)


def emit(rows: list[dict[str, Any]], columns: Sequence[str], as_json: bool, out: Any) -> None:
    if as_json:
        out.write(json.dumps(rows, default=_json_default) + "\n")
    else:
        table(rows, columns, out)


# -- commands -------------------------------------------------------------------------------
def _open(args: argparse.Namespace) -> Any:
    from .errors import StoreError
    from .stores import open_store

    url = args.store or os.environ.get("JOBENGINE_STORE")
    if not url:
        raise CommandError("no store: give --store URL or set JOBENGINE_STORE")
    try:
        return open_store(url, namespace=args.namespace)
    except StoreError as e:
        raise CommandError(f"cannot open store {url}: {e}") from None
    except (ValueError, TypeError) as e:
        raise CommandError(f"bad store URL {url!r}: {e}") from None


def _instance_row(r: Any) -> dict[str, Any]:
    return {
        "uuid": r.uuid_str,
        "kind": r.kind,
        "state": r.state.name,
        "priority": r.priority,
        "attempts": r.attempts,
        "created": r.created_at,
        "completed": r.completed_at,
    }


def cmd_instances(args: argparse.Namespace, out: Any) -> None:
    from .query import Query

    store = _open(args)
    try:
        query = Query(uuid=args.uuid, kind=args.kind, state=args.state, after=args.since,
                      limit=args.limit)  # fmt: skip
        rows = [_instance_row(r) for r in store.lookup_instances(query)]
    finally:
        store.close()
    emit(rows, ["uuid", "kind", "state", "priority", "attempts", "created", "completed"],
         args.json, out)  # fmt: skip


def _known(store: Any, uuid: str) -> Any:
    from .query import Query

    found = store.lookup_instances(Query(uuid=uuid))
    if not found:
        raise CommandError(f"no instance {uuid} in the store")
    return found[0]


def cmd_history(args: argparse.Namespace, out: Any) -> None:
    store = _open(args)
    try:
        _known(store, args.uuid)
        rows = [
            {
                "time": r.timestamp,
                "state": r.state.name,
                "attempt": r.attempt,
                "run": r.run,
                "worker": r.worker,
                "cause": r.cause,
            }
            for r in store.lookup_history(args.uuid)
        ]
    finally:
        store.close()
    emit(rows, ["time", "state", "attempt", "run", "worker", "cause"], args.json, out)


def cmd_logs(args: argparse.Namespace, out: Any) -> None:
    from .state import State

    store = _open(args)
    try:
        inst = _known(store, args.uuid)
        seen = 0
        while True:
            records = store.lookup_logs(args.uuid)
            fresh = [r for r in records[seen:] if args.level is None or r.level >= args.level]
            seen = len(records)
            rows = [
                {
                    "time": r.timestamp,
                    "level": r.level.name,
                    "attempt": r.attempt,
                    "message": r.message,
                }
                for r in fresh
            ]
            if rows or not args.follow:
                if args.json and args.follow:  # one JSON object per line as they come
                    for row in rows:
                        out.write(json.dumps(row, default=_json_default) + "\n")
                else:
                    emit(rows, ["time", "level", "attempt", "message"], args.json, out)
                out.flush()
            if not args.follow or inst.state in State.FINAL:
                return
            time.sleep(0.5)
            inst = _known(store, args.uuid)
    finally:
        store.close()


def cmd_preview(args: argparse.Namespace, out: Any) -> None:
    from .errors import InvalidArgumentError, InvalidArgumentTypeError
    from .schedule import preview

    try:
        times = preview(args.crontab, args.tz, count=args.count)
    except (InvalidArgumentError, InvalidArgumentTypeError) as e:
        raise CommandError(str(e)) from None
    emit([{"fire": t} for t in times], ["fire"], args.json, out)


def cmd_version(args: argparse.Namespace, out: Any) -> None:
    from . import __version__

    if args.json:
        out.write(json.dumps({"version": __version__}) + "\n")
    else:
        out.write(f"jobengine {__version__}\n")


def cmd_demo(args: argparse.Namespace, out: Any) -> None:
    from .demo import run

    run(jobs=args.jobs, workers=args.workers, limit=args.limit)


# -- the parser ---------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = argparse.ArgumentParser(
        prog="jobctl", description="Inspect a jobengine store, preview a crontab, run the demo."
    )
    ap.add_argument("--version", action="version", version=f"jobengine {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, fn: Callable, help: str, store: bool = False) -> Any:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(fn=fn)
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        if store:
            p.add_argument("--store", help="store URL (default: $JOBENGINE_STORE)")
            namespace = os.environ.get("JOBENGINE_NAMESPACE", "jobengine")
            p.add_argument("--namespace", default=namespace,
                           help="the store's namespace (default: jobengine)")  # fmt: skip
        return p

    command("version", cmd_version, "print jobengine's version")
    p = command("demo", cmd_demo, "run a CPU-heavy batch on all cores and report")
    p.add_argument("--jobs", type=positive, default=300, help="number of jobs (default 300)")
    p.add_argument("--workers", type=positive, default=None, help="workers (default: cores)")
    p.add_argument("--limit", type=positive, default=12_000, help="work per job (default 12000)")
    p = command("preview", cmd_preview, "the next fire times of a crontab")
    p.add_argument("crontab", help='a crontab, a descriptor (@daily) or "@every 90s"')
    p.add_argument("--tz", default=None, help="IANA time zone (default: local)")
    p.add_argument("--count", type=positive, default=5, help="how many (default 5)")
    p = command("instances", cmd_instances, "instances in a store", store=True)
    p.add_argument("--kind", help="only this kind")
    p.add_argument("--state", type=state, help="only this state or group (FINAL, ERROR...)")
    p.add_argument("--uuid", help="only this instance")
    p.add_argument("--since", type=since, help="created since: 10m, 2h, 7d or ISO 8601")
    p.add_argument("--limit", type=positive, default=100, help="at most this many (100)")
    p = command("history", cmd_history, "the state history of one instance", store=True)
    p.add_argument("uuid")
    p = command("logs", cmd_logs, "the log history of one instance", store=True)
    p.add_argument("uuid")
    p.add_argument("--level", type=level, help="this level or more severe (DEBUG..ERROR)")
    p.add_argument("--follow", action="store_true", help="keep printing until it ends")
    return ap


def main(argv: list[str] | None = None, out: Any = None) -> int:
    out = out or sys.stdout
    args = parser().parse_args(argv)  # bad usage: argparse prints one line, exits 2
    try:
        args.fn(args, out)
    except CommandError as e:
        sys.stderr.write(f"jobctl: {e}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `jobctl ... | head`
        return 0
    except Exception as e:  # never a traceback: one line that says what failed
        sys.stderr.write(f"jobctl: {args.command} failed: {type(e).__name__}: {e}\n")
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
