"""What a store keeps of Python values (arguments, results): one policy for every store.

    b"J" + JSON          the value is JSON-native (None, bool, int, float, str, and lists
                         and str-keyed dicts of those): anyone can read it, it runs
                         nothing when loaded
    b"S" + HMAC + pickle anything else, pickled and signed with HMAC-SHA256 under the
                         user's secret (Manager(secret=...) or JOBENGINE_SECRET)
    b"P" + pickle        unsigned: only where the store's data is as private as the
                         process itself (MemoryStore; SQLiteStore, a file of the user's)

A store shared over the network (Redis, PostgreSQL) refuses to keep or load an unsigned
pickle: anyone who can write there could otherwise run code in every manager that loads
it.  A payload whose signature does not verify is refused (PayloadError), never
unpickled.

Owns: encoding and decoding payloads, and the secret.  Never does: I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
from typing import Any

import cloudpickle
import orjson

from .errors import StoreError

JSON, SIGNED, PICKLE = b"J", b"S", b"P"
DIGEST_BYTES = 32
MAX_JSON_DEPTH = 64
# The most a store keeps of one result: a larger one is not stored, and the record says
# so (the manager that ran it still returns it from the Future).
MAX_RESULT_BYTES = 1 << 20


class PayloadError(StoreError):
    """A payload cannot be stored or loaded under the policy: a pickle where only a
    signed one is allowed, a signature that does not verify, or garbage."""


def dumps_value(value: Any) -> bytes:
    """Pickle arguments or a value as every process of jobengine loads them: by
    reference, except what the user's script (__main__) defines, which other processes
    cannot import by name, so it goes by value (cloudpickle).  Raises what pickle
    raises for a value that cannot be pickled."""
    raw = pickle.dumps(value, protocol=5)
    # (find, not `in`: bytes.__contains__ tries its argument as an int first, and the
    # TypeError it makes and clears costs ~0.3 us, more than the search)
    if raw.find(b"__main__") != -1:
        raw = cloudpickle.dumps(value, protocol=5)
    return raw


def secret_from(value: str | bytes | None) -> bytes | None:
    """The signing key: the given value, else JOBENGINE_SECRET, else None."""
    if value is None:
        value = os.environ.get("JOBENGINE_SECRET") or None
    if value is None:
        return None
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes) or not value:
        raise PayloadError("the secret must be a non-empty str or bytes")
    return value


def json_native(value: Any, depth: int = 0) -> bool:
    """Whether JSON carries value as itself (a tuple would come back a list, a
    subclass of int or str as its base: those are not)."""
    t = type(value)
    if value is None or t in (bool, int, float, str):
        return True
    if depth > MAX_JSON_DEPTH:
        return False
    if t is list:
        return all(json_native(v, depth + 1) for v in value)
    if t is dict:
        return all(type(k) is str and json_native(v, depth + 1) for k, v in value.items())
    return False


class PayloadCodec:
    """The policy for one store: `secret` signs pickles; `require_signed` refuses
    unsigned ones (stores shared over the network)."""

    def __init__(self, secret: bytes | None = None, require_signed: bool = False):
        self.secret = secret
        self.require_signed = require_signed

    def _sign(self, raw: bytes) -> bytes:
        return hmac.new(self.secret, raw, hashlib.sha256).digest()

    def encode(self, value: Any) -> bytes:
        """value -> payload bytes (PayloadError if it must be signed and cannot be)."""
        if json_native(value):
            try:
                return JSON + orjson.dumps(value)
            except (TypeError, orjson.JSONEncodeError):
                pass  # an int too large for JSON: pickled below
        return self.encode_pickled(dumps_value(value))

    def encode_pickled(self, raw: bytes, value: Any = pickle) -> bytes:
        """A value already pickled (raw) -> payload bytes.  `value`, when given, is the
        unpickled value, so a JSON-native one is kept as JSON."""
        if value is not pickle and json_native(value):
            try:
                return JSON + orjson.dumps(value)
            except (TypeError, orjson.JSONEncodeError):
                pass
        if self.secret is not None:
            return SIGNED + self._sign(raw) + raw
        if self.require_signed:
            raise PayloadError(
                "this store is shared over the network, so it keeps a value that is not "
                "JSON-native only as a pickle signed with your key: set "
                "Manager(secret=...) or the JOBENGINE_SECRET environment variable"
            )
        return PICKLE + raw

    def decode(self, data: bytes, what: str = "a payload") -> Any:
        """payload bytes -> the value; PayloadError naming `what` if refused."""
        data = bytes(data)
        tag, body = data[:1], data[1:]
        if tag == JSON:
            try:
                return orjson.loads(body)
            except orjson.JSONDecodeError as e:
                raise PayloadError(f"{what} is not valid JSON: {e}") from None
        if tag == SIGNED:
            if self.secret is None:
                raise PayloadError(
                    f"{what} is a signed pickle and no secret is set to verify it "
                    "(Manager(secret=...) or JOBENGINE_SECRET)"
                )
            digest, raw = body[:DIGEST_BYTES], body[DIGEST_BYTES:]
            if not hmac.compare_digest(digest, self._sign(raw)):
                raise PayloadError(f"{what} has a signature that does not verify: refused")
            return pickle.loads(raw)
        if tag == PICKLE or data[:1] == b"\x80":  # b"\x80": stored before this policy
            if self.require_signed:
                raise PayloadError(f"{what} is an unsigned pickle: refused")
            return pickle.loads(body if tag == PICKLE else data)
        raise PayloadError(f"{what} is not a payload this version can read")


def outcome_columns(
    outcome: tuple | None, codec: PayloadCodec, check_json: bool = True
) -> tuple[bytes | None, dict[str, Any] | None, str | None]:
    """An INSTANCE_ROW's outcome -> what a store keeps: (result payload, error, note).
    check_json: keep a JSON-native result as JSON (it is unpickled to find out)."""
    if outcome is None:
        return None, None, None
    if outcome[0] == "e":
        _, type_name, message, tb = outcome
        return None, {"type": type_name, "message": message, "traceback": tb}, None
    raw = outcome[1]
    if len(raw) > MAX_RESULT_BYTES:
        return None, None, f"result not kept: {len(raw):,} bytes, over {MAX_RESULT_BYTES:,}"
    try:
        value = pickle.loads(raw) if check_json else pickle
        payload = codec.encode_pickled(raw, value)
    except Exception as e:  # the policy refused it (no secret for a shared store)
        return None, None, f"result not kept: {e}"
    if len(payload) > MAX_RESULT_BYTES:
        return None, None, f"result not kept: {len(payload):,} bytes, over {MAX_RESULT_BYTES:,}"
    return payload, None, None


__all__ = [
    "MAX_RESULT_BYTES",
    "PayloadCodec",
    "PayloadError",
    "json_native",
    "outcome_columns",
    "secret_from",
]
