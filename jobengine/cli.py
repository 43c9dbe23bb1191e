"""jobctl (also `python -m jobengine`): operate a manager, read a store, preview a crontab.

    jobctl version
    jobctl demo [--jobs N] [--workers N]
    jobctl preview "0 9 * * 1-5" [--tz Europe/Paris] [--count 5]
    jobctl instances [--kind K] [--state FINAL] [--since 1h] [--uuid U] [--limit N]
    jobctl history UUID
    jobctl result UUID
    jobctl logs UUID [--level WARN] [--follow]
    jobctl jobs | workers | stats
    jobctl schedule KIND [ARGS...] [--priority P --at TIME --after S --cron C --tz Z]
    jobctl cancel UUID | --kind K [--state S]
    jobctl resize N

instances, history and logs read a store directly (`--store`, or JOBENGINE_STORE;
`--namespace`, or JOBENGINE_NAMESPACE), so they work with no manager running, or ask a
running manager; the other commands talk to a running manager's control API
(`--control HOST:PORT` or JOBENGINE_CONTROL, `--token` or JOBENGINE_CONTROL_TOKEN).
Every command prints a table for people, or JSON with `--json`.  A bad argument, an
unreachable store or an unknown uuid is one line on stderr and a non-zero exit status
(2: bad usage, 1: it failed), never a traceback.

Owns: the command line.  Never does: anything the public API does not offer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import datetime
from typing import Any

from .control_api import history_row, instance_row, log_row, outcome_row

EXIT_FAILED = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """What went wrong, in one line for the user (exit status 1)."""


# -- argument types ----------------------------------------------------------------------


def since(text: str) -> datetime:
    """`--since`: a duration back from now (90s, 10m, 2h, 7d) or an ISO 8601 time."""
    from .errors import InvalidArgumentError
    from .query import parse_since

    try:
        return parse_since(text)
    except InvalidArgumentError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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


# -- where the answers come from: a store, or a running manager's control API ----------
class StoreSource:
    """Reads a store directly (no manager needed)."""

    def __init__(self, url: str, namespace: str):
        from .errors import StoreError
        from .stores import open_store

        try:
            self.store = open_store(url, namespace=namespace)
        except StoreError as e:
            raise CommandError(f"cannot open store {url}: {e}") from None
        except (ValueError, TypeError) as e:
            raise CommandError(f"bad store URL {url!r}: {e}") from None

    def close(self) -> None:
        self.store.close()

    def instances(self, **filters: Any) -> list[dict[str, Any]]:
        from .query import Query

        return [instance_row(r) for r in self.store.lookup_instances(Query(**filters))]

    def instance(self, uuid: str) -> dict[str, Any]:
        found = self.instances(uuid=uuid)
        if not found:
            raise CommandError(f"no instance {uuid} in the store")
        return found[0]

    def history(self, uuid: str) -> list[dict[str, Any]]:
        self.instance(uuid)
        return [history_row(r) for r in self.store.lookup_history(uuid)]

    def result(self, uuid: str) -> dict[str, Any]:
        from .query import Query

        found = self.store.lookup_instances(Query(uuid=uuid))
        if not found:
            raise CommandError(f"no instance {uuid} in the store")
        return outcome_row(found[0])

    def logs(self, uuid: str, level: Any) -> list[dict[str, Any]]:
        records = self.store.lookup_logs(uuid)
        return [log_row(r) for r in records if level is None or r.level >= level]


class ManagerSource:
    """Talks to a running manager's control API (Manager(control="host:port"))."""

    def __init__(self, address: str, token: str | None):
        self.base = address if "://" in address else f"http://{address}"
        self.token = token

    def close(self) -> None:
        pass

    def call(self, method: str, path: str, body: Any = None) -> Any:
        import urllib.error
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                kind = r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read())["error"]
            except Exception:
                message = e.reason
            if e.code == 401:
                raise CommandError(f"the manager refused the token (401): {message}") from None
            raise CommandError(f"{message} ({e.code})") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise CommandError(f"cannot reach the manager at {self.base}: {reason}") from None
        return raw.decode() if kind.startswith("text/") else json.loads(raw)

    def instances(self, **filters: Any) -> list[dict[str, Any]]:
        from urllib.parse import urlencode

        params = {k: filters[k] for k in ("uuid", "kind", "limit") if filters.get(k) is not None}
        if filters.get("state") is not None:
            params["state"] = filters["state"].name
        if filters.get("after") is not None:
            params["since"] = filters["after"].isoformat()
        return self.call("GET", "/instances" + (f"?{urlencode(params)}" if params else ""))

    def instance(self, uuid: str) -> dict[str, Any]:
        return self.call("GET", f"/instances/{uuid}")

    def history(self, uuid: str) -> list[dict[str, Any]]:
        return self.call("GET", f"/history/{uuid}")

    def result(self, uuid: str) -> dict[str, Any]:
        return self.call("GET", f"/instances/{uuid}/result")

    def logs(self, uuid: str, level: Any) -> list[dict[str, Any]]:
        query = f"?level={level.name}" if level is not None else ""
        return self.call("GET", f"/logs/{uuid}{query}")


