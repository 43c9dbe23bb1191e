"""RedisStore: the Store contract on a Redis server (redis-py).

Keys, all under the namespace prefix `<ns>:` (clear() deletes only those):
  <ns>:order            sorted set: uuid -> creation sequence (lookup order)
  <ns>:seq              counter behind it
  <ns>:i:<uuid>         hash: the InstanceRecord (JSON fields)
  <ns>:s:<uuid>         list: state records (orjson)
  <ns>:l:<uuid>         list: log records (orjson)
  <ns>:st / <ns>:lt     sorted sets: "<uuid> <n>" members scored by time, for clear_*
  <ns>:r:<uuid>         hash: a RecurrenceRecord (one field per attribute)
  <ns>:rk               hash: schedule key -> uuid;  <ns>:rs  set of recurrence uuids
  <ns>:tick             hash: schedule key -> its latest claimed tick (ns)
Every batch is one pipeline (one round trip).  Each recurrence verb is one Lua script,
which Redis runs atomically: two managers claiming at once never both win.  The
distributed queue verbs for one-off jobs (enqueue, claim, ...) are not here yet: they
arrive with the distributed-store issue.

Owns: its connection, its keys and its Lua scripts.  Never does: touch keys outside its
namespace."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from ..errors import StoreError
from ..query import Query
from ..records import InstanceRecord, LogRecord, RecurrenceRecord, StateRecord
from .base import Store

try:
    import redis as _redis
except ImportError:  # pragma: no cover - exercised only without the extra
    _redis = None


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


class RedisStore(Store):
    """RedisStore(url="redis://127.0.0.1:6379/0", namespace="jobengine")."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", namespace: str = "jobengine"):
        if _redis is None:
            raise StoreError("RedisStore needs redis-py: pip install 'jobengine[redis]'")
        if not isinstance(namespace, str) or not namespace or ":" in namespace:
            raise StoreError(f"Redis namespace {namespace!r} must be a non-empty str without ':'")
        self.namespace = namespace
        self.url = url
        try:
            self._r = _redis.Redis.from_url(url)
            self._r.ping()
        except _redis.RedisError as e:
            raise StoreError(f"cannot reach Redis at {url!r}: {e}") from e
        self._p = f"{namespace}:"

    def _k(self, kind: str, uuid: str = "") -> str:
        return f"{self._p}{kind}:{uuid}" if uuid else f"{self._p}{kind}"

    def _run(self, fn):
        try:
            return fn()
        except _redis.RedisError as e:
            raise StoreError(f"Redis store {self.url!r}: {e}") from e

    # -- writes ------------------------------------------------------------------------
    def put_instances(self, batch: Sequence[InstanceRecord]) -> None:
        if not batch:
            return

        def go():
            pipe = self._r.pipeline(transaction=False)
            seq = self._r.incrby(self._k("seq"), len(batch))
            for n, r in enumerate(batch):
                pipe.hset(self._k("i", r.uuid), mapping={"j": orjson.dumps(r.to_dict())})
                # NX: a known uuid keeps its first place in creation order
                pipe.zadd(self._k("order"), {r.uuid: seq - len(batch) + n}, nx=True)
            pipe.execute()

        self._run(go)

    def _append(self, kind: str, timeline: str, batch: Sequence) -> None:
        if not batch:
            return

        def go():
            pipe = self._r.pipeline(transaction=False)
            for r in batch:
                pipe.rpush(self._k(kind, r.uuid), orjson.dumps(r.to_dict()))
            lengths = pipe.execute()
            pipe = self._r.pipeline(transaction=False)
            for r, length in zip(batch, lengths, strict=True):
                pipe.zadd(self._k(timeline), {f"{r.uuid} {length - 1}": r.time_ns})
            pipe.execute()

        self._run(go)

    def append_states(self, batch: Sequence[StateRecord]) -> None:
        self._append("s", "st", batch)

    def append_logs(self, batch: Sequence[LogRecord]) -> None:
        self._append("l", "lt", batch)

    # -- reads -------------------------------------------------------------------------
    def get_instance(self, uuid: str) -> InstanceRecord | None:
        raw = self._run(lambda: self._r.hget(self._k("i", uuid), "j"))
        return None if raw is None else InstanceRecord.from_dict(orjson.loads(raw))

    def lookup_instances(self, query: Query) -> list[InstanceRecord]:
        if query.uuid is not None:
            r = self.get_instance(query.uuid)
            candidates = [] if r is None else [r]
        else:
            uuids = self._run(lambda: self._r.zrange(self._k("order"), 0, -1))

            def fetch():
                pipe = self._r.pipeline(transaction=False)
                for u in uuids:
                    pipe.hget(self._k("i", u.decode()), "j")
                return pipe.execute()

            candidates = [InstanceRecord.from_dict(orjson.loads(x)) for x in self._run(fetch) if x]
        out = []
        for r in candidates:
            if query.limit is not None and len(out) >= query.limit:
                break
            if query.matches(r.uuid, r.kind, r.state, r.created_ns):
                out.append(r)
        return out

    def lookup_history(self, uuid: str) -> list[StateRecord]:
        rows = self._run(lambda: self._r.lrange(self._k("s", uuid), 0, -1))
        return [StateRecord.from_dict(orjson.loads(x)) for x in rows if x != b"-"]

    def lookup_logs(self, uuid: str) -> list[LogRecord]:
        rows = self._run(lambda: self._r.lrange(self._k("l", uuid), 0, -1))
        return [LogRecord.from_dict(orjson.loads(x)) for x in rows if x != b"-"]

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

    # -- deletes -----------------------------------------------------------------------
    def _clear(self, kind: str, timeline: str, before_ns, after_ns) -> int:
        lo = "-inf" if after_ns is None else after_ns
        hi = "+inf" if before_ns is None else f"({before_ns}"

        def go():
            members = self._r.zrangebyscore(self._k(timeline), lo, hi)
            if not members:
                return 0
            pipe = self._r.pipeline(transaction=False)
            touched = set()
            for m in members:
                uuid, index = m.decode().rsplit(" ", 1)
                # Tombstone in place (indexes of the others stay valid), then compact.
                pipe.lset(self._k(kind, uuid), int(index), b"-")
                touched.add(uuid)
            pipe.zrem(self._k(timeline), *members)
            pipe.execute()
            for uuid in touched:
                key = self._k(kind, uuid)
                if all(x == b"-" for x in self._r.lrange(key, 0, -1)):
                    self._r.delete(key)
            return len(members)

        return self._run(go)

    def clear_history(self, before_ns: int | None = None, after_ns: int | None = None) -> int:
        return self._clear("s", "st", before_ns, after_ns)

    def clear_logs(self, before_ns: int | None = None, after_ns: int | None = None) -> int:
        return self._clear("l", "lt", before_ns, after_ns)

    def clear(self) -> None:
        def go():
            keys = list(self._r.scan_iter(match=f"{self._p}*", count=1000))
            for i in range(0, len(keys), 500):
                self._r.delete(*keys[i : i + 500])

        self._run(go)

    def close(self) -> None:
        self._r.close()
