"""Types of the compiled core (csrc/_core.pyx).

Both classes are single-owner: drive each from one thread.  Batch calls release the GIL
for large batches; while one runs, any other call on the same object raises
RuntimeError rather than corrupting it.
"""

from array import array
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .job import Job

PRIORITY_MIN: int  # -524288: lowest priority SchedulerCore accepts
PRIORITY_MAX: int  # 524287: highest priority SchedulerCore accepts
SEQ_LIMIT: int  # 2**44: insertion sequences before the ready heap renumbers itself
MAX_HANDLE: int  # 2**31 - 1: largest SchedulerCore handle
MAX_HEAP_LEN: int  # most entries a Heap holds

class Heap:
    """Indexed 4-ary min-heap on unsigned 64-bit keys.

    Errors: a key outside [0, 2**64) raises OverflowError, a non-int TypeError; an
    unknown or stale handle (its entry already left the heap) raises KeyError; popping
    or peeking an empty heap raises IndexError.
    """

    def __init__(self) -> None: ...
    def push(self, key: int) -> int:
        """Insert key; return a handle valid until the entry leaves the heap."""
    def pop(self) -> tuple[int, int]:
        """Remove and return (key, handle) of the smallest key."""
    def peek(self) -> tuple[int, int]:
        """(key, handle) of the smallest key, left in place."""
    def remove(self, handle: int) -> int:
        """Remove handle's entry in O(log n); return its key."""
    def update(self, handle: int, key: int) -> None:
        """Change handle's key in O(log n); the handle stays valid."""
    def key_of(self, handle: int) -> int:
        """The current key of handle's entry."""
    def len(self) -> int:
        """Number of entries (also len(heap))."""
    def __len__(self) -> int: ...
    def __contains__(self, handle: object) -> bool: ...
    def push_many(self, keys: array | memoryview | Iterable[int]) -> array:
        """Insert all keys (a uint64 buffer such as array('Q'), or ints); return their
        handles as array('Q') in the same order."""
    def pop_many(self, n: int) -> tuple[array, array]:
        """Pop up to n smallest entries: (keys, handles) as array('Q'), ascending."""

class SchedulerCore:
    """Timer heap keyed by due time feeding a ready heap keyed by (priority descending,
    insertion sequence ascending).  Handles are the caller's small non-negative ints.

    An entry gets its insertion sequence when it enters the ready heap: at add() when it
    is already due (due_ns <= the latest now_ns seen), else when pop_ready releases it;
    timers released together enter in (due time, add order) order.

    Errors: a handle outside [0, MAX_HANDLE] or a priority outside
    [PRIORITY_MIN, PRIORITY_MAX] raises ValueError; add() of a handle already scheduled
    raises ValueError; reprioritize() of a handle not scheduled raises KeyError;
    pop_ready() with now_ns smaller than a previous call raises ValueError.
    """

    def __init__(self) -> None: ...
    def add(self, handle: int, due_ns: int, priority: int) -> None:
        """Schedule handle to become ready at due_ns with priority (higher first)."""
    def cancel(self, handle: int) -> bool:
        """Remove handle from the timer or ready heap; True if it was scheduled."""
    def reprioritize(self, handle: int, priority: int) -> None:
        """Change the priority of a scheduled handle."""
    def pop_ready(self, now_ns: int, max_n: int) -> list[int]:
        """Release timers due at or before now_ns, then pop up to max_n ready handles,
        highest priority first, FIFO among equal priorities.  Never early."""
    def next_due_ns(self) -> int | None:
        """Due time of the earliest pending timer, or None without timers."""
    def len(self) -> int:
        """Scheduled handles (timers plus ready); also len(core)."""
    def __len__(self) -> int: ...
    def __contains__(self, handle: object) -> bool: ...
    @property
    def ready_len(self) -> int:
        """Handles in the ready heap."""
    @property
    def timer_len(self) -> int:
        """Handles waiting for their due time."""
    def _set_next_seq(self, seq: int) -> None: ...
    def _check(self) -> bool: ...

