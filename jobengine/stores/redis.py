"""RedisStore: the Store contract on a Redis server (redis-py).

Keys, all under the namespace prefix `<ns>:` (clear() deletes only those):
  <ns>:i:<uuid>         hash: j = the InstanceRecord (JSON), r = its result payload
  <ns>:s:<uuid>         list: its state records, one element per batch that had some:
                        JSON [kind, [[state, time_ns, attempt, worker, run, cause], ...]]
  <ns>:l:<uuid>         list: its log records, JSON arrays [level, time_ns, message, attempt, kind]
  <ns>:order            list: uuids in the order their first records were written (lookup
                        order; appended once per instance, O(1), unlike a sorted set)
  <ns>:done             sorted set: finished uuids scored by completion time, kept only
                        while a retention bound is set (max_instances / max_age)
  <ns>:r:<uuid>         hash: a RecurrenceRecord (one field per attribute)
  <ns>:rk               hash: schedule key -> uuid;  <ns>:rs  set of recurrence uuids
  <ns>:tick             hash: schedule key -> its latest claimed tick (ns)
The shared queue of one-off instances:
  <ns>:q:e:<uuid>       hash: a QueueEntry (k kind, p priority, d due, s seq, y payload,
                        t target, x executor, o options, a attempts, c created, g origin,
                        w owner, l lease, r reaped, z canceled, m its ready member)
  <ns>:qa               set: every queued uuid;   <ns>:qseq  the enqueue counter
  <ns>:qt               sorted set: unclaimed entries not yet due, scored by due time
  <ns>:qr               sorted set: unclaimed due entries, scored by -priority, member
                        "<due:20><seq:12>:<uuid>" (so equal scores sort by due, then seq)
  <ns>:ql               sorted set: owner -> its lease end (one lease per manager)
  <ns>:qo:<owner>       set: the uuids it holds;  <ns>:qx:<owner>  those asked to cancel
  <ns>:qd:<origin>      list: uuids it enqueued that finished elsewhere (kept a day)
A batch of records is one Lua script call (one round trip; Redis runs it atomically);
each recurrence verb is one Lua script too, so two managers claiming at once never both
win.  Shared over the network: it keeps a pickle only if it is signed (payloads.py).  A
record that cannot be decoded is skipped with a warning naming its key; it never hides
the others.

Owns: its connection, its keys and its Lua scripts.  Never does: touch keys outside its
namespace.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson

from ..errors import StoreError
from ..payloads import outcome_columns
from ..query import Query
from ..records import (
    FINAL_STATES,
    InstanceRecord,
    LogLevel,
    LogRecord,
    QueueEntry,
    RecurrenceRecord,
    StateRecord,
)
from ..state import State
from .base import Store, may_be_queued

_CREATED = int(State.CREATED)

try:
    import redis as _redis
except ImportError:  # pragma: no cover - exercised only without the extra
    _redis = None

log = logging.getLogger("jobengine")

# One batch: ARGV = prefix, then one JSON document [node, seq, entries] (seq "" for no
# token: at most once per node otherwise), each entry [uuid, its JSON or "", its result
# payload or "", its completion time if finished and a retention bound is set, else "",
# "1" if this batch holds its CREATED record (its first) else "", [state records],
# [log records], "1" if its state is final (its queue entry is finished) else ""], the
# records themselves JSON text.  One argument for the whole batch:
# redis-py packs each argument in Python, cjson unpacks this one in C.  Lua builds
# the key names itself: fine on one server (not Redis Cluster).
_FINISH_FN = """
local noticed = {}  -- origins told in this call (their list's expiry set once)
local function finish(p, u)
  local key = p .. 'q:e:' .. u
  local f = redis.call('HMGET', key, 'g', 'w', 'm', 'z')
  if not f[3] then return end
  redis.call('DEL', key)
  redis.call('SREM', p .. 'qa', u)
  if f[2] and f[2] ~= '' then  -- claimed (the usual case): in no ready or timed set
    redis.call('SREM', p .. 'qo:' .. f[2], u)
    if f[4] == '1' then redis.call('SREM', p .. 'qx:' .. f[2], u) end
  else
    redis.call('ZREM', p .. 'qr', f[3])
    redis.call('ZREM', p .. 'qt', u)
  end
  if f[1] and f[1] ~= '' and f[1] ~= f[2] then
    local list = p .. 'qd:' .. f[1]
    redis.call('RPUSH', list, u)
    if not noticed[list] then
      noticed[list] = true
      redis.call('EXPIRE', list, 86400)
    end
  end
end
local function write_entries(p, entries, skip)
  for _, e in ipairs(entries) do
    local u, j, r, done, first, ss, ls, final = e[1], e[2], e[3], e[4], e[5], e[6], e[7], e[8]
    if not skip[u] then
      if j ~= '' then
        if r ~= '' then
          redis.call('HSET', p .. 'i:' .. u, 'j', j, 'r', r)
        else
          redis.call('HSET', p .. 'i:' .. u, 'j', j)
        end
        if first ~= '' then redis.call('RPUSH', p .. 'order', u) end
        if done ~= '' then redis.call('ZADD', p .. 'done', done, u) end
        if final ~= '' then finish(p, u) end
      end
      if #ss > 0 then redis.call('RPUSH', p .. 's:' .. u, unpack(ss)) end
      if #ls > 0 then redis.call('RPUSH', p .. 'l:' .. u, unpack(ls)) end
    end
  end
end
"""
_WRITE = (
    _FINISH_FN
    + """
local p = ARGV[1]
local doc = cjson.decode(ARGV[2])
local node, seq = doc[1], doc[2]
if seq ~= '' then
  local last = redis.call('HGET', p .. 'w', node)
  if last and tonumber(last) >= tonumber(seq) then return 0 end
  redis.call('HSET', p .. 'w', node, seq)
end
write_entries(p, doc[3], {})
return 1
"""
)
MAX_ENTRY_RECORDS = 4000  # Lua's stack takes ~8000 values per unpack
B64 = b"B"  # a result payload that is not text travels (and is kept) base64-encoded

# KEYS: the key index, the uuid set; ARGV[1] the prefix of recurrence hashes.  Lua
# builds those hashes' names itself: fine on one server (not Redis Cluster).
_ADD = """
local found = redis.call('HGET', KEYS[1], ARGV[2])
if found then return found end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('HSET', ARGV[1] .. ARGV[3], unpack(ARGV, 4))
return ARGV[3]
"""
_SAVE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'run', ARGV[2], 'fire_ns', ARGV[3], 'lease_until_ns', ARGV[4])
return 1
"""
_CLAIM = """
local kinds = {}
for i = 5, #ARGV do kinds[ARGV[i]] = true end
local out = {}
for _, u in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local f = redis.call('HMGET', ARGV[1] .. u, 'kind', 'owner', 'lease_until_ns')
  if kinds[f[1]] and (f[2] == '' or tonumber(f[3]) < tonumber(ARGV[2])) then
    redis.call('HSET', ARGV[1] .. u, 'owner', ARGV[3], 'lease_until_ns', ARGV[4])
    table.insert(out, u)
  end
end
return out
"""
_TICK = """
local last = redis.call('HGET', KEYS[1], ARGV[1])
if last and tonumber(last) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
# Renew (ARGV[3] = the owner again) or release (ARGV[3] = '') what ARGV[2] owns.
_MINE = """
local out = {}
for _, u in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('HGET', ARGV[1] .. u, 'owner') == ARGV[2] then
    redis.call('HSET', ARGV[1] .. u, 'owner', ARGV[3], 'lease_until_ns', ARGV[4])
    table.insert(out, u)
  end
end
return out
"""

# -- the shared queue: one script per verb ----------------------------------------------
# Lua numbers are doubles: times travel as strings and are compared as numbers only
# against each other (a rounding of ~256 ns is harmless there); seq fits exactly.
_QUEUE_FNS = (
    _FINISH_FN
    + """
local function unclaim(p, u, now)
  local key = p .. 'q:e:' .. u
  local f = redis.call('HMGET', key, 'p', 'm')
  if not f[2] then return false end
  local due = string.sub(f[2], 1, 20)
  if tonumber(due) <= tonumber(now) then
    redis.call('ZADD', p .. 'qr', -tonumber(f[1]), f[2])
  else
    redis.call('ZADD', p .. 'qt', due, u)
  end
  return true
end
local function reap(p, now, except)
  local out = {}
  for _, o in ipairs(redis.call('ZRANGEBYSCORE', p .. 'ql', '-inf', '(' .. now)) do
    if o ~= except then
      for _, u in ipairs(redis.call('SMEMBERS', p .. 'qo:' .. o)) do
        if unclaim(p, u, now) then
          redis.call('HSET', p .. 'q:e:' .. u, 'w', '', 'r', '1')
          out[#out + 1] = u
        end
      end
      redis.call('DEL', p .. 'qo:' .. o, p .. 'qx:' .. o)
      redis.call('ZREM', p .. 'ql', o)
    end
  end
  return out
end
local function take(p, u, m, owner, lease)
  local key = p .. 'q:e:' .. u
  redis.call('ZREM', p .. 'qr', m)
  redis.call('HSET', key, 'w', owner)
  redis.call('SADD', p .. 'qo:' .. owner, u)
  local f = redis.call('HMGET', key, 'v', 'r', 'z')
  local seq = tonumber(string.sub(m, 21, 32))
  -- JSON by concatenation: v is JSON already; one string to parse, in C
  return '[' .. f[1] .. ',' .. seq .. ',"' .. owner .. '",' .. lease .. ',' .. f[2] .. ','
    .. f[3] .. ',"' .. u .. '"]'
end
"""
)
# ARGV: prefix, now, JSON [[uuid, kind, priority, due (20 digits), v, created, origin],
# ...], JSON _WRITE entries; v: the entry's fixed fields as JSON text (_entry)
_ENQUEUE = (
    _QUEUE_FNS
    + """
local p, now = ARGV[1], ARGV[2]
local entries = cjson.decode(ARGV[3])
local skip, n = {}, 0
local seq = redis.call('INCRBY', p .. 'qseq', #entries) - #entries
for _, e in ipairs(entries) do
  local u = e[1]
  local key = p .. 'q:e:' .. u
  if skip[u] or redis.call('EXISTS', key, p .. 'i:' .. u) > 0 then
    skip[u] = true
  else
    seq = seq + 1
    local m = e[4] .. string.format('%012d', seq) .. ':' .. u
    redis.call('HSET', key, 'k', e[2], 'p', e[3], 'v', e[5], 'c', e[6], 'g', e[7], 'w', '',
      'r', '0', 'z', '0', 'm', m)
    redis.call('SADD', p .. 'qa', u)
    if tonumber(e[4]) <= tonumber(now) then
      redis.call('ZADD', p .. 'qr', -tonumber(e[3]), m)
    else
      redis.call('ZADD', p .. 'qt', e[4], u)
    end
    n = n + 1
  end
end
write_entries(p, cjson.decode(ARGV[4]), skip)
return n
"""
)
# ARGV: prefix, owner, limit, now, lease end, now as 20 digits.  An entry lands in the
# ready set when it is due by the producer's clock; one not due yet by the claimer's
# goes back to the timed set.
_QCLAIM = (
    _QUEUE_FNS
    + """
local p, owner, limit, now, lease = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local nowpad = ARGV[6]
reap(p, now, owner)
redis.call('ZADD', p .. 'ql', lease, owner)
local out = {}
if limit <= 0 then return '[]' end
for _, u in ipairs(redis.call('ZRANGEBYSCORE', p .. 'qt', '-inf', now, 'LIMIT', 0, 10000)) do
  unclaim(p, u, now)
  redis.call('ZREM', p .. 'qt', u)
end
while #out < limit do
  local ms = redis.call('ZRANGE', p .. 'qr', 0, limit - #out - 1)
  if #ms == 0 then break end
  for _, m in ipairs(ms) do
    local u = string.sub(m, 34)
    if string.sub(m, 1, 20) > nowpad then
      redis.call('ZREM', p .. 'qr', m)
      redis.call('ZADD', p .. 'qt', string.sub(m, 1, 20), u)
    else
      out[#out + 1] = take(p, u, m, owner, lease)
    end
  end
end
return '[' .. table.concat(out, ',') .. ']'
"""
)
_QRENEW = """
redis.call('ZADD', ARGV[1] .. 'ql', ARGV[3], ARGV[2])
return redis.call('SCARD', ARGV[1] .. 'qo:' .. ARGV[2])
"""
_QREAP = (
    _QUEUE_FNS
    + """
return reap(ARGV[1], ARGV[2], '')
"""
)
_QFINISH = (
    _QUEUE_FNS
    + """
for i = 2, #ARGV do finish(ARGV[1], ARGV[i]) end
return 1
"""
)
# ARGV: prefix, owner, uuids... (none: all of them)
_QRELEASE = (
    _QUEUE_FNS
    + """
local p, owner = ARGV[1], ARGV[2]
local uuids = {}
if #ARGV > 2 then
  for i = 3, #ARGV do uuids[#uuids + 1] = ARGV[i] end
else
  uuids = redis.call('SMEMBERS', p .. 'qo:' .. owner)
end
local n = 0
for _, u in ipairs(uuids) do
  if redis.call('SREM', p .. 'qo:' .. owner, u) == 1 then
    redis.call('SREM', p .. 'qx:' .. owner, u)
    redis.call('HSET', p .. 'q:e:' .. u, 'w', '')
    unclaim(p, u, '+inf')
    n = n + 1
  end
end
if #ARGV == 2 then
  redis.call('DEL', p .. 'qo:' .. owner, p .. 'qx:' .. owner)
  redis.call('ZREM', p .. 'ql', owner)
end
return n
"""
)
# ARGV: prefix, owner, lease end, uuid or '', kind or '', created after or '', before or ''
_QCANCEL = (
    _QUEUE_FNS
    + """
local p, owner, lease = ARGV[1], ARGV[2], ARGV[3]
local uuid, kind, after, before = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local candidates
if uuid ~= '' then candidates = {uuid} else candidates = redis.call('SMEMBERS', p .. 'qa') end
local taken, flagged = {}, {}
for _, u in ipairs(candidates) do
  local key = p .. 'q:e:' .. u
  local f = redis.call('HMGET', key, 'k', 'c', 'w', 'z', 'm')
  if f[5] and (kind == '' or f[1] == kind)
      and (after == '' or tonumber(f[2]) >= tonumber(after))
      and (before == '' or tonumber(f[2]) < tonumber(before)) then
    if f[3] == '' then
      redis.call('ZREM', p .. 'qt', u)
      redis.call('HSET', key, 'z', '2')
      taken[#taken + 1] = take(p, u, f[5], owner, lease)
    elseif f[3] ~= owner and f[4] == '0' then
      redis.call('HSET', key, 'z', '1')
      redis.call('SADD', p .. 'qx:' .. f[3], u)
      flagged[#flagged + 1] = u
    end
  end
end
if #taken > 0 then redis.call('ZADD', p .. 'ql', lease, owner) end
return {'[' .. table.concat(taken, ',') .. ']', flagged}
"""
)
_QREQUESTS = """
local p, owner = ARGV[1], ARGV[2]
local out = redis.call('SMEMBERS', p .. 'qx:' .. owner)
for _, u in ipairs(out) do
  local key = p .. 'q:e:' .. u
  if redis.call('EXISTS', key) == 1 then redis.call('HSET', key, 'z', '2') end
end
redis.call('DEL', p .. 'qx:' .. owner)
return out
"""
_QTAKEN = """
local p, key, limit = ARGV[1], ARGV[1] .. 'qd:' .. ARGV[2], tonumber(ARGV[3])
local uuids = redis.call('LRANGE', key, 0, limit - 1)
redis.call('LTRIM', key, limit, -1)
local out = {}
for _, u in ipairs(uuids) do
  local f = redis.call('HMGET', p .. 'i:' .. u, 'j', 'r')
  out[#out + 1] = {u, f[1], f[2]}
end
return out
"""


def _text(payload: bytes | None) -> str:
    """A result payload as JSON text: a JSON payload is text already; any other goes
    base64 (cjson would turn bytes over 0x7f into UTF-8)."""
    if not payload:
        return ""
    if payload[:1] == b"J" and payload.isascii():
        return payload.decode()
    return (B64 + base64.b64encode(payload)).decode()


def _payload(raw: bytes | None) -> bytes | None:
    """A result payload as kept (see _text) -> the payload."""
    if raw is None:
        return None
    if raw[:1] == B64:
        return base64.b64decode(raw[1:])
    return raw


_FIELDS = ("uuid", "kind", "state", "priority", "attempts", "created_ns", "scheduled_ns",
           "processed_ns", "completed_ns")  # fmt: skip


class RedisStore(Store):
    """RedisStore(url="redis://127.0.0.1:6379/0", namespace="jobengine",
    max_instances=None, max_age=None)."""

    requires_signed_pickles = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        namespace: str = "jobengine",
        max_instances: int | None = None,
        max_age: float | None = None,
    ):
        if _redis is None:
            raise StoreError("RedisStore needs redis-py: pip install 'jobengine[redis]'")
        if not isinstance(namespace, str) or not namespace or ":" in namespace:
            raise StoreError(f"Redis namespace {namespace!r} must be a non-empty str without ':'")
        self.namespace = namespace
        self.set_retention(max_instances, max_age)
        self.url = url
        try:
            self._r = _redis.Redis.from_url(url)
            self._r.ping()
        except _redis.RedisError as e:
            raise StoreError(f"cannot reach Redis at {url!r}: {e}") from e
        self._p = f"{namespace}:"
        self._forgotten = 0  # instances forgotten since the order list was compacted

    def _k(self, kind: str, uuid: str = "") -> str:
        return f"{self._p}{kind}:{uuid}" if uuid else f"{self._p}{kind}"

    def _run(self, fn):
        try:
            return fn()
        except _redis.RedisError as e:
            raise StoreError(f"Redis store {self.url!r}: {e}") from e

    def spec(self) -> dict[str, Any] | None:
        return {
            "url": self.url,
            "namespace": self.namespace,
            "max_instances": self.max_instances,
            "max_age": self.max_age,
        }

    def reconnect(self) -> None:
        # redis-py reconnects on the next command; drop what may be half-broken now.
        self._r.connection_pool.disconnect()

    # -- writes ------------------------------------------------------------------------
    def write_batch(
        self,
        instances: Sequence[tuple],
        states: Sequence[tuple],
        logs: Sequence[tuple],
        token: tuple[str, int] | None = None,
    ) -> None:
        self.write_prepared(self.prepare_batch(instances, states, logs, token))

    def write_prepared(self, prepared: Any) -> None:
        script = self._script("write", _WRITE)
        self._run(lambda: script(keys=[], args=[self._p, prepared]))

    def prepare_batch(
        self,
        instances: Sequence[tuple],
        states: Sequence[tuple],
        logs: Sequence[tuple],
        token: tuple[str, int] | None = None,
    ) -> Any:
        node = token[0] if token is not None else ""
        seq = str(token[1]) if token is not None else ""
        return orjson.dumps((node, seq, self._batch_entries(instances, states, logs)))

    def _batch_entries(
        self, instances: Sequence[tuple], states: Sequence[tuple], logs: Sequence[tuple]
    ) -> list[tuple]:
        """The rows of one batch as _WRITE's per-uuid entries."""
        codec = self.codec
        dumps = orjson.dumps
        retained = self.max_instances is not None or self.max_age is not None
        per: dict[str, list] = {}  # uuid -> [json, result, done, first, states, logs, final]
        for r in instances:
            payload, error, note = outcome_columns(r[9], codec)
            # the instance as a JSON array: its fields in INSTANCE_FIELDS order, then its
            # error and note
            j = dumps((*r[:9], error, note) if error is not None or note is not None else r[:9])
            final = r[2] in FINAL_STATES
            done = str(r[8] or 0) if retained and final else ""
            per[r[0]] = [j.decode(), _text(payload), done, "", None, None, "1" if final else ""]
        for r in states:
            u = r[0]
            entry = per.get(u)
            if entry is None:
                entry = per[u] = ["", "", "", "", None, None, ""]
            group = entry[4]
            if group is None:
                group = entry[4] = [r[1], []]
            if r[2] == _CREATED:
                entry[3] = "1"
            group[1].append(r[2:])
        for u, k, lv, t, m, a in logs:
            entry = per.get(u)
            if entry is None:
                entry = per[u] = ["", "", "", "", None, None, ""]
            if entry[5] is None:
                entry[5] = []
            entry[5].append(dumps((lv, t, m, a, k)).decode())
        entries = []
        for u, (j, res, done, first, group, ls, final) in per.items():
            history = [dumps(group).decode()] if group is not None else []
            if ls is None:
                entries.append((u, j, res, done, first, history, (), final))
                continue
            # (an instance with thousands of log lines in one batch goes in slices)
            for i in range(0, len(ls), MAX_ENTRY_RECORDS):
                part = ls[i : i + MAX_ENTRY_RECORDS]
                if i == 0:
                    entries.append((u, j, res, done, first, history, part, final))
                else:
                    entries.append((u, "", "", "", "", (), part, ""))
        return entries

    def put_instances(self, batch: Sequence[InstanceRecord]) -> None:
        if not batch:
            return
        retained = self.max_instances is not None or self.max_age is not None

        def go():
            pipe = self._r.pipeline(transaction=False)
            for r in batch:
                pipe.exists(self._k("i", r.uuid))
            known = pipe.execute()
            pipe = self._r.pipeline(transaction=False)
            for r, exists in zip(batch, known, strict=True):
                mapping = {"j": orjson.dumps(r.to_dict())}
                if r.result_payload is not None:
                    mapping["r"] = _text(r.result_payload)
                pipe.hset(self._k("i", r.uuid), mapping=mapping)
                if not exists:  # a known uuid keeps its first place in creation order
                    pipe.rpush(self._k("order"), r.uuid)
                if retained and int(r.state) in FINAL_STATES:
                    pipe.zadd(self._k("done"), {r.uuid: r.completed_ns or 0})
            pipe.execute()

        self._run(go)

    def append_states(self, batch: Sequence[StateRecord]) -> None:  # (grouped per uuid)
        self.write_batch((), [(r.uuid, r.kind, int(r.state), r.time_ns, r.attempt, r.worker,
                               r.run, r.cause) for r in batch], ())  # fmt: skip

    def append_logs(self, batch: Sequence[LogRecord]) -> None:
        self.write_batch((), (), [(r.uuid, r.kind, int(r.level), r.time_ns, r.message, r.attempt)
                                  for r in batch])  # fmt: skip

    # -- reads -------------------------------------------------------------------------
    def _instance(self, uuid: str, raw: Any, result: Any) -> InstanceRecord | None:
        try:
            v = orjson.loads(raw)
            if isinstance(v, dict):  # written by put_instances
                v = [*(v[f] for f in _FIELDS), v.get("error"), v.get("note")]
            fields = list(v[:9])
            fields[2] = State(fields[2])
            error, note = (v[9], v[10]) if len(v) > 9 else (None, None)
            return InstanceRecord(*fields, _payload(result), error, note, self.codec)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            key = self._k("i", uuid)
            log.warning("jobengine: skipping %s: not an instance record (%s)", key, e)
            return None

    def get_instance(self, uuid: str) -> InstanceRecord | None:
        raw, result = self._run(lambda: self._r.hmget(self._k("i", uuid), "j", "r"))
        return None if raw is None else self._instance(uuid, raw, result)

    def lookup_instances(self, query: Query) -> list[InstanceRecord]:
        if query.uuid is not None:
            r = self.get_instance(query.uuid)
            candidates = [] if r is None else [r]
        else:
            uuids = list(dict.fromkeys(
                u.decode() for u in self._run(lambda: self._r.lrange(self._k("order"), 0, -1))
            ))  # fmt: skip

            def fetch():
                pipe = self._r.pipeline(transaction=False)
                for u in uuids:
                    pipe.hmget(self._k("i", u), "j", "r")
                return pipe.execute()

            candidates = []
            for u, (raw, result) in zip(uuids, self._run(fetch), strict=True):
                if raw is not None and (rec := self._instance(u, raw, result)) is not None:
                    candidates.append(rec)
        out = []
        for r in candidates:
            if query.limit is not None and len(out) >= query.limit:
                break
            if query.matches(r.uuid, r.kind, r.state, r.created_ns):
                out.append(r)
        return out

    def _list(self, kind: str, uuid: str) -> list[list]:
        out = []
        for x in self._run(lambda: self._r.lrange(self._k(kind, uuid), 0, -1)):
            try:
                out.append(orjson.loads(x))
            except orjson.JSONDecodeError:
                log.warning("jobengine: skipping a record of %s: not JSON", self._k(kind, uuid))
        return out

    def lookup_history(self, uuid: str) -> list[StateRecord]:
        out = []
        for group in self._list("s", uuid):
            try:
                k, recs = group
                for st, t, a, w, run, c in recs:
                    out.append(StateRecord(uuid, k, State(st), t, a, w, run, c))
            except (TypeError, ValueError) as e:
                log.warning("jobengine: skipping a record of %s (%s)", self._k("s", uuid), e)
        return out

    def lookup_logs(self, uuid: str) -> list[LogRecord]:
        out = []
        for rec in self._list("l", uuid):
            try:
                lv, t, m, a, k = rec
                out.append(LogRecord(uuid, k, LogLevel(lv), t, m, a))
            except (TypeError, ValueError) as e:
                log.warning("jobengine: skipping a record of %s (%s)", self._k("l", uuid), e)
        return out

    # -- retention and deletes ---------------------------------------------------------
    def _forget(self, uuids: Sequence[str]) -> None:
        """Delete instances with their histories, logs and index entries."""
        if not uuids:
            return

        def go():
            pipe = self._r.pipeline(transaction=False)
            for u in uuids:
                pipe.delete(self._k("i", u), self._k("s", u), self._k("l", u))
            pipe.zrem(self._k("done"), *uuids)
            pipe.execute()

        self._run(go)
        self._forgotten += len(uuids)
        if self._forgotten > 10_000:
            self._compact_order()

    def _compact_order(self) -> None:
        """Drop the uuids of forgotten instances from the order list (they are skipped
        on lookup meanwhile)."""
        self._forgotten = 0
        order = self._k("order")

        def go():
            uuids = self._r.lrange(order, 0, -1)
            pipe = self._r.pipeline(transaction=False)
            for u in uuids:
                pipe.exists(self._k("i", u.decode()))
            alive = [u for u, e in zip(uuids, pipe.execute(), strict=True) if e]
            pipe = self._r.pipeline(transaction=True)
            pipe.delete(order)
            for i in range(0, len(alive), 1000):
                pipe.rpush(order, *alive[i : i + 1000])
            pipe.execute()

        self._run(go)

    def apply_retention(self, now_ns: int) -> int:
        n = 0
        done = self._k("done")
        if self.max_age is not None:
            cutoff = now_ns - int(self.max_age * 1e9)
            while True:
                old = self._run(lambda: self._r.zrangebyscore(done, "-inf", f"({cutoff}", 0, 1000))
                if not old:
                    break
                self._forget([u.decode() for u in old])
                n += len(old)
        if self.max_instances is not None:
            excess = self._run(lambda: self._r.zcard(done)) - self.max_instances
            while excess > 0:
                last = min(excess, 1000) - 1
                old = self._run(lambda last=last: self._r.zrange(done, 0, last))
                self._forget([u.decode() for u in old])
                n += len(old)
                excess -= len(old)
        return n

    def _clear_lists(
        self, kind: str, at: int, before_ns: int | None, after_ns: int | None
    ) -> tuple[int, list[str]]:
        """Delete the records (time at index `at`) in [after_ns, before_ns) from every
        list of `kind` (for "s", inside each element's group); return how many, and the
        uuids left with none."""

        def inside(t: int) -> bool:
            return (after_ns is None or t >= after_ns) and (before_ns is None or t < before_ns)

        n = 0
        emptied = []
        for key in self._run(lambda: list(self._r.scan_iter(match=self._k(kind, "*"),
                                                            count=1000))):  # fmt: skip
            raw = self._run(lambda key=key: self._r.lrange(key, 0, -1))
            before = n
            keep = []
            for x in raw:
                try:
                    value = orjson.loads(x)
                    if kind == "s":  # a group: [kind, [records]]
                        recs = value[1]
                        left = [r for r in recs if not inside(r[at])]
                        n += len(recs) - len(left)
                        if left:
                            keep.append(orjson.dumps([value[0], left]) if len(left) < len(recs)
                                        else x)  # fmt: skip
                        continue
                    t = value[at]
                except (orjson.JSONDecodeError, IndexError, TypeError):
                    keep.append(x)  # not ours to judge: left alone
                    continue
                if inside(t):
                    n += 1
                else:
                    keep.append(x)
            if n == before:
                continue

            def rewrite(key=key, keep=keep):
                pipe = self._r.pipeline(transaction=True)
                pipe.delete(key)
                if keep:
                    pipe.rpush(key, *keep)
                pipe.execute()

            self._run(rewrite)
            if not keep:
                emptied.append(key.decode()[len(f"{self._p}{kind}:") :])
        return n, emptied

    def clear_history(self, before_ns: int | None = None, after_ns: int | None = None) -> int:
        n, emptied = self._clear_lists("s", 1, before_ns, after_ns)
        finished = [
            u
            for u in emptied
            if (rec := self.get_instance(u)) is None or int(rec.state) in FINAL_STATES
        ]
        self._forget(finished)
        return n

    def clear_logs(self, before_ns: int | None = None, after_ns: int | None = None) -> int:
        return self._clear_lists("l", 1, before_ns, after_ns)[0]

    # -- recurrences -------------------------------------------------------------------
    def _script(self, name: str, src: str):
        scripts = self.__dict__.setdefault("_scripts", {})
        if name not in scripts:
            scripts[name] = self._r.register_script(src)
        return scripts[name]

    def _recurrence(self, uuid: str) -> RecurrenceRecord | None:
        raw = self._r.hgetall(self._k("r", uuid))
        if not raw:
            return None
        f = {k.decode(): v for k, v in raw.items()}
        return RecurrenceRecord(
            f["uuid"].decode(), f["kind"].decode(), f["key"].decode(), f["payload"],
            int(f["priority"]), int(f["run"]), int(f["fire_ns"]), int(f["created_ns"]),
            f["owner"].decode() or None, int(f["lease_until_ns"]),
        )  # fmt: skip

    def _rkeys(self) -> list[str]:
        return [self._k("rk"), self._k("rs")]

    def add_recurrence(self, rec: RecurrenceRecord) -> RecurrenceRecord:
        fields = []
        for name, value in zip(RecurrenceRecord.FIELDS, rec.as_tuple(), strict=True):
            fields += [name, "" if value is None else value]

        def go():
            uuid = self._script("add", _ADD)(
                keys=self._rkeys(), args=[self._p + "r:", rec.key, rec.uuid, *fields]
            ).decode()
            return rec if uuid == rec.uuid else self._recurrence(uuid)

        return self._run(go)

    def save_recurrence(self, rec: RecurrenceRecord) -> bool:
        return bool(
            self._run(
                lambda: self._script("save", _SAVE)(
                    keys=[self._k("r", rec.uuid)],
                    args=[rec.owner or "", rec.run, rec.fire_ns, rec.lease_until_ns],
                )
            )
        )

    def claim_recurrences(
        self, owner: str, kinds: Sequence[str], now_ns: int, lease_until_ns: int
    ) -> list[RecurrenceRecord]:
        if not kinds:
            return []

        def go():
            uuids = self._script("claim", _CLAIM)(
                keys=self._rkeys(),
                args=[self._p + "r:", now_ns, owner, lease_until_ns, *kinds],
            )
            recs = [self._recurrence(u.decode()) for u in uuids]
            return sorted((r for r in recs if r is not None), key=lambda r: r.created_ns)

        return self._run(go)

    def _mine(self, owner: str, new_owner: str, lease_until_ns: int) -> list[bytes]:
        return self._run(
            lambda: self._script("mine", _MINE)(
                keys=self._rkeys(), args=[self._p + "r:", owner, new_owner, lease_until_ns]
            )
        )

    def renew_recurrences(self, owner: str, lease_until_ns: int) -> set[str]:
        return {u.decode() for u in self._mine(owner, owner, lease_until_ns)}

    def release_recurrences(self, owner: str) -> int:
        return len(self._mine(owner, "", 0))

    def delete_recurrence(self, uuid: str) -> None:
        def go():
            key = self._r.hget(self._k("r", uuid), "key")
            pipe = self._r.pipeline(transaction=True)
            if key is not None:
                pipe.hdel(self._k("rk"), key)
                pipe.hdel(self._k("tick"), key)
            pipe.srem(self._k("rs"), uuid)
            pipe.delete(self._k("r", uuid))
            pipe.execute()

        self._run(go)

    def claim_tick(self, schedule_key: str, fire_ns: int) -> bool:
        # Lua compares as doubles: ns ticks a second or more apart stay distinct.
        return bool(
            self._run(
                lambda: self._script("tick", _TICK)(
                    keys=[self._k("tick")], args=[schedule_key, fire_ns]
                )
            )
        )

    def lookup_recurrences(self, kind: str | None = None) -> list[RecurrenceRecord]:
        def go():
            uuids = self._r.smembers(self._k("rs"))
            recs = [self._recurrence(u.decode()) for u in uuids]
            return [r for r in recs if r is not None and (kind is None or r.kind == kind)]

        return sorted(self._run(go), key=lambda r: r.created_ns)

    # -- the shared queue --------------------------------------------------------------
    supports_queue = True

    def _qrun(self, name: str, src: str, *args: Any) -> Any:
        script = self._script(name, src)
        return self._run(lambda: script(keys=[], args=[self._p, *args]))

    @staticmethod
    def _entries(reply: bytes) -> list[QueueEntry]:
        """A claim's reply: a JSON list of [v, seq, owner, lease, reaped, canceled, uuid],
        v = [kind, priority, due, payload, target, executor, options, attempts, created,
        origin] (the fields fixed at enqueue)."""
        out = []
        for v, seq, owner, lease, reaped, canceled, uuid in orjson.loads(reply):
            k, prio, due, payload, target, executor, options, attempts, created, origin = v
            out.append(QueueEntry(uuid, k, prio, due, seq, _payload(payload.encode()) or b"",
                                  target, executor and _payload(executor.encode()), options,
                                  attempts, created, origin, owner, lease, reaped == 1,
                                  canceled != 0))  # fmt: skip
        return out

    def enqueue(
        self,
        entries: Sequence[QueueEntry],
        instances: Sequence[tuple] = (),
        states: Sequence[tuple] = (),
    ) -> int:
        if not entries:
            return 0
        dumps = orjson.dumps
        rows = [(e.uuid, e.kind, str(e.priority), f"{e.due_ns:020d}",
                 dumps((e.kind, e.priority, e.due_ns, _text(e.payload), e.target,
                        _text(e.executor) or None, e.options, e.attempts, e.created_ns,
                        e.origin)).decode(),
                 str(e.created_ns), e.origin or "")
                for e in entries]  # fmt: skip
        batch = self._batch_entries(instances, states, ())
        return int(self._qrun("enqueue", _ENQUEUE, time.time_ns(), orjson.dumps(rows),
                              orjson.dumps(batch)))  # fmt: skip

    def claim(self, owner: str, limit: int, now_ns: int, lease_until_ns: int) -> list[QueueEntry]:
        return self._entries(self._qrun("qclaim", _QCLAIM, owner, max(0, int(limit)), now_ns,
                                        lease_until_ns, f"{now_ns:020d}"))  # fmt: skip

    def renew_claims(self, owner: str, lease_until_ns: int) -> int:
        return int(self._qrun("qrenew", _QRENEW, owner, lease_until_ns))

    def reap(self, now_ns: int) -> list[str]:
        return [u.decode() for u in self._qrun("qreap", _QREAP, now_ns)]

    def finish(self, uuids: Sequence[str]) -> None:
        for i in range(0, len(uuids), 1000):
            self._qrun("qfinish", _QFINISH, *uuids[i : i + 1000])

    def release(self, owner: str, uuids: Sequence[str] | None = None) -> int:
        if uuids is None:
            return int(self._qrun("qrelease", _QRELEASE, owner))
        return sum(int(self._qrun("qrelease", _QRELEASE, owner, *uuids[i : i + 1000]))
                   for i in range(0, len(uuids), 1000))  # fmt: skip

    def cancel_queued(
        self, query: Query, owner: str, lease_until_ns: int
    ) -> tuple[list[QueueEntry], list[str]]:
        if not may_be_queued(query):
            return [], []

        def text(v: Any) -> str:
            return "" if v is None else str(v)

        taken, flagged = self._qrun(
            "qcancel", _QCANCEL, owner, lease_until_ns, text(query.uuid), text(query.kind),
            text(query.after_ns), text(query.before_ns),
        )  # fmt: skip
        return self._entries(taken), [u.decode() for u in flagged]

    def cancel_requests(self, owner: str) -> list[str]:
        return [u.decode() for u in self._qrun("qrequests", _QREQUESTS, owner)]

    def take_finished(self, origin: str, limit: int = 1000) -> list[InstanceRecord]:
        out = []
        for u, raw, result in self._qrun("qtaken", _QTAKEN, origin, int(limit)):
            if raw and (rec := self._instance(u.decode(), raw, result or None)) is not None:
                out.append(rec)
        return out

    def queue_length(self) -> int:
        return int(self._run(lambda: self._r.scard(self._k("qa"))))

    def clear(self) -> None:
        def go():
            keys = list(self._r.scan_iter(match=f"{self._p}*", count=1000))
            for i in range(0, len(keys), 500):
                self._r.delete(*keys[i : i + 500])

        self._run(go)

    def close(self) -> None:
        self._r.close()
