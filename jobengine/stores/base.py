"""The Store contract: what every store keeps and how the engine talks to it.

The engine writes in batches (one call per batch of records, from one thread) and reads
on behalf of users (any thread), so every method must be thread-safe.  A store keeps
three things per instance, keyed by its uuid string:

- an InstanceRecord: identity, current state, priority, attempts, timestamps;
- its state history: StateRecords in the order they were appended;
- its log history: LogRecords in the order they were appended.

It also keeps recurring instances (RecurrenceRecord), so that a crontab schedule
outlives the manager running it.  A manager owns the recurrences it runs through a
lease it renews; a lapsed lease (the manager died) or a released one (it stopped) lets
another manager claim them.  Every verb on recurrences is atomic: two managers on one
store never both own one.

Every store has a namespace; clear() and the clear_* methods touch only that namespace.
Implementations document only where they deviate from what is written here.

Owns: the contract (every method documented here).  Never does: any I/O itself.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from ..errors import InvalidArgumentError, InvalidArgumentTypeError
from ..payloads import PayloadCodec, outcome_columns
from ..query import Query
from ..records import (
    InstanceRecord,
    LogRecord,
    QueueEntry,
    RecurrenceRecord,
    StateRecord,
    log_record,
    state_record,
)
from ..state import State


def may_be_queued(query: Query) -> bool:
    """Whether an instance in a shared queue (SCHEDULED, or PROCESSING once claimed: a
    queue entry does not say which) can match `query`'s state filter."""
    return query.state is None or bool(query.state & (State.SCHEDULED | State.PROCESSING))