def _address(args: argparse.Namespace) -> str | None:
    """--control HOST:PORT, or --host/--port, or JOBENGINE_CONTROL."""
    if args.control:
        return args.control
    if args.port:
        return f"{args.host or '127.0.0.1'}:{args.port}"
    return os.environ.get("JOBENGINE_CONTROL")


def _manager(args: argparse.Namespace) -> ManagerSource:
    address = _address(args)
    if not address:
        raise CommandError(
            f"{args.command} needs a running manager: give --control HOST:PORT (or --host "
            "and --port) or set JOBENGINE_CONTROL (Manager(control=...) serves it)"
        )
    token = args.token or os.environ.get("JOBENGINE_CONTROL_TOKEN")
    return ManagerSource(address, token)


def _source(args: argparse.Namespace) -> StoreSource | ManagerSource:
    url = args.store or os.environ.get("JOBENGINE_STORE")
    if url:
        return StoreSource(url, args.namespace)
    if _address(args):
        return _manager(args)
    raise CommandError(
        "no store and no manager: give --store URL (or JOBENGINE_STORE), or --control "
        "HOST:PORT of a running manager (or JOBENGINE_CONTROL)"
    )


# -- commands -------------------------------------------------------------------------------
INSTANCE_COLUMNS = ["uuid", "kind", "state", "priority", "attempts", "created_at", "completed_at"]


def cmd_instances(args: argparse.Namespace, out: Any) -> None:
    with closing(_source(args)) as source:
        rows = source.instances(uuid=args.uuid, kind=args.kind, state=args.state,
                                after=args.since, limit=args.limit)  # fmt: skip
    emit(rows, INSTANCE_COLUMNS, args.json, out)


def cmd_history(args: argparse.Namespace, out: Any) -> None:
    with closing(_source(args)) as source:
        rows = source.history(args.uuid)
    emit(rows, ["time", "state", "attempt", "run", "worker", "cause"], args.json, out)


def cmd_result(args: argparse.Namespace, out: Any) -> None:
    with closing(_source(args)) as source:
        row = source.result(args.uuid)
    if not args.json:
        row = {**row, "result": json.dumps(row["result"])}
    emit([row], ["uuid", "state", "result", "error"], args.json, out)


