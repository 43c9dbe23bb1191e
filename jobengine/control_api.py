"""The control API: a running manager's verbs over HTTP/JSON (Manager(control=...)).

    GET  /version                 {"version", "node"}
    GET  /jobs                    registered jobs
    POST /schedule                {"kind", "args", "kwargs", "priority", "schedule_at",
                                   "schedule_after", "crontab", ...} -> 201 {"uuid", ...}
    GET  /instances               ?kind=&state=&uuid=&since=&limit=
    GET  /instances/{uuid}
    GET  /instances/{uuid}/result {"result"} (JSON, else its repr) or {"error"}
    POST /cancel                  {"uuid"} or {"kind", "state"} -> {"canceled": [uuid]}
    GET  /history/{uuid}          state records
    GET  /logs/{uuid}             ?level=  log records
    GET  /workers                 the pool
    POST /resize                  {"workers": n}
    GET  /stats                   counts
    GET  /metrics                 Prometheus text format (metrics.py)
    GET  /openapi.json            this API, described (jobengine/openapi.json)

The stdlib's ThreadingHTTPServer in a daemon thread: no dependency, and a request never
runs on the engine thread.  It listens on loopback unless told otherwise; on any other
address a token is required (Manager(control_token=...) or JOBENGINE_CONTROL_TOKEN), and
a request without `Authorization: Bearer <token>` gets 401.  Errors are JSON
{"error": "..."} with 400 (bad input), 401, 404 (unknown path, kind or uuid), 405, 409
(the manager is not running), 500.

Owns: the HTTP mapping.  Never does: anything the Manager's public methods do not.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from .errors import (
    ArgumentBindingError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidJobError,
    JobInterrupted,
    ManagerStateError,
    SerializationError,
    UnknownJobError,
)
from .query import Query, parse_since
from .records import InstanceRecord, LogLevel
from .signals import start_thread
from .state import State

log = logging.getLogger("jobengine")

OPENAPI = Path(__file__).with_name("openapi.json")
MAX_BODY = 8 << 20  # bytes a request body may have


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse_address(address: str) -> tuple[str, int]:
    """'host:port' (port 0: any free one) -> (host, port); InvalidArgumentError if bad."""
    if not isinstance(address, str) or ":" not in address:
        raise InvalidArgumentError(f"control must be 'host:port', got {address!r}")
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        n = int(port)
    except ValueError:
        n = -1
    if not host or not 0 <= n <= 65535:
        raise InvalidArgumentError(f"control must be 'host:port', got {address!r}")
    return host, n


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def since(text: str) -> datetime:
    try:
        return parse_since(text)
    except InvalidArgumentError as e:
        raise ApiError(400, f"since: {e}") from None


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat()


def instance_row(r: Any) -> dict[str, Any]:
    return {
        "uuid": r.uuid_str,
        "kind": r.kind,
        "state": r.state.name,
        "priority": r.priority,
        "attempts": r.attempts,
        "created_at": _iso(r.created_at),
        "scheduled_at": _iso(r.scheduled_at),
        "processed_at": _iso(r.processed_at),
        "completed_at": _iso(r.completed_at),
    }


def outcome_row(r: Any) -> dict[str, Any]:
    """An instance's result (JSON as it is, else its repr) or its error, as text."""
    row: dict[str, Any] = {"uuid": r.uuid_str, "state": r.state.name, "result": None,
                           "error": None}  # fmt: skip
    try:
        if isinstance(r, InstanceRecord):
            value = r.result()
        elif not r.done():
            row["error"] = f"not finished ({r.state.name})"
            return row
        else:
            value = r.result(0)
    except (Exception, JobInterrupted) as e:
        row["error"] = f"{type(e).__name__}: {e}"
        return row
    try:
        json.dumps(value)
        row["result"] = value
    except (TypeError, ValueError):
        row["result"] = repr(value)
    return row


def history_row(r: Any) -> dict[str, Any]:
    return {"time": _iso(r.timestamp), "state": r.state.name, "attempt": r.attempt,
            "run": r.run, "worker": r.worker, "cause": r.cause}  # fmt: skip


def log_row(r: Any) -> dict[str, Any]:
    return {"time": _iso(r.timestamp), "level": r.level.name, "attempt": r.attempt,
            "message": r.message}  # fmt: skip