RING_HEADER: int  # bytes of a ring's header in its shared buffer
RING_RECORD_HEADER: int  # bytes of each record's header
DOORBELL_SIZE: int

class RecordTooLarge(ValueError):
    """A record's payload exceeds the ring's max_payload (a quarter of its capacity)."""

class Doorbell:
    """A wake-up word in shared memory one consumer sleeps on for many rings."""

    def __init__(self, mem: object, format: bool = False) -> None: ...
    def ring(self, flags: int = 1) -> None:
        """OR flags into the pending word; wake the sleeper if it sleeps."""
    def take(self) -> int:
        """Take (and clear) the pending flags."""
    def wait(self, rings: list[Ring], timeout: float | None = None, spin: float = 0.0) -> bool:
        """Sleep (GIL released) until a ring has a record, ring() was called, or timeout."""

class Ring:
    """One end of a single-producer single-consumer ring in a shared buffer.

    Records are (tag: u32, a: u64, b: u64, payload: bytes).  The producer uses
    write/publish/push/push_many, the consumer read_many/wait/empty."""

    def __init__(
        self, mem: object, doorbell: Doorbell | None = None, format: bool = False
    ) -> None: ...
    @property
    def capacity(self) -> int: ...
    @property
    def max_payload(self) -> int: ...
    @property
    def consumer_parked(self) -> bool:
        """Whether the consumer sleeps on this ring's park word (a worker with nothing
        to do, seen from its task ring)."""
    def free(self) -> int: ...
    def write(self, tag: int, a: int, b: int, payload: bytes | None = None) -> bool:
        """Append without publishing; False when full; RecordTooLarge when too big."""
    def publish(self) -> bool:
        """Make written records visible; True if the consumer had to be woken."""
    def push(self, tag: int, a: int, b: int, payload: bytes | None = None) -> bool:
        """write() then publish()."""
    def push_many(self, records: list[tuple[int, int, int, bytes]]) -> int:
        """Write records in order (GIL released for large batches), publish once;
        returns how many fitted."""
    def read_many(self, max_n: int = ...) -> list[tuple[int, int, int, bytes]]:
        """Take up to max_n records and release their space."""
    def empty(self) -> bool: ...
    def wait(self, timeout: float | None = None, spin: float = 0.0) -> bool:
        """Sleep (GIL released) until a record arrives or timeout."""

def uuid_text(n: int) -> str:
    """The canonical 8-4-4-4-12 text of a 128-bit UUID given as an int (what
    str(uuid.UUID(int=n)) gives).  TypeError for a non-int, ValueError outside
    0 <= n < 2**128."""

class InstanceFields:
    """Instance's per-job fields as C members (instance.py documents each): the
    compiled calls read and write them as struct fields.  Instance derives from it."""

    _state: str
    _result: Any
    _exception: BaseException | None
    _owner: Any  # instance.Owner (the engine), or None
    job: Job
    _uuid_str: str
    args: tuple
    _kwargs: dict | None
    priority: int
    state: Any
    payload: bytes  # (or the exception, when its arguments could not be pickled)
    created_ns: int  # (unboxed, as scheduled_ns: an int or None)
    scheduled_ns: int | None
    handle: int
    attempts: int
    worker: int | None
    processed_ns: int | None
    started_mono: int
    completed_ns: int | None

    @property
    def uuid_str(self) -> str:
        """The UUID as its canonical string (the key every store uses)."""

    @property
    def kind(self) -> str:
        """The kind of the instance's job."""

    def __init__(
        self,
        owner: Any,
        job: Job,
        uid: int | str,
        args: tuple,
        kwargs: dict | None,
        priority: int,
        created_ns: int,
    ) -> None: ...

