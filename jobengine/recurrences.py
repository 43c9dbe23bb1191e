"""Recurring schedules as the store keeps them, so they outlive the manager running them.

Owns: this manager's node name, its lease on the recurrences it runs, and the store
verbs on them.  It is handed a store, a node name and a lease.  Never does: touch the
engine (ticks.py runs the recurrences; this module only says what the store holds and
who may run what).

- add: a new schedule goes into the store under its schedule key (kind and arguments:
  the crontab is the registered job's, so an edited crontab moves the recurrence rather
  than doubling it); the same schedule there already is returned instead;
- save: each armed tick (run number, tick, renewed lease) is saved with the next batch
  of records (the recorder's store op "save_recurrence"; a cancel's is
  "delete_recurrence");
- claim: take the store's recurrences of some kinds that nobody owns (their manager
  stopped: released) or whose lease lapsed (it died);
- claim_tick: each tick is claimed in the store before it runs, so it runs once even if
  two managers believe they own the recurrence (one paused past its lease);
- renew: every lease / 3 from the engine thread; release: stop() hands them back.

What a recurrence keeps of its arguments follows the store's payload policy
(payloads.py): JSON, or a pickle signed with the user's secret.

Leases are real time (time.time_ns), whatever clock the manager schedules by: they
coordinate processes, which share only the real clock.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from datetime import datetime

from .errors import StoreError
from .ids import uuid7_int
from .records import InstanceRecord, RecurrenceRecord, datetime_to_ns
from .stores.base import Store

log = logging.getLogger("jobengine")


def new_node_name() -> str:
    """A name for this manager in the store: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid7_int() & 0xFFFFFFFF:08x}"


def schedule_key(key_material: bytes) -> str:
    """The key of a schedule (a digest of its pickled kind and arguments)."""
    return hashlib.blake2b(key_material, digest_size=16).hexdigest()


class StoredRecurrences:
    """This manager's view of the recurrences in `store`, as node `node` holding leases
    of `lease` seconds."""

    def __init__(self, store: Store, node: str, lease: float):
        self.store = store
        self.node = node
        self.lease_ns = int(lease * 1e9)
        self.next_renew = 0.0  # time.monotonic() of the next renewal
        self._claim_lock = threading.Lock()  # one claim at a time: each resumes once

    def lease_until(self) -> int:
        """The end of a lease taken or renewed now (Unix ns)."""
        return time.time_ns() + self.lease_ns

    def lapsed(self, rec: RecurrenceRecord) -> bool:
        """Whether nobody runs `rec` (released, or its owner's lease ran out)."""
        return rec.owner is None or rec.lease_until_ns < time.time_ns()

    def add(
        self,
        uuid: str,
        kind: str,
        key_material: bytes,
        payload: bytes,
        priority: int,
        first: datetime,
        created_ns: int,
    ) -> tuple[RecurrenceRecord, RecurrenceRecord]:
        """Put a new recurrence into the store, owned by this node.  Returns (its record,
        the stored one): the stored one is another when the store had the schedule."""
        rec = RecurrenceRecord(uuid, kind, schedule_key(key_material), payload, priority, 1,
                               datetime_to_ns(first), created_ns, self.node,
                               self.lease_until())  # fmt: skip
        return rec, self.store.add_recurrence(rec)

    def claim_tick(self, rec: RecurrenceRecord, fire: datetime) -> bool:
        """Whether this manager may run the tick at `fire` (nobody else ran it)."""
        try:
            return self.store.claim_tick(rec.key, datetime_to_ns(fire))
        except StoreError:
            # At least once: with the store unreachable, run the tick rather than lose it.
            log.warning("jobengine: cannot claim a tick; running it", exc_info=True)
            return True

    def claim(self, kinds: Sequence[str]) -> list[RecurrenceRecord]:
        """Take the recurrences of `kinds` that no manager owns or whose owner's lease
        lapsed; return them, oldest first.  One claim at a time in this process."""
        if not kinds:
            return []
        with self._claim_lock:
            now = time.time_ns()
            return self.store.claim_recurrences(self.node, kinds, now, now + self.lease_ns)

    def renewal_due(self) -> bool:
        """Whether a lease renewal is due (every lease / 3); if so, the next is set."""
        if time.monotonic() < self.next_renew:
            return False
        self.next_renew = time.monotonic() + self.lease_ns / 3e9
        return True

    def renew(self) -> set[str]:
        """Extend the lease on every recurrence this node owns; return their uuids."""
        return self.store.renew_recurrences(self.node, self.lease_until())

    def release(self) -> None:
        """Give up every recurrence this node owns: the next manager resumes them."""
        try:
            self.store.release_recurrences(self.node)
        except StoreError:
            log.exception("jobengine: cannot release this manager's recurrences")

    def snapshot(self, uuid: str) -> InstanceRecord | None:
        """What the store holds of the instance `uuid` itself."""
        return self.store.get_instance(uuid)


__all__ = ["StoredRecurrences", "new_node_name", "schedule_key"]