class Store(abc.ABC):
    """Abstract base of every store."""

    namespace: str = "jobengine"
    #: keeps a pickle only if it is signed (a store shared over the network)
    requires_signed_pickles = False
    #: retention (see the module docstring); None: unbounded
    max_instances: int | None = None
    max_age: float | None = None
    _codec: PayloadCodec | None = None

    # -- payloads and retention --------------------------------------------------------
    @property
    def codec(self) -> PayloadCodec:
        """How this store keeps Python values (payloads.py)."""
        codec = self._codec
        if codec is None:
            codec = self._codec = PayloadCodec(None, self.requires_signed_pickles)
        return codec

    def use_secret(self, secret: bytes | None) -> None:
        """Sign (and verify) pickled payloads with `secret` (None: none)."""
        self._codec = PayloadCodec(secret, self.requires_signed_pickles)

    def set_retention(self, max_instances: int | None = None, max_age: float | None = None) -> None:
        """Keep at most max_instances finished instances, none finished more than
        max_age seconds ago (None: no bound)."""
        if max_instances is not None and (
            not isinstance(max_instances, int) or isinstance(max_instances, bool)
        ):
            raise InvalidArgumentTypeError(f"max_instances must be an int, got {max_instances!r}")
        if max_instances is not None and max_instances < 0:
            raise InvalidArgumentError(f"max_instances must be >= 0, got {max_instances}")
        if max_age is not None and (not isinstance(max_age, (int, float)) or max_age < 0):
            raise InvalidArgumentError(f"max_age must be seconds >= 0, got {max_age!r}")
        self.max_instances = max_instances
        self.max_age = None if max_age is None else float(max_age)

    def apply_retention(self, now_ns: int) -> int:
        """Drop the finished instances the retention bounds exclude, with their
        histories and logs; return how many.  The default keeps everything."""
        return 0

    # -- how the engine writes ---------------------------------------------------------
    def write_batch(
        self,
        instances: Sequence[tuple],
        states: Sequence[tuple],
        logs: Sequence[tuple],
        token: tuple[str, int] | None = None,
    ) -> None:
        """Write one batch: INSTANCE_ROWs (upserts, outcome included), STATE_ROWs and
        LOG_ROWs (appends, in order).  token = (writer node, batch seq, increasing per
        node): a store that can applies a batch at most once, so retrying a write that
        failed on the wire after it had landed duplicates nothing.  Built-in stores do
        it in one round trip; this default calls the three record methods."""
        if instances:
            codec = self.codec
            self.put_instances(
                [
                    InstanceRecord.from_row((*r[:9], *outcome_columns(r[9], codec)), codec)
                    for r in instances
                ]
            )
        if states:
            self.append_states([state_record(r) for r in states])
        if logs:
            self.append_logs([log_record(r) for r in logs])

    def prepare_batch(
        self,
        instances: Sequence[tuple],
        states: Sequence[tuple],
        logs: Sequence[tuple],
        token: tuple[str, int] | None = None,
    ) -> Any:
        """The CPU half of write_batch (encoding rows, payloads, documents), touching no
        connection: a writer prepares the next batch while the last one is on the wire.
        Built-in stores write_batch = write_prepared(prepare_batch(...))."""
        return (instances, states, logs, token)

    def write_prepared(self, prepared: Any) -> None:
        """The I/O half of write_batch: write what prepare_batch returned."""
        self.write_batch(*prepared)

    def spec(self) -> dict[str, Any] | None:
        """How another process opens this same store: open_store keyword arguments
        (url, namespace, retention), or None when it cannot (then the manager writes
        it from a thread of its own process)."""
        return None

    def reconnect(self) -> None:  # noqa: B027 - optional hook
        """After a failed operation: drop and reopen the connection (default: none)."""

    # -- writes (batched) ------------------------------------------------------------
    @abc.abstractmethod
    def put_instances(self, batch: Sequence[InstanceRecord]) -> None:
        """Insert or replace the InstanceRecord of each instance in `batch` (keyed by
        uuid).  A new uuid keeps its first insertion's place in creation order."""

    @abc.abstractmethod
    def append_states(self, batch: Sequence[StateRecord]) -> None:
        """Append each StateRecord to its instance's state history, in order."""

    @abc.abstractmethod
    def append_logs(self, batch: Sequence[LogRecord]) -> None:
        """Append each LogRecord to its instance's log history, in order."""

    # -- reads -------------------------------------------------------------------------
    @abc.abstractmethod
    def get_instance(self, uuid: str) -> InstanceRecord | None:
        """The InstanceRecord of `uuid`, or None."""

    @abc.abstractmethod
    def lookup_instances(self, query: Query) -> list[InstanceRecord]:
        """InstanceRecords matching `query` (see Query), oldest first, at most
        query.limit of them."""

    @abc.abstractmethod
    def lookup_history(self, uuid: str) -> list[StateRecord]:
        """The state history of `uuid` (empty if unknown)."""

    @abc.abstractmethod
    def lookup_logs(self, uuid: str) -> list[LogRecord]:
        """The log history of `uuid` (empty if unknown)."""

    # -- recurrences (atomic) ---------------------------------------------------------
    @abc.abstractmethod
    def add_recurrence(self, rec: RecurrenceRecord) -> RecurrenceRecord:
        """Insert `rec` unless a recurrence with its key exists; return the stored one
        (rec itself, or the existing recurrence, whoever owns it)."""

    @abc.abstractmethod
    def save_recurrence(self, rec: RecurrenceRecord) -> bool:
        """Store rec's run, fire_ns and lease_until_ns if rec.owner still owns it;
        False (and no change) if it does not, or it is gone."""

    @abc.abstractmethod
    def claim_recurrences(
        self, owner: str, kinds: Sequence[str], now_ns: int, lease_until_ns: int
    ) -> list[RecurrenceRecord]:
        """Take every recurrence of one of `kinds` that has no owner or whose lease
        ended before now_ns: make `owner` its owner until lease_until_ns and return them."""

    @abc.abstractmethod
    def renew_recurrences(self, owner: str, lease_until_ns: int) -> set[str]:
        """Extend the lease of every recurrence `owner` owns; return their uuids."""

    @abc.abstractmethod
    def release_recurrences(self, owner: str) -> int:
        """Give up every recurrence `owner` owns (another manager may claim them at
        once); return how many."""

    @abc.abstractmethod
    def delete_recurrence(self, uuid: str) -> None:
        """Forget the recurrence `uuid` (it ended) and its claimed ticks; no error if
        unknown."""

    @abc.abstractmethod
    def claim_tick(self, schedule_key: str, fire_ns: int) -> bool:
        """Claim the tick at fire_ns of the schedule `schedule_key` (a RecurrenceRecord
        key): True for the first claim of a tick later than every tick claimed before,
        False otherwise.  Managers claim each tick before running it, so a tick runs
        once across every manager on the store, even if two believe they own the
        recurrence (one paused past its lease while another took over)."""

    @abc.abstractmethod
    def lookup_recurrences(self, kind: str | None = None) -> list[RecurrenceRecord]:
        """Every recurrence (of `kind`, if given), oldest first."""

    # -- the shared queue of one-off instances (atomic) ----------------------------------
    # A durable store is also a queue shared by every manager on it: producers enqueue,
    # managers with workers claim what is due in priority order under a lease for
    # their node, renew it while they run, and finish.  A lapsed lease (its manager
    # died) makes its entries claimable again (reaped).  Every verb is atomic (one
    # transaction or one script), so two managers never both claim one entry.
    # MemoryStore keeps these verbs for the contract; a manager on it queues in its
    # own memory.
    supports_queue = False  # (see may_be_queued for cancel_queued's state filter)

    def enqueue(
        self,
        entries: Sequence[QueueEntry],
        instances: Sequence[tuple] = (),
        states: Sequence[tuple] = (),
    ) -> int:
        """Add entries, with their instances' first records (INSTANCE_ROW, STATE_ROW
        tuples, as write_batch takes), in one atomic step and one round trip; each
        entry gets the store's next seq.  An entry whose uuid the store knows already
        (a retried call whose first try went through) is skipped with its records.
        Returns how many were added."""
        raise NotImplementedError(f"{type(self).__name__} has no shared queue")

    def claim(self, owner: str, limit: int, now_ns: int, lease_until_ns: int) -> list[QueueEntry]:
        """Take up to `limit` entries that are due (due_ns <= now_ns) and unclaimed, or
        whose owner's lease ended before now_ns (reaped), best first: highest priority,
        then earliest due, then first enqueued.  They are `owner`'s until
        lease_until_ns, and so is everything else `owner` holds."""
        raise NotImplementedError(f"{type(self).__name__} has no shared queue")

    def renew_claims(self, owner: str, lease_until_ns: int) -> int:
        """Extend the lease on everything `owner` holds; return how many entries."""
        raise NotImplementedError(f"{type(self).__name__} has no shared queue")

    def reap(self, now_ns: int) -> list[str]:
        """Entries whose owner's lease ended before now_ns become unclaimed (marked
        reaped); return their uuids.  (claim() reaps as it goes; this is for tools.)"""
        raise NotImplementedError(f"{type(self).__name__} has no shared queue")

    def finish(self, uuids: Sequence[str]) -> None:
        """Remove these entries (their instances reached a final state) and tell each
        origin other than its owner (take_finished).  write_batch does the same, in
        its own transaction, for every instance row it writes in a final state."""
        raise NotImplementedError(f"{type(self).__name__} has no shared queue")

    def release(self, owner: str, uuids: Sequence[str] | None = None) -> int:
        """Give back `owner`'s claims on these entries (all of them if None): they are
        claimable at once by anyone.  Returns how many."""
        raise NotImplementedError(f"{type(self).__name__} has no shared queue")

    def cancel_queued(
        self, query: Query, owner: str, lease_until_ns: int
    ) -> tuple[list[QueueEntry], list[str]]:
        """Cancel across managers: the unclaimed entries matching `query` (uuid, kind,
        created after/before) are claimed by `owner`, who records them CANCELED (which
        finishes them); those claimed by others are flagged for their owners
        (cancel_requests).  Returns (the entries taken, the uuids flagged)."""
        raise NotImplementedError(f"{type(self).__name__} has no shared queue")

    def cancel_requests(self, owner: str) -> list[str]:
        """The uuids flagged for cancel among `owner`'s claims, each returned once."""
        raise NotImplementedError(f"{type(self).__name__} has no shared queue")

    def take_finished(self, origin: str, limit: int = 1000) -> list[InstanceRecord]:
        """The records of up to `limit` instances `origin` enqueued that finished on
        another manager since the last call (each returned once)."""
        raise NotImplementedError(f"{type(self).__name__} has no shared queue")

    def queue_length(self) -> int:
        """Entries in the queue, claimed or not."""
        raise NotImplementedError(f"{type(self).__name__} has no shared queue")

    # -- deletes -----------------------------------------------------------------------
    @abc.abstractmethod
    def clear_history(self, before_ns: int | None = None, after_ns: int | None = None) -> int:
        """Delete state records with after_ns <= time < before_ns (a missing bound is
        open); return how many were deleted.  With neither bound, delete all.  A
        finished instance left with no state record goes too (its row and logs): what
        is cleared is gone from lookup_instances as well."""

    @abc.abstractmethod
    def clear_logs(self, before_ns: int | None = None, after_ns: int | None = None) -> int:
        """As clear_history, for log records."""

    @abc.abstractmethod
    def clear(self) -> None:
        """Delete everything this store keeps in its namespace, and nothing else."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has nothing to release."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