class EventDrain:
    """Engine._drain_worker's loop, compiled, for the two events every job sends
    (E_STARTED, E_OK) of one-off instances without handlers or a pending cancel; every
    other record goes, in order, to the Python handler given to drain().  It counts
    the stock metrics (stock_stats: the EngineStats class; a subclass is called
    instead) into histograms with the given bucket bounds, and feeds the dispatcher's
    moving average as Dispatcher.observe does."""

    def __init__(
        self,
        recorder: object,
        dispatcher: object,
        finished: list,
        monotonic_ns: object,
        loads: object,
        processing: object,
        completed: object,
        scheduled: object,
        settle: object,
        stock_stats: type | None = None,
        bounds_ns: tuple = (),
        completed_name: str = "completed",
    ) -> None: ...
    def drain(self, w: object, records: list, slow: object, failed: object) -> None:
        """Handle a worker's records in order; slow(w, record) handles the rest;
        failed(w, unit, exception) fails a unit whose handling raised.  The Futures of a
        run of completed jobs are settled by one deferred settle(units, results)."""

def settle_results(
    pending: object, finished: object, log: object, units: list, results: list
) -> None:
    """Instance.set_result(result) for each unit, in order (the no-waiter case inline);
    one that raises is logged on `log`, the others still settle."""

def release_units(units: list, by_handle: list, free: list) -> tuple[int, list]:
    """Engine._release for each unit (lock held by the caller): free its handle, set
    unit.handle = -1.  Returns (freed units that counted toward wait(), the transient
    jobs of the freed units, one per unit)."""

def prune_known(known: dict) -> None:
    """Engine._prune_known's walk: drop the weak references that died."""

class Borrowed:
    """A lookup-table entry for an Instance of the table's own engine: its address,
    cleared and removed from the table by the Instance's finalizer before it goes."""

def lend(known: dict, inst: InstanceFields) -> None:
    """Make known's entry for inst one that does not keep it alive: a Borrowed one if
    known is its own engine's table (inst._owner._known), else a weak reference."""

def known_get(known: dict, uuid: str) -> Any:
    """The Instance the lookup table has for uuid (lent and alive), else None."""

def take_all(q: object) -> list:
    """What the deque q holds now, oldest first, popped one by one; what another thread
    appends meanwhile stays for the next call."""

def snapshots(touched: list, outcomes: dict) -> list[tuple]:
    """The latest row of each Instance in `touched` (Recorder.flush's batch rows), its
    outcome popped from `outcomes`."""

def group_history(states: list[tuple], dumps: Callable[[Any], bytes]) -> list[tuple]:
    """The SQL stores' history rows (stores/sql.py group_history, compiled): one row
    per uuid, its records as the JSON text `dumps` (orjson.dumps) gives."""

def deal_tasks(
    slots: list, free: list, instances: list, kind_ids: dict, send: object, t_task: int
) -> tuple[list, list, set]:
    """Dispatcher.deal's loop: instances round-robin to slots with free credits; the
    common task written here, the rest through send(w, inst).  Returns (requeue,
    failed, touched)."""

def any_consumer_parked(rings: list[Ring]) -> bool:
    """Whether the consumer of any of `rings` sleeps (Engine.make_way)."""

def worker_attempt(
    worker: Any,
    events: Ring,
    packed: int,
    fn: Callable[..., Any],
    inject: Any,
    kind: str,
    payload: bytes,
) -> None:
    """Worker._attempt compiled for the common case (STARTED, unpickle, call, pickle,
    OK); every other case goes back to the Worker's methods."""

def plain_args_pickle(args: tuple) -> bytes | None:
    """pickle.dumps((args, {}), 5) written directly for the arguments the compiled submit
    covers (1-64 of None, bools, 32-bit ints, floats, strs under 256 UTF-8 bytes, 1 KiB
    of pickle at most), else None.  For tests."""

def pause_without_gil(seconds: float) -> None:
    """Sleep with the GIL released and without running signal handlers (they run when
    the caller's Python code next runs)."""