def worker_row(w: Any) -> dict[str, Any]:
    return {"index": w.index, "pid": w.pid, "state": w.state, "current": w.current,
            "rss": w.rss, "cpu_percent": w.cpu_percent, "jobs": w.jobs}  # fmt: skip


def path_of(rest: list) -> str:
    return "/instances/" + "/".join(rest)


def _state(text: str) -> State:
    try:
        return State[text.strip().upper()]
    except KeyError:
        raise ApiError(400, f"unknown state {text!r}") from None


class ControlServer:
    """Serves one manager's control API until stop()."""

    def __init__(self, manager: Any, address: str, token: str | None):
        self.manager = manager
        self.host, self.port = parse_address(address)
        self.token = token
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Listen (InvalidArgumentError if the address cannot be bound); once."""
        if self._server is not None:
            return
        server = self

        class Handler(_Handler):
            api = server

        family_v6 = ":" in self.host

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            if family_v6:
                import socket

                address_family = socket.AF_INET6

        try:
            self._server = Server((self.host, self.port), Handler)
        except OSError as e:
            raise InvalidArgumentError(f"control: cannot listen on {self.url}: {e}") from None
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="jobengine-control", daemon=True
        )
        start_thread(self._thread)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- the verbs ---------------------------------------------------------------------
    def route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        head, rest = (parts[0], parts[1:]) if parts else ("", [])
        routes = {
            ("GET", "version"): self.version,
            ("GET", "jobs"): self.jobs,
            ("POST", "schedule"): self.schedule,
            ("GET", "instances"): self.instances,
            ("POST", "cancel"): self.cancel,
            ("GET", "history"): self.history,
            ("GET", "logs"): self.logs,
            ("GET", "workers"): self.workers,
            ("POST", "resize"): self.resize,
            ("GET", "stats"): self.stats,
        }
        fn = routes.get((method, head))
        if fn is None:
            if any(k[1] == head for k in routes):
                raise ApiError(405, f"{method} is not allowed on /{head}")
            raise ApiError(404, f"no such endpoint: {path}")
        return fn(rest, query, body)

    def version(self, rest: list, query: dict, body: Any) -> tuple[int, Any]:
        from .version import __version__

        return 200, {"version": __version__, "node": self.manager.node}

    def jobs(self, rest: list, query: dict, body: Any) -> tuple[int, Any]:
        return 200, [
            {
                "kind": j.kind,
                "description": j.description,
                "priority": j.priority,
                "crontab": j.crontab,
                "timezone": j.timezone,
                "max_retries": j.max_retries,
                "timeout": j.timeout,
                "registered_at": _iso(j.registered_at),
            }
            for j in self.manager.list_jobs()
        ]

    def schedule(self, rest: list, query: dict, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("kind"), str):
            raise ApiError(400, 'the body must be a JSON object with a "kind"')
        options = dict(body)
        kind = options.pop("kind")
        unknown = set(options) - {
            "args", "kwargs", "priority", "schedule_at", "schedule_after", "crontab",
            "timezone", "jitter", "max_retries", "timeout", "backoff",
        }  # fmt: skip
        if unknown:
            raise ApiError(400, f"unknown option(s): {', '.join(sorted(unknown))}")
        if isinstance(options.get("schedule_at"), str):
            try:
                at = datetime.fromisoformat(options["schedule_at"])
            except ValueError:
                raise ApiError(400, "schedule_at must be an ISO 8601 time") from None
            options["schedule_at"] = at if at.tzinfo else at.astimezone()
        options["args"] = tuple(options.get("args") or ())
        inst = self.manager.schedule_registered_job(kind, **options)
        return 201, instance_row(inst)

    def instances(self, rest: list, query: dict, body: Any) -> tuple[int, Any]:
        if rest:
            found = self.manager.lookup_instances(Query(uuid=rest[0]))
            if not found:
                raise ApiError(404, f"no instance {rest[0]}")
            if rest[1:] == ["result"]:
                return 200, outcome_row(found[0])
            if rest[1:]:
                raise ApiError(404, f"no such endpoint: {path_of(rest)}")
            return 200, instance_row(found[0])
        limit = query.get("limit")
        try:
            n = None if limit is None else int(limit)
        except ValueError:
            raise ApiError(400, f"limit: {limit!r} is not a number") from None
        q = Query(
            uuid=query.get("uuid"),
            kind=query.get("kind"),
            state=_state(query["state"]) if "state" in query else None,
            after=since(query["since"]) if "since" in query else None,
            limit=n,
        )
        return 200, [instance_row(r) for r in self.manager.lookup_instances(q)]

    def cancel(self, rest: list, query: dict, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not ({"uuid", "kind", "state"} & set(body)):
            raise ApiError(400, 'the body must name a "uuid", a "kind" or a "state"')
        q = Query(
            uuid=body.get("uuid"),
            kind=body.get("kind"),
            state=_state(body["state"]) if body.get("state") else None,
        )
        if q.uuid is not None and not self.manager.lookup_instances(Query(uuid=q.uuid)):
            raise ApiError(404, f"no instance {q.uuid}")
        return 200, {"canceled": [i.uuid_str for i in self.manager.cancel_instances(q)]}

    def _known(self, rest: list) -> str:
        if len(rest) != 1:
            raise ApiError(404, "give one uuid: /history/{uuid}")
        if not self.manager.lookup_instances(Query(uuid=rest[0])):
            raise ApiError(404, f"no instance {rest[0]}")
        return rest[0]

    def history(self, rest: list, query: dict, body: Any) -> tuple[int, Any]:
        uuid = self._known(rest)
        return 200, [history_row(r) for r in self.manager.lookup_instance_history(uuid)]

    def logs(self, rest: list, query: dict, body: Any) -> tuple[int, Any]:
        uuid = self._known(rest)
        level = query.get("level")
        if level is not None and level.upper() not in LogLevel.__members__:
            raise ApiError(400, f"unknown level {level!r}")
        q = Query(level=LogLevel[level.upper()]) if level else None
        return 200, [log_row(r) for r in self.manager.lookup_instance_logs(uuid, q)]

    def workers(self, rest: list, query: dict, body: Any) -> tuple[int, Any]:
        return 200, [worker_row(w) for w in self.manager.workers]

    def resize(self, rest: list, query: dict, body: Any) -> tuple[int, Any]:
        n = body.get("workers") if isinstance(body, dict) else None
        if not isinstance(n, int) or isinstance(n, bool):
            raise ApiError(400, 'the body must be {"workers": <int>}')
        self.manager.resize_workers(n)
        return 200, {"workers": self.manager.num_workers}

    def stats(self, rest: list, query: dict, body: Any) -> tuple[int, Any]:
        return 200, self.manager.stats()


class _Handler(BaseHTTPRequestHandler):
    api: ControlServer
    server_version = "jobengine-control"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # requests are not news
        log.debug("jobengine control: " + format, *args)

    def _send(self, status: int, payload: Any, content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="jobengine"')
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        token = self.api.token
        if token is None:
            return True
        given = self.headers.get("Authorization", "")
        return given.startswith("Bearer ") and hmac.compare_digest(given[7:], token)

    def _handle(self, method: str) -> None:
        try:
            if not self._authorized():
                raise ApiError(401, "a valid token is required (Authorization: Bearer ...)")
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            body: Any = None
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                raise ApiError(400, "the body is too large")
            if length:
                try:
                    body = json.loads(self.rfile.read(length))
                except ValueError:
                    raise ApiError(400, "the body is not JSON") from None
            if method == "GET" and url.path == "/metrics":
                from .metrics import exposition

                self._send(200, exposition(self.api.manager), "text/plain; version=0.0.4")
                return
            if method == "GET" and url.path == "/openapi.json":
                self._send(200, OPENAPI.read_bytes())
                return
            status, payload = self.api.route(method, url.path, query, body)
            self._send(status, payload)
        except ApiError as e:
            self._send(e.status, {"error": str(e)})
        except UnknownJobError as e:
            self._send(404, {"error": str(e)})
        except ManagerStateError as e:
            self._send(409, {"error": str(e)})
        except (ArgumentBindingError, InvalidArgumentError, InvalidArgumentTypeError,
                InvalidJobError, SerializationError, ValueError, TypeError) as e:  # fmt: skip
            self._send(400, {"error": f"{type(e).__name__}: {e}"})
        except Exception as e:  # never the server: the client learns what failed
            log.exception("jobengine: a control API request failed")
            self._send(500, {"error": f"{type(e).__name__}: {e}"})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


def token_from(token: str | None) -> str | None:
    """The control token: the argument, else JOBENGINE_CONTROL_TOKEN, else None."""
    if token is None:
        token = os.environ.get("JOBENGINE_CONTROL_TOKEN") or None
    return token


__all__ = ["ControlServer", "is_loopback", "parse_address", "token_from"]