def cmd_logs(args: argparse.Namespace, out: Any) -> None:
    from .state import State

    with closing(_source(args)) as source:
        state = source.instance(args.uuid)["state"]
        seen = 0
        while True:
            every = source.logs(args.uuid, None)
            fresh = every[seen:]
            seen = len(every)
            if args.level is not None:
                fresh = [r for r in fresh if level(r["level"]) >= args.level]
            if fresh or not args.follow:
                if args.json and args.follow:  # one JSON object per line as they come
                    for row in fresh:
                        out.write(json.dumps(row, default=_json_default) + "\n")
                else:
                    emit(fresh, ["time", "level", "attempt", "message"], args.json, out)
                out.flush()
            if not args.follow or State[state] & State.FINAL:
                return
            time.sleep(0.5)
            state = source.instance(args.uuid)["state"]


def cmd_jobs(args: argparse.Namespace, out: Any) -> None:
    rows = _manager(args).call("GET", "/jobs")
    emit(rows, ["kind", "priority", "crontab", "max_retries", "timeout", "description"],
         args.json, out)  # fmt: skip


def cmd_schedule(args: argparse.Namespace, out: Any) -> None:
    body: dict[str, Any] = {"kind": args.kind, "args": list(args.args)}
    for name in ("priority", "crontab", "timezone"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if args.at is not None:
        body["schedule_at"] = args.at.isoformat()
    if args.after is not None:
        body["schedule_after"] = args.after
    row = _manager(args).call("POST", "/schedule", body)
    emit([row], INSTANCE_COLUMNS, args.json, out)


def cmd_cancel(args: argparse.Namespace, out: Any) -> None:
    body = {k: v for k, v in (("uuid", args.uuid), ("kind", args.kind)) if v}
    if args.state is not None:
        body["state"] = args.state.name
    if not body:
        raise CommandError("cancel what? give a UUID, --kind or --state")
    done = _manager(args).call("POST", "/cancel", body)["canceled"]
    emit([{"canceled": u} for u in done], ["canceled"], args.json, out)


def cmd_workers(args: argparse.Namespace, out: Any) -> None:
    rows = _manager(args).call("GET", "/workers")
    emit(rows, ["index", "pid", "state", "current", "rss", "cpu_percent", "jobs"], args.json, out)


def cmd_resize(args: argparse.Namespace, out: Any) -> None:
    row = _manager(args).call("POST", "/resize", {"workers": args.workers})
    emit([row], ["workers"], args.json, out)


def cmd_stats(args: argparse.Namespace, out: Any) -> None:
    stats = _manager(args).call("GET", "/stats")
    if args.json:
        out.write(json.dumps(stats) + "\n")
        return
    rows = [{"stat": k, "value": json.dumps(v) if isinstance(v, dict) else v}
            for k, v in stats.items()]  # fmt: skip
    emit(rows, ["stat", "value"], False, out)


def cmd_preview(args: argparse.Namespace, out: Any) -> None:
    from .errors import InvalidArgumentError, InvalidArgumentTypeError
    from .schedule import preview

    try:
        times = preview(args.crontab, args.tz, count=args.count)
    except (InvalidArgumentError, InvalidArgumentTypeError) as e:
        raise CommandError(str(e)) from None
    emit([{"fire": t} for t in times], ["fire"], args.json, out)


def cmd_version(args: argparse.Namespace, out: Any) -> None:
    from .version import __version__

    if args.json:
        out.write(json.dumps({"version": __version__}) + "\n")
    else:
        out.write(f"jobengine {__version__}\n")


def cmd_demo(args: argparse.Namespace, out: Any) -> None:
    from .demo import run

    run(jobs=args.jobs, workers=args.workers, limit=args.limit)


# -- the parser ---------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    from .version import __version__

    ap = argparse.ArgumentParser(
        prog="jobctl", description="Operate a jobengine manager, read a store, preview a crontab."
    )
    ap.add_argument("--version", action="version", version=f"jobengine {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, fn: Callable, help: str, where: str = "") -> Any:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(fn=fn)
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        if "store" in where:
            p.add_argument("--store", help="store URL (default: $JOBENGINE_STORE)")
            namespace = os.environ.get("JOBENGINE_NAMESPACE", "jobengine")
            p.add_argument("--namespace", default=namespace,
                           help="the store's namespace (default: jobengine)")  # fmt: skip
        if "manager" in where:
            manager_options(p, argparse.SUPPRESS)
        return p

    def manager_options(p: argparse.ArgumentParser, default: Any) -> None:
        # before or after the command: `jobctl --port 8765 stats` or `jobctl stats --port ...`
        p.add_argument("--control", metavar="HOST:PORT", default=default,
                       help="a running manager's control API ($JOBENGINE_CONTROL)")  # fmt: skip
        p.add_argument("--host", default=default, help="its host (default 127.0.0.1)")
        p.add_argument("--port", type=positive, default=default, help="its port")
        p.add_argument("--token", default=default, help="its token ($JOBENGINE_CONTROL_TOKEN)")

    manager_options(ap, None)

    command("version", cmd_version, "print jobengine's version")
    p = command("demo", cmd_demo, "run a CPU-heavy batch on all cores and report")
    p.add_argument("--jobs", type=positive, default=300, help="number of jobs (default 300)")
    p.add_argument("--workers", type=positive, default=None, help="workers (default: cores)")
    p.add_argument("--limit", type=positive, default=12_000, help="work per job (default 12000)")
    p = command("preview", cmd_preview, "the next fire times of a crontab")
    p.add_argument("crontab", help='a crontab, a descriptor (@daily) or "@every 90s"')
    p.add_argument("--tz", default=None, help="IANA time zone (default: local)")
    p.add_argument("--count", type=positive, default=5, help="how many (default 5)")
    p = command("instances", cmd_instances, "instances (a store, or a manager)", "store manager")
    p.add_argument("--kind", help="only this kind")
    p.add_argument("--state", type=state, help="only this state or group (FINAL, ERROR...)")
    p.add_argument("--uuid", help="only this instance")
    p.add_argument("--since", type=since, help="created since: 10m, 2h, 7d or ISO 8601")
    p.add_argument("--limit", type=positive, default=100, help="at most this many (100)")
    p = command("history", cmd_history, "the state history of one instance", "store manager")
    p.add_argument("uuid")
    p = command("result", cmd_result, "the result (or error) of one instance", "store manager")
    p.add_argument("uuid")
    p = command("logs", cmd_logs, "the log history of one instance", "store manager")
    p.add_argument("uuid")
    p.add_argument("--level", type=level, help="this level or more severe (DEBUG..ERROR)")
    p.add_argument("--follow", action="store_true", help="keep printing until it ends")
    command("jobs", cmd_jobs, "the jobs a running manager has registered", "manager")
    p = command("schedule", cmd_schedule, "schedule an instance of a registered job", "manager")
    p.add_argument("kind")
    p.add_argument("args", nargs="*", help="its arguments, as text (converted by the "
                   "executor's annotations: 1 -> int, JSON -> a dataclass...)")  # fmt: skip
    p.add_argument("--priority", type=int, help="higher runs first")
    p.add_argument("--at", type=since, metavar="TIME", help="ISO 8601 time to run at")
    p.add_argument("--after", type=float, metavar="SECONDS", help="run after a delay")
    p.add_argument("--cron", dest="crontab", metavar="CRONTAB", help="make it recurring")
    p.add_argument("--tz", dest="timezone", help="the crontab's IANA time zone")
    p = command("cancel", cmd_cancel, "cancel instances of a running manager", "manager")
    p.add_argument("uuid", nargs="?", help="the instance (or use --kind / --state)")
    p.add_argument("--kind", help="every instance of this kind")
    p.add_argument("--state", type=state, help="... in this state or group")
    command("workers", cmd_workers, "a running manager's workers", "manager")
    p = command("resize", cmd_resize, "resize a running manager's pool", "manager")
    p.add_argument("workers", type=positive)
    command("stats", cmd_stats, "a running manager's counts", "manager")
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