class QueuedRow:
    """A MemoryStore row of an instance that is only queued (SCHEDULED when made, its
    CREATED and SCHEDULED records at created_ns): 48 bytes, untracked.  Made by
    memory_write, read through memory_row_list."""

    kind: str
    priority: int
    created_ns: int

class DoneRow:
    """A MemoryStore row of an instance that completed in its first attempt (COMPLETED,
    its CREATED and SCHEDULED records at created_ns, PROCESSING and COMPLETED at
    processed_ns and completed_ns on `worker`): 72 bytes, untracked.  Made by
    memory_write, read through memory_row_list."""

    kind: str
    priority: int
    worker: Any
    created_ns: int
    processed_ns: int
    completed_ns: int

class RecordBuffer:
    """State records (STATE_ROW's fields) in one C array, 64 bytes each: the recorder's
    records not yet written.  Appends from any thread are whole (the GIL)."""

    def append(
        self,
        uuid: str,
        kind: str,
        state: int,
        time: int,
        attempt: int,
        worker: int | None,
        run: int,
        cause: str | None,
    ) -> None:
        """Add one record (state, attempt, run: ints; TypeError / OverflowError else,
        the buffer unchanged)."""
    def created(self, uuid: str, kind: str, time: int, run: int) -> None:
        """Add a new instance's CREATED and SCHEDULED records at `time`."""
    def take(self, max_n: int = -1) -> RecordBuffer:
        """A new buffer with the first max_n records (all: -1), which leave this one."""
    def tuples(self) -> list[tuple]:
        """The records as STATE_ROW tuples, oldest first."""
    def __len__(self) -> int: ...

class ShortPath:
    """Manager.submit(), schedule_registered_job() and schedule_job()'s common case in
    one compiled call (Manager._admit_plain + Engine.admit + Recorder.created), and the
    idle engine's deal of it (Engine._deal_here); made by Manager.start() for its
    engine.  Returns the new Instance, or None having recorded nothing: the caller
    takes the Python path, the reference for every case."""

    def __init__(
        self,
        manager: Any,
        engine: Any,
        registry: Any,
        manager_globals: dict,
        instance_type: type,
        task_bytes: Callable[..., bytes],
        no_arguments: bytes,
        scheduled_state: Any,
        flush_every: int,
    ) -> None: ...
    def submit(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any | None:
        """submit(fn, *args, **kwargs): the Executor rule (arguments as given)."""
    def schedule(self, job: Any, args: tuple, kwargs: dict | None) -> Any | None:
        """schedule_job(job, args=..., kwargs=...) of a registered job: the go-job rule
        (only when no annotation would convert an argument)."""

def memory_row_header(row: list | QueuedRow | DoneRow) -> list:
    """A MemoryStore row's first 8 items (kind, state, priority, attempts, created,
    scheduled, processed, completed) as a new list, whatever its shape."""

def memory_row_list(row: list | QueuedRow | DoneRow) -> list:
    """A MemoryStore row as its list: a compact row (QueuedRow, DoneRow) unpacked into
    a new list, a list row itself."""

def memory_write(
    rows: dict,
    finished: dict,
    outcomes: dict,
    instances: list,
    states: RecordBuffer | list,
    logs: list,
    all_logs: dict,
    final_states: frozenset,
    big_outcome: object,
    max_raw: int,
    want_finished: bool,
    keep: int,
) -> list | None:
    """MemoryStore.write_batch's loops (stores/memory.py documents the layout); with
    keep >= 0, also its retention: the oldest finished instances beyond `keep` are
    forgotten with their rows, logs and outcomes."""

def uuid7() -> int:
    """A new UUIDv7 (RFC 9562) as an int: Unix milliseconds, version 7, a 12-bit counter
    (increasing within a millisecond in one process), variant 10, 62 random bits."""

def uuid7_text() -> str:
    """uuid_text(uuid7()) in one call: the canonical text of a new UUIDv7."""

def uuid7_reseed() -> None:
    """New random state from the kernel (run after fork)."""
