# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, binding=False, always_allow_keywords=False
"""The compiled core of jobengine: an indexed 4-ary heap and the scheduler core.

See jobengine/_core.pyi for the documented API.  Everything here is single-owner: one
thread drives a Heap or a SchedulerCore.  Batch operations release the GIL; while they
run, the object is marked busy and any other call on it raises RuntimeError instead of
corrupting it.
"""

cimport cython
from libc.stdint cimport uint64_t, uint32_t, int64_t, int32_t, INT64_MIN
from libc.stdlib cimport malloc, realloc, free, qsort
from posix.time cimport nanosleep, timespec
from libc.errno cimport errno, EINTR
from cpython.array cimport array, clone
from pickle import dumps as _pickle_dumps, loads as _pickle_loads
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.dict cimport PyDict_Next, PyDict_GetItem, PyDict_DelItem
from cpython.ref cimport PyObject
from cpython.object cimport PyTypeObject, traverseproc
from cpython.number cimport PyNumber_Index
import array as _array_mod

cdef extern from "heap.h" nogil:
    ctypedef struct je_entry:
        uint64_t key
        uint32_t slot
        uint32_t aux
    ctypedef struct je_heap:
        je_entry *a
        size_t n
        size_t cap
        uint32_t *pos
        size_t nslots
    uint32_t JE_NOPOS
    int je_heap_init(je_heap *h, size_t cap)
    void je_heap_free(je_heap *h)
    int je_heap_reserve_slots(je_heap *h, size_t nslots)
    int je_heap_reserve(je_heap *h, size_t extra)
    int je_heap_contains(const je_heap *h, uint64_t slot)
    void je_heap_push(je_heap *h, uint64_t key, uint32_t slot)
    void je_heap_pop(je_heap *h, uint64_t *key, uint32_t *slot)
    void je_heap_remove(je_heap *h, uint32_t slot)
    void je_heap_update(je_heap *h, uint32_t slot, uint64_t key)
    int je_heap_check(const je_heap *h)
    int je_heap_pop_many(je_heap *h, size_t k, uint64_t *keys, uint32_t *slots)

cdef array _u64_template = _array_mod.array("Q")

cdef extern from *:
    """
    /* Below this many items a batch call keeps the GIL: releasing it costs little, but
     * re-acquiring it behind a busy thread can cost a whole switch interval (5 ms). */
    #define JE_NOGIL_THRESHOLD 256
    /* Ready key: (PRIORITY_MAX - priority) in the top PRIO_BITS, a sequence below that
     * ranks (due time, add order), so the smallest key is the highest priority and, among
     * equals, the earliest due (then the first added).  Sequences are spaced SEQ_GAP
     * apart so that an entry due earlier than ones already ready fits between them. */
    #define JE_PRIO_BITS 20
    #define JE_SEQ_BITS 44
    #define JE_SEQ_GAP 256ULL
    #define JE_PRIORITY_MIN (-(1LL << (JE_PRIO_BITS - 1)))
    #define JE_PRIORITY_MAX ((1LL << (JE_PRIO_BITS - 1)) - 1)
    #define JE_MAX_HANDLE ((1LL << 31) - 1)
    /* Flipping the sign bit maps int64 due times onto uint64 keys, order preserved. */
    #define JE_SIGN 0x8000000000000000ULL
    """
    int NOGIL_THRESHOLD "JE_NOGIL_THRESHOLD"
    int SEQ_BITS "JE_SEQ_BITS"
    uint64_t SEQ_GAP "JE_SEQ_GAP"
    long long C_PRIORITY_MIN "JE_PRIORITY_MIN"
    long long C_PRIORITY_MAX "JE_PRIORITY_MAX"
    long long C_MAX_HANDLE "JE_MAX_HANDLE"
    uint64_t SIGN "JE_SIGN"


cdef inline uint64_t _u64(object v, str what) except? 0xFFFFFFFFFFFFFFFF:
    # Cython would silently truncate a float; keys and handles must be real ints.
    if not isinstance(v, int):
        raise TypeError(f"{what} must be an int, not {type(v).__name__}")
    return v


cdef inline long long _i64(object v, str what) except? -1:
    if not isinstance(v, int):
        raise TypeError(f"{what} must be an int, not {type(v).__name__}")
    return v


# --- Heap ---------------------------------------------------------------------------

MAX_HEAP_LEN = 0xFFFFFFFE


cdef inline object _busy_error():
    return RuntimeError("the core object is in use by a batch call on another thread")


@cython.final
cdef class Heap:
    """Indexed min-heap on unsigned 64-bit keys.  push returns a handle that stays valid
    until its entry leaves the heap; a stale handle raises KeyError, never aliases."""

    cdef je_heap h
    cdef uint32_t *gen          # slot -> generation, bumped whenever the slot is freed
    cdef uint32_t *free_slots   # stack of freed slots
    cdef size_t nfree
    cdef size_t used            # slots ever handed out
    cdef size_t slotcap
    cdef bint busy

    def __cinit__(self):
        if je_heap_init(&self.h, 64) != 0:
            raise MemoryError()
        self.gen = NULL
        self.free_slots = NULL
        self.nfree = self.used = self.slotcap = 0
        self.busy = False

    def __dealloc__(self):
        je_heap_free(&self.h)
        free(self.gen)
        free(self.free_slots)

    cdef int _reserve(self, size_t extra) except -1:
        # Room for `extra` more entries and, in the worst case, that many fresh slots.
        cdef size_t need = self.used + extra
        cdef size_t cap, i
        cdef uint32_t *g
        cdef uint32_t *f
        if self.h.n + extra > <size_t>0xFFFFFFFE:
            raise OverflowError(f"Heap cannot hold more than {MAX_HEAP_LEN} entries")
        if je_heap_reserve(&self.h, extra) != 0:
            raise MemoryError()
        if need > self.slotcap:
            cap = self.slotcap if self.slotcap else 64
            while cap < need:
                cap *= 2
            g = <uint32_t *>realloc(self.gen, cap * sizeof(uint32_t))
            if g == NULL:
                raise MemoryError()
            self.gen = g
            f = <uint32_t *>realloc(self.free_slots, cap * sizeof(uint32_t))
            if f == NULL:
                raise MemoryError()
            self.free_slots = f
            if je_heap_reserve_slots(&self.h, cap) != 0:
                raise MemoryError()
            for i in range(self.slotcap, cap):
                self.gen[i] = 0
            self.slotcap = cap
        return 0

    cdef inline uint64_t _push(self, uint64_t key) noexcept nogil:
        cdef uint32_t slot
        if self.nfree:
            self.nfree -= 1
            slot = self.free_slots[self.nfree]
        else:
            slot = <uint32_t>self.used
            self.used += 1
        je_heap_push(&self.h, key, slot)
        return (<uint64_t>self.gen[slot] << 32) | slot

    cdef inline uint64_t _release(self, uint32_t slot) noexcept nogil:
        cdef uint64_t handle = (<uint64_t>self.gen[slot] << 32) | slot
        self.gen[slot] += 1
        self.free_slots[self.nfree] = slot
        self.nfree += 1
        return handle

    cdef inline uint32_t _slot_of(self, uint64_t handle) except? 0xFFFFFFFF:
        cdef uint64_t slot = handle & 0xFFFFFFFFULL
        if (slot >= self.used or not je_heap_contains(&self.h, slot)
                or self.gen[slot] != (handle >> 32)):
            raise KeyError(f"unknown or stale heap handle {handle}")
        return <uint32_t>slot

    def push(self, key):
        """Insert `key` (0 <= key < 2**64); return its handle."""
        if self.busy:
            raise _busy_error()
        cdef uint64_t k = _u64(key, "key")
        self._reserve(1)
        return self._push(k)

    def pop(self):
        """Remove and return (key, handle) of the smallest key.  IndexError when empty."""
        cdef uint64_t key
        cdef uint32_t slot
        if self.busy:
            raise _busy_error()
        if self.h.n == 0:
            raise IndexError("pop from an empty Heap")
        je_heap_pop(&self.h, &key, &slot)
        return key, self._release(slot)

    def peek(self):
        """Return (key, handle) of the smallest key without removing it.  IndexError when empty."""
        if self.busy:
            raise _busy_error()
        if self.h.n == 0:
            raise IndexError("peek at an empty Heap")
        cdef uint32_t slot = self.h.a[0].slot
        return self.h.a[0].key, (<uint64_t>self.gen[slot] << 32) | slot

    def remove(self, handle):
        """Remove the entry of `handle`; return its key.  KeyError if unknown or stale."""
        if self.busy:
            raise _busy_error()
        cdef uint32_t slot = self._slot_of(_u64(handle, "handle"))
        cdef uint64_t key = self.h.a[self.h.pos[slot]].key
        je_heap_remove(&self.h, slot)
        self._release(slot)
        return key

    def update(self, handle, key):
        """Change the key of `handle`'s entry.  KeyError if unknown or stale."""
        if self.busy:
            raise _busy_error()
        cdef uint64_t k = _u64(key, "key")
        cdef uint32_t slot = self._slot_of(_u64(handle, "handle"))
        je_heap_update(&self.h, slot, k)

    def key_of(self, handle):
        """The current key of `handle`'s entry.  KeyError if unknown or stale."""
        if self.busy:
            raise _busy_error()
        cdef uint32_t slot = self._slot_of(_u64(handle, "handle"))
        return self.h.a[self.h.pos[slot]].key

    def __contains__(self, handle):
        if self.busy:
            raise _busy_error()
        if not isinstance(handle, int) or handle < 0 or handle >= 2**64:
            return False
        cdef uint64_t hd = handle
        cdef uint64_t slot = hd & 0xFFFFFFFFULL
        return (slot < self.used and je_heap_contains(&self.h, slot)
                and self.gen[slot] == (hd >> 32))

    def len(self):
        """Number of entries."""
        return self.h.n

    def __len__(self):
        return self.h.n

    def push_many(self, keys):
        """Insert every key of `keys` (a buffer of uint64 such as array('Q'), or any
        iterable of ints); return their handles as array('Q'), in the same order.
        Runs without the GIL for large batches."""
        cdef const uint64_t[::1] kv
        cdef Py_ssize_t n, i
        cdef array out
        cdef uint64_t *o
        if self.busy:
            raise _busy_error()
        # Busy from here on, before anything that can let another thread in (converting
        # keys or allocating can run the garbage collector, finalizers and a thread
        # switch): a second caller must not pass the check while this one reallocates
        # or pushes without the GIL.
        self.busy = True
        try:
            kv = _as_u64(keys)
            n = kv.shape[0]
            out = clone(_u64_template, n, False)
            o = <uint64_t *>out.data.as_ulonglongs
            self._reserve(n)
            if n >= NOGIL_THRESHOLD:
                with nogil:
                    for i in range(n):
                        o[i] = self._push(kv[i])
            else:
                for i in range(n):
                    o[i] = self._push(kv[i])
        finally:
            self.busy = False
        return out

    def pop_many(self, Py_ssize_t n):
        """Pop up to `n` smallest entries; return (keys, handles) as two array('Q') in
        ascending key order.  Fewer than `n` when the heap runs out; n < 0 is ValueError."""
        cdef array keys
        cdef array handles
        cdef uint64_t *k
        cdef uint64_t *hd
        cdef uint32_t *slots
        cdef Py_ssize_t i
        if self.busy:
            raise _busy_error()
        if n < 0:
            raise ValueError(f"pop_many needs n >= 0, got {n}")
        self.busy = True  # before the allocations below (see push_many)
        try:
            if <size_t>n > self.h.n:
                n = self.h.n
            keys = clone(_u64_template, n, False)
            handles = clone(_u64_template, n, False)
            k = <uint64_t *>keys.data.as_ulonglongs
            hd = <uint64_t *>handles.data.as_ulonglongs
            # Slots land in the handle buffer first (as uint32) and are widened in
            # place, back to front, into handles: no second buffer.
            slots = <uint32_t *>hd
            if n >= NOGIL_THRESHOLD:
                with nogil:
                    je_heap_pop_many(&self.h, n, k, slots)
                    for i in range(n - 1, -1, -1):
                        hd[i] = self._release(slots[i])
            else:
                je_heap_pop_many(&self.h, n, k, slots)
                for i in range(n - 1, -1, -1):
                    hd[i] = self._release(slots[i])
        finally:
            self.busy = False
        return keys, handles

    def _check(self):
        """Verify the heap invariant (for tests)."""
        return bool(je_heap_check(&self.h))


cdef object _as_u64(object keys):
    # A buffer of unsigned 64-bit ints is used as is; anything else is converted once
    # (which also validates every value: negative or too large -> OverflowError).
    try:
        mv = memoryview(keys)
    except TypeError:
        return _array_mod.array("Q", keys)
    if mv.itemsize == 8 and mv.format in ("Q", "L", "<Q", "=Q", "@Q", "<L", "=L", "@L") \
            and mv.ndim == 1 and mv.c_contiguous:
        return mv
    if mv.ndim == 1:
        return _array_mod.array("Q", mv.tolist())
    raise TypeError(f"keys must be a 1-D buffer of uint64 or an iterable of ints, got format {mv.format!r} ndim {mv.ndim}")


# --- SchedulerCore --------------------------------------------------------------------

PRIORITY_MIN = C_PRIORITY_MIN
PRIORITY_MAX = C_PRIORITY_MAX
SEQ_LIMIT = (<object>1) << SEQ_BITS
MAX_HANDLE = C_MAX_HANDLE

ctypedef struct slot_info:
    uint64_t order      # add() order: FIFO among entries due at the same instant
    int64_t due         # its due time: the ready heap ranks equal priorities by it
    int32_t priority

ctypedef struct moved_timer:
    uint64_t due_key
    uint64_t order
    uint32_t handle


cdef int _cmp_moved(const void *a, const void *b) noexcept nogil:
    cdef const moved_timer *x = <const moved_timer *>a
    cdef const moved_timer *y = <const moved_timer *>b
    if x.due_key != y.due_key:
        return -1 if x.due_key < y.due_key else 1
    if x.order != y.order:
        return -1 if x.order < y.order else 1
    return 0


cdef int _cmp_u64(const void *a, const void *b) noexcept nogil:
    cdef uint64_t x = (<const uint64_t *>a)[0]
    cdef uint64_t y = (<const uint64_t *>b)[0]
    return -1 if x < y else (1 if x > y else 0)


@cython.final
cdef class SchedulerCore:
    """Timer heap (by due time) feeding a ready heap (by priority desc, then due time,
    then add order: at equal priority what was due earlier runs first).

    Handles are the caller's: small non-negative ints (0 <= handle <= MAX_HANDLE), dense
    in practice, since memory grows with the largest handle used."""

    cdef je_heap timers
    cdef je_heap ready
    cdef slot_info *info
    cdef size_t ninfo
    cdef uint64_t next_seq
    cdef uint64_t next_order
    cdef int64_t last_due       # (due, order) of the latest entry given next_seq: one
    cdef uint64_t last_order    # that ranks after it takes the fast path
    cdef int64_t now_floor
    cdef bint started
    cdef moved_timer *moved
    cdef size_t movedcap

    def __cinit__(self):
        if je_heap_init(&self.timers, 64) != 0 or je_heap_init(&self.ready, 64) != 0:
            raise MemoryError()
        self.info = NULL
        self.ninfo = 0
        self.next_seq = SEQ_GAP  # (0 stays free: room below the first entry)
        self.next_order = 0
        self.last_due = INT64_MIN
        self.last_order = 0
        self.now_floor = INT64_MIN
        self.moved = NULL
        self.movedcap = 0

    def __dealloc__(self):
        je_heap_free(&self.timers)
        je_heap_free(&self.ready)
        free(self.info)
        free(self.moved)

    cdef int _reserve_handle(self, uint64_t handle) except -1:
        cdef size_t need = handle + 1
        cdef size_t cap
        cdef slot_info *p
        if need > self.ninfo:
            cap = self.ninfo if self.ninfo else 64
            while cap < need:
                cap *= 2
            p = <slot_info *>realloc(self.info, cap * sizeof(slot_info))
            if p == NULL:
                raise MemoryError()
            self.info = p
            self.ninfo = cap
        if je_heap_reserve_slots(&self.timers, need) != 0 or je_heap_reserve_slots(&self.ready, need) != 0:
            raise MemoryError()
        if je_heap_reserve(&self.timers, 1) != 0 or je_heap_reserve(&self.ready, 1) != 0:
            raise MemoryError()
        return 0

    cdef inline int _check_priority(self, long long priority) except -1:
        if priority < C_PRIORITY_MIN or priority > C_PRIORITY_MAX:
            raise ValueError(
                f"priority {priority} is outside [{C_PRIORITY_MIN}, {C_PRIORITY_MAX}]")
        return 0

    cdef inline int _check_handle(self, long long handle) except -1:
        if handle < 0 or handle > C_MAX_HANDLE:
            raise ValueError(f"handle {handle} is outside [0, {C_MAX_HANDLE}]")
        return 0

    cdef int _push_ready(self, uint32_t handle) except -1:
        cdef int64_t due = self.info[handle].due
        cdef uint64_t order = self.info[handle].order
        cdef uint64_t seq
        if (self.ready.n == 0 or due > self.last_due
                or (due == self.last_due and order >= self.last_order)):
            seq = self._next()  # the common case: it ranks after everything ready
            self.last_due = due
            self.last_order = order
        else:
            seq = self._seq_between(due, order)  # due earlier than some: O(ready)
        cdef uint64_t key = ((<uint64_t>(C_PRIORITY_MAX - self.info[handle].priority)) << SEQ_BITS) | seq
        je_heap_push(&self.ready, key, handle)
        return 0

    cdef uint64_t _next(self) except? 0:
        if self.next_seq >= (<uint64_t>1 << SEQ_BITS) - SEQ_GAP:
            self._renumber()
        cdef uint64_t seq = self.next_seq
        self.next_seq += SEQ_GAP
        return seq

    cdef uint64_t _seq_between(self, int64_t due, uint64_t order) except? 0:
        """A sequence below every ready entry ranked after (due, order) and above every
        other one.  Sequences rank all ready entries by (due, order), whatever their
        priority, so one scan finds the neighbours."""
        cdef uint64_t mask = ((<uint64_t>1 << SEQ_BITS) - 1)
        cdef uint64_t hi, lo, s
        cdef bint any_lo
        cdef size_t i
        cdef uint32_t h
        while True:
            hi = mask + 1
            for i in range(self.ready.n):
                h = self.ready.a[i].slot
                if self.info[h].due > due or (self.info[h].due == due and self.info[h].order > order):
                    s = self.ready.a[i].key & mask
                    if s < hi:
                        hi = s
            if hi > mask:  # nothing ranks after it after all
                return self._next()
            any_lo = False
            lo = 0
            for i in range(self.ready.n):
                s = self.ready.a[i].key & mask
                if s < hi and (not any_lo or s > lo):
                    lo = s
                    any_lo = True
            if not any_lo and hi >= 1:
                return hi // 2
            if any_lo and hi - lo >= 2:
                return lo + (hi - lo) // 2
            self._renumber()  # no room between them: spread every sequence out again

    cdef int _renumber(self) except -1:
        # Give every ready entry the rank of its sequence (times SEQ_GAP) as its new
        # sequence: ranks keep the (due, order) order across priorities, and the gaps
        # leave room again.
        cdef size_t n = self.ready.n, i, lo, hi, mid
        cdef uint64_t *seqs = <uint64_t *>malloc((n if n else 1) * sizeof(uint64_t))
        cdef uint64_t k, s
        cdef uint64_t mask = ((<uint64_t>1 << SEQ_BITS) - 1)
        if seqs == NULL:
            raise MemoryError()
        for i in range(n):
            seqs[i] = self.ready.a[i].key & mask
        qsort(seqs, n, sizeof(uint64_t), _cmp_u64)
        for i in range(n):
            k = self.ready.a[i].key
            s = k & mask
            lo = 0
            hi = n
            while lo < hi:
                mid = (lo + hi) // 2
                if seqs[mid] < s:
                    lo = mid + 1
                else:
                    hi = mid
            self.ready.a[i].key = (k & ~mask) | (<uint64_t>(lo + 1) * SEQ_GAP)
        free(seqs)
        self.next_seq = <uint64_t>(n + 1) * SEQ_GAP
        return 0

    def add(self, handle, due_ns, priority):
        """Schedule `handle` to become ready at `due_ns` (any int64, same clock as
        pop_ready's now_ns) with `priority` (PRIORITY_MIN..PRIORITY_MAX, higher first).
        ValueError if the handle is already scheduled or a value is out of range."""
        cdef long long hd = _i64(handle, "handle")
        cdef long long due = _i64(due_ns, "due_ns")
        cdef long long prio = _i64(priority, "priority")
        self._check_handle(hd)
        self._check_priority(prio)
        self._reserve_handle(hd)
        cdef uint32_t h = <uint32_t>hd
        if je_heap_contains(&self.timers, h) or je_heap_contains(&self.ready, h):
            raise ValueError(f"handle {hd} is already scheduled")
        self.info[h].priority = <int32_t>prio
        self.info[h].order = self.next_order
        self.info[h].due = due
        self.next_order += 1
        if due <= self.now_floor:
            # Already due by a clock the caller has declared: skip the timer heap.
            self._push_ready(h)
        else:
            je_heap_push(&self.timers, (<uint64_t>due) ^ SIGN, h)

    def cancel(self, long long handle):
        """Remove `handle` from whichever heap holds it; True if it was there."""
        if handle < 0 or handle > C_MAX_HANDLE:
            return False
        cdef uint32_t h = <uint32_t>handle
        if je_heap_contains(&self.ready, h):
            je_heap_remove(&self.ready, h)
            return True
        if je_heap_contains(&self.timers, h):
            je_heap_remove(&self.timers, h)
            return True
        return False

    def reprioritize(self, handle, priority):
        """Change the priority of a scheduled handle, keeping its FIFO position among
        its new equals.  KeyError if the handle is not scheduled."""
        cdef long long hd = _i64(handle, "handle")
        cdef long long prio = _i64(priority, "priority")
        self._check_priority(prio)
        if hd < 0 or hd > C_MAX_HANDLE:
            raise KeyError(f"handle {hd} is not scheduled")
        cdef uint32_t h = <uint32_t>hd
        cdef uint64_t key, mask = ((<uint64_t>1 << SEQ_BITS) - 1)
        if je_heap_contains(&self.ready, h):
            key = self.ready.a[self.ready.pos[h]].key & mask
            key |= (<uint64_t>(C_PRIORITY_MAX - prio)) << SEQ_BITS
            self.info[h].priority = <int32_t>prio
            je_heap_update(&self.ready, h, key)
        elif je_heap_contains(&self.timers, h):
            self.info[h].priority = <int32_t>prio
        else:
            raise KeyError(f"handle {hd} is not scheduled")

    cdef int _move_due(self, int64_t now_ns) except -1:
        cdef uint64_t limit = (<uint64_t>now_ns) ^ SIGN
        cdef size_t m = 0, i
        cdef uint64_t key
        cdef uint32_t h
        cdef moved_timer *p
        while self.timers.n and self.timers.a[0].key <= limit:
            if m == self.movedcap:
                self.movedcap = self.movedcap * 2 if self.movedcap else 64
                p = <moved_timer *>realloc(self.moved, self.movedcap * sizeof(moved_timer))
                if p == NULL:
                    raise MemoryError()
                self.moved = p
            je_heap_pop(&self.timers, &key, &h)
            self.moved[m].due_key = key
            self.moved[m].order = self.info[h].order
            self.moved[m].handle = h
            m += 1
        if m > 1:
            qsort(self.moved, m, sizeof(moved_timer), _cmp_moved)
        if m and je_heap_reserve(&self.ready, m) != 0:
            raise MemoryError()
        for i in range(m):
            self._push_ready(self.moved[i].handle)
        return 0

    def pop_ready(self, now_ns, max_n):
        """Move every timer due at or before `now_ns` to the ready heap, then pop up to
        `max_n` ready handles, highest priority first, FIFO among equals.  `now_ns` must
        not go backwards between calls (ValueError)."""
        cdef long long now = _i64(now_ns, "now_ns")
        cdef Py_ssize_t limit = _i64(max_n, "max_n")
        if limit < 0:
            raise ValueError(f"max_n must be >= 0, got {limit}")
        if now < self.now_floor:
            raise ValueError(f"now_ns went backwards: {now} < {self.now_floor}")
        self.now_floor = now
        if self.timers.n:
            self._move_due(now)
        cdef Py_ssize_t n = limit if <size_t>limit < self.ready.n else <Py_ssize_t>self.ready.n
        cdef list out = [None] * n
        cdef Py_ssize_t i
        cdef uint64_t key
        cdef uint32_t h
        for i in range(n):
            je_heap_pop(&self.ready, &key, &h)
            out[i] = h
        return out

    def next_due_ns(self):
        """Due time of the earliest timer, or None when no timer is pending (entries
        already in the ready heap are due now)."""
        if self.timers.n == 0:
            return None
        return <int64_t>(self.timers.a[0].key ^ SIGN)

    def len(self):
        """Scheduled handles: timers plus ready."""
        return self.timers.n + self.ready.n

    def __len__(self):
        return self.timers.n + self.ready.n

    @property
    def ready_len(self):
        """Handles due and waiting in the ready heap."""
        return self.ready.n

    @property
    def timer_len(self):
        """Handles waiting for their due time."""
        return self.timers.n

    def __contains__(self, handle):
        if not isinstance(handle, int) or handle < 0 or handle > C_MAX_HANDLE:
            return False
        return bool(je_heap_contains(&self.ready, handle) or je_heap_contains(&self.timers, handle))

    def _set_next_seq(self, uint64_t seq):
        """Test hook: move the insertion sequence near its limit to exercise renumbering."""
        if seq > (<uint64_t>1 << SEQ_BITS):
            raise ValueError("seq beyond SEQ_LIMIT")
        self.next_seq = seq

    def _check(self):
        """Verify both heap invariants (for tests)."""
        return bool(je_heap_check(&self.timers) and je_heap_check(&self.ready))


# --- Shared-memory rings -----------------------------------------------------------------

from libc.string cimport memcpy, memmove
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.ref cimport Py_INCREF

cdef extern from "ring.h" nogil:
    ctypedef struct je_ring_shared:
        uint64_t tail
        uint64_t head
        uint32_t parked
        uint64_t capacity
    ctypedef struct je_ring:
        je_ring_shared *s
        uint32_t *park
        uint64_t cap
    int JE_RING_HEADER
    int JE_RING_RECORD_HEADER
    uint64_t je_ring_format(void *mem, size_t total)
    int je_ring_attach(je_ring *r, void *mem, size_t total, uint32_t *park)
    uint64_t je_ring_max_payload(const je_ring *r)
    int je_ring_write(je_ring *r, uint32_t tag, uint64_t a, uint64_t b, const void *p, uint32_t len)
    int je_ring_publish(je_ring *r)
    uint64_t je_ring_free(je_ring *r)
    int je_ring_read(je_ring *r, uint32_t *tag, uint64_t *a, uint64_t *b,
                     const unsigned char **p, uint32_t *len)
    void je_ring_release(je_ring *r)
    int je_ring_empty(je_ring *r)
    int je_park(uint32_t *park, int (*ready)(void *) noexcept nogil, void *arg,
                int64_t spin_ns, int64_t timeout_ns)
    int je_unpark(uint32_t *park)

RING_HEADER = JE_RING_HEADER
RING_RECORD_HEADER = JE_RING_RECORD_HEADER
DOORBELL_SIZE = 64


class RecordTooLarge(ValueError):
    """A record's payload exceeds the ring's max_payload (a quarter of its capacity)."""


cdef unsigned char *_buffer_address(object mem, size_t *size) except NULL:
    cdef unsigned char[::1] view = mem
    size[0] = view.shape[0]
    if size[0] == 0:
        raise ValueError("empty buffer")
    return &view[0]


cdef inline int64_t _timeout_ns(object timeout) except? -2:
    if timeout is None:
        return -1
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0 or None, got {timeout!r}")
    return <int64_t>(timeout * 1e9)


@cython.final
cdef class Doorbell:
    """A wake-up word in shared memory that one consumer sleeps on for many rings.

    Producers in any process ring it after publishing (Ring does this by itself when
    attached with this doorbell); local threads call ring() to say "new work"."""

    cdef object mem
    cdef uint32_t *words  # [0] park word, [1] pending flag set by ring()

    def __cinit__(self, mem, bint format=False):
        cdef size_t size
        cdef unsigned char *p = _buffer_address(mem, &size)
        if size < 8:
            raise ValueError("a Doorbell needs at least 8 bytes")
        self.mem = mem
        self.words = <uint32_t *>p
        if format:
            self.words[0] = 0
            self.words[1] = 0

    def ring(self, uint32_t flags=1):
        """OR `flags` into the pending word and wake the sleeper if it sleeps."""
        __atomic_fetch_or(&self.words[1], flags, __ATOMIC_SEQ_CST)
        je_unpark(&self.words[0])

    def take(self):
        """Take the pending flags (0 when ring() was not called since the last take)."""
        return __atomic_exchange_n(&self.words[1], 0, __ATOMIC_SEQ_CST)

    def wait(self, list rings, timeout=None, double spin=0.0):
        """Sleep until one of `rings` has a record, ring() was called, or `timeout`
        seconds pass (None: forever).  Spins `spin` seconds first.  Releases the GIL.
        Returns True when something is ready."""
        cdef _WaitSet ws
        cdef Py_ssize_t n = len(rings), i
        cdef int64_t tmo = _timeout_ns(timeout)
        cdef int r
        if n > 256:
            raise ValueError("a Doorbell waits on at most 256 rings")
        ws.n = n
        ws.pending = &self.words[1]
        for i in range(n):
            ws.rings[i] = &(<Ring?>rings[i]).r
        with nogil:
            r = je_park(&self.words[0], _waitset_ready, &ws, <int64_t>(spin * 1e9), tmo)
        return bool(r)


cdef extern from *:
    """
    #define JE_WAITSET_MAX 256
    """
    int JE_WAITSET_MAX

ctypedef struct _WaitSet:
    Py_ssize_t n
    uint32_t *pending
    je_ring *rings[256]


cdef int _waitset_ready(void *arg) noexcept nogil:
    cdef _WaitSet *ws = <_WaitSet *>arg
    cdef Py_ssize_t i
    if __atomic_load_n(ws.pending, __ATOMIC_ACQUIRE):
        return 1
    for i in range(ws.n):
        if not je_ring_empty(ws.rings[i]):
            return 1
    return 0


cdef int _ring_ready(void *arg) noexcept nogil:
    return not je_ring_empty(<je_ring *>arg)


cdef extern from *:
    void __atomic_store_n(uint32_t *p, uint32_t v, int order) nogil
    uint32_t __atomic_exchange_n(uint32_t *p, uint32_t v, int order) nogil
    uint32_t __atomic_fetch_or(uint32_t *p, uint32_t v, int order) nogil
    uint32_t __atomic_load_n(uint32_t *p, int order) nogil
    int __ATOMIC_SEQ_CST
    int __ATOMIC_ACQUIRE


ctypedef struct _Rec:
    uint32_t tag
    uint64_t a
    uint64_t b
    const char *p
    Py_ssize_t n


cdef Py_ssize_t _write_all(je_ring *r, _Rec *recs, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if je_ring_write(r, recs[i].tag, recs[i].a, recs[i].b, recs[i].p, <uint32_t>recs[i].n) != 0:
            break
    else:
        i = n
    if i:
        je_ring_publish(r)
    return i


@cython.final
cdef class Ring:
    """One end of a single-producer single-consumer ring in a shared buffer.

    Ring(mem, doorbell=None, format=False): `mem` is a writable buffer shared between
    the two processes (an mmap made before fork, or a memfd mapping); format=True lays out
    a fresh ring (do it once, before either side uses it).  With a doorbell, the
    consumer sleeps on the doorbell (see Doorbell.wait) and the producer rings it.

    Records are (tag: u32, a: u64, b: u64, payload: bytes).  Use one object per side:
    the producer calls write/publish/push, the consumer read_many/wait."""

    cdef je_ring r
    cdef object mem
    cdef object doorbell

    def __cinit__(self, mem, Doorbell doorbell=None, bint format=False):
        cdef size_t size
        cdef unsigned char *p = _buffer_address(mem, &size)
        if format and je_ring_format(p, size) == 0:
            raise ValueError(f"a ring needs at least {JE_RING_HEADER + 4096} bytes, got {size}")
        if je_ring_attach(&self.r, p, size, &doorbell.words[0] if doorbell is not None else NULL) != 0:
            raise ValueError("the buffer does not hold a formatted ring")
        self.mem = mem
        self.doorbell = doorbell

    @property
    def capacity(self):
        """Bytes of record space."""
        return self.r.cap

    @property
    def max_payload(self):
        """Largest payload one record may carry."""
        return je_ring_max_payload(&self.r)

    @property
    def consumer_parked(self):
        """Whether the consumer sleeps on this ring's park word: seen from the manager's
        end of a task ring, a worker with nothing to do."""
        return __atomic_load_n(self.r.park, __ATOMIC_ACQUIRE) != 0

    def free(self):
        """Bytes the producer could write now (a bound: each record adds a header)."""
        return je_ring_free(&self.r)

    def write(self, uint32_t tag, uint64_t a, uint64_t b, const unsigned char[::1] payload=None):
        """Producer: append a record without publishing it.  False when the ring is full;
        RecordTooLarge when the payload exceeds max_payload."""
        cdef uint32_t n = 0
        cdef const unsigned char *p = NULL
        if payload is not None and payload.shape[0]:
            if <uint64_t>payload.shape[0] > je_ring_max_payload(&self.r):
                raise RecordTooLarge(
                    f"record payload of {payload.shape[0]} bytes exceeds the ring's "
                    f"max_payload of {je_ring_max_payload(&self.r)} bytes")
            n = <uint32_t>payload.shape[0]
            p = &payload[0]
        return je_ring_write(&self.r, tag, a, b, p, n) == 0

    def publish(self):
        """Producer: make written records visible; wake the consumer if it sleeps.
        Returns True if a wake-up was issued."""
        return bool(je_ring_publish(&self.r))

    def push(self, uint32_t tag, uint64_t a, uint64_t b, const unsigned char[::1] payload=None):
        """write() then publish(); False when full (nothing written)."""
        if not self.write(tag, a, b, payload):
            return False
        je_ring_publish(&self.r)
        return True

    def push_many(self, list records):
        """Producer: write each (tag, a, b, payload: bytes) record in order, then publish
        once.  Stops at the first record that does not fit; returns how many were written
        (the rest are the caller's to retry).  Copies without the GIL when the batch
        carries 64 KiB or more.  RecordTooLarge (nothing written) if any payload exceeds
        max_payload."""
        cdef Py_ssize_t n = len(records), i, written = 0
        cdef uint64_t limit = je_ring_max_payload(&self.r), total = 0
        cdef _Rec *recs
        cdef object payload
        if n == 0:
            return 0
        recs = <_Rec *>malloc(n * sizeof(_Rec))
        if recs == NULL:
            raise MemoryError()
        try:
            for i in range(n):
                rec = records[i]
                payload = rec[3]
                if not isinstance(payload, bytes):
                    raise TypeError(f"push_many payloads must be bytes, got {type(payload).__name__}")
                recs[i].tag = rec[0]
                recs[i].a = rec[1]
                recs[i].b = rec[2]
                recs[i].p = PyBytes_AS_STRING(payload)
                recs[i].n = PyBytes_GET_SIZE(payload)
                if recs[i].n > limit:
                    raise RecordTooLarge(
                        f"record {i}: payload of {recs[i].n} bytes exceeds the ring's "
                        f"max_payload of {limit} bytes")
                total += recs[i].n
            # `records` keeps every payload alive while the GIL is released.
            if total >= 65536:
                with nogil:
                    written = _write_all(&self.r, recs, n)
            else:
                written = _write_all(&self.r, recs, n)
        finally:
            free(recs)
        return written

    def read_many(self, Py_ssize_t max_n=1 << 30):
        """Consumer: take up to max_n records as (tag, a, b, payload) tuples, release
        their space, and return them (an empty list when the ring is empty)."""
        cdef list out = []
        cdef uint32_t tag, n
        cdef uint64_t a, b
        cdef const unsigned char *p
        cdef Py_ssize_t i = 0
        while i < max_n and je_ring_read(&self.r, &tag, &a, &b, &p, &n):
            out.append((tag, a, b, PyBytes_FromStringAndSize(<const char *>p, n)))
            i += 1
        if i:
            je_ring_release(&self.r)
        return out

    def empty(self):
        """Consumer: True when no record is waiting."""
        return bool(je_ring_empty(&self.r))

    def wait(self, timeout=None, double spin=0.0):
        """Consumer: sleep until a record arrives or `timeout` seconds pass (None:
        forever), spinning `spin` seconds first.  Releases the GIL.  True if ready."""
        cdef int64_t tmo = _timeout_ns(timeout)
        cdef int r
        with nogil:
            r = je_park(self.r.park, _ring_ready, &self.r, <int64_t>(spin * 1e9), tmo)
        return bool(r)


# --- identifiers ---------------------------------------------------------------------

from cpython.unicode cimport PyUnicode_DecodeASCII

cdef const char *_HEX_DIGITS = b"0123456789abcdef"


def uuid_text(object n):
    """The canonical text of a 128-bit UUID given as an int (what str(uuid.UUID(int=n))
    gives): 8-4-4-4-12 lowercase hex digits.  ~10x the speed of formatting it in
    Python; every instance's uuid is formatted once, as the key every store uses."""
    if not isinstance(n, int):
        raise TypeError(f"a uuid must be an int, not {type(n).__name__}")
    if n < 0 or n >> 128:
        raise ValueError("a uuid must be a 128-bit unsigned int")
    return _uuid_chars((n >> 64) & 0xFFFFFFFFFFFFFFFF, n & 0xFFFFFFFFFFFFFFFF)


cdef object _uuid_chars(uint64_t hi, uint64_t lo):
    # 8-4-4-4-12 lowercase hex digits of the 128-bit value hi:lo
    cdef char buf[36]
    cdef int i, pos = 35
    cdef uint64_t word = lo
    # from the last digit back: dashes before digits 8, 12, 16 and 20 (from the left)
    for i in range(32):
        if i == 16:
            word = hi
        if pos == 23 or pos == 18 or pos == 13 or pos == 8:
            buf[pos] = b'-'
            pos -= 1
        buf[pos] = _HEX_DIGITS[word & 0xF]
        word >>= 4
        pos -= 1
    return PyUnicode_DecodeASCII(buf, 36, NULL)


# --- the Instance's fields and the engine's lookup table ------------------------------

from cpython.weakref cimport PyWeakref_NewRef, PyWeakref_CheckRef, PyWeakref_GET_OBJECT


@cython.final
@cython.freelist(64)
@cython.auto_pickle(False)
cdef class Borrowed:
    """An entry of the engine's lookup table (engine.py: Engine._known, uuid -> the
    Instance) for an Instance the engine made: the object's address, not a
    reference, so the table keeps nobody's Instance alive (while the engine runs it,
    the inbox, the handle table or the finished list hold it).  A weak reference did the
    same at the cost of one more object per finished job for the garbage collector to
    count and walk (~8% of a submit loop that holds its Futures).  The Instance's
    finalizer (InstanceFields.__del__) finds the entry in its owner's table
    (owner._known), clears it and removes it before the object goes.  So an entry is
    made only in the table of the Instance's own engine (lend), and read only there,
    with the GIL held and no Python code run between reading it and taking a
    reference (known_get): Python code never sees the address."""

    cdef PyObject *ptr


cdef inline Borrowed _borrow(object inst):
    cdef Borrowed b = Borrowed.__new__(Borrowed)
    b.ptr = <PyObject *>inst
    return b


def lend(dict known, InstanceFields inst):
    """Make `known`'s entry for `inst` one that does not keep it alive: a Borrowed one
    if `known` is the table its finalizer leaves (inst._owner._known: its owner is
    the engine), else a weak reference (an instance handed to a shared queue, which
    owns its cancel)."""
    owner = inst._owner
    if owner is not None and getattr(owner, "_known", None) is known:
        known[inst._uuid_str] = _borrow(inst)
    else:
        known[inst._uuid_str] = PyWeakref_NewRef(inst, None)


def known_get(dict known, object uuid):
    """The Instance the lookup table has for `uuid` (lent: Borrowed, or a weak
    reference, and still alive), else None.  One C call: nothing can free a lent Instance between
    reading its entry and taking a reference to it."""
    cdef PyObject *v = PyDict_GetItem(known, uuid)
    if v is NULL:
        return None
    if type(<object>v) is Borrowed:
        v = (<Borrowed>v).ptr
    elif PyWeakref_CheckRef(<object>v):
        v = PyWeakref_GET_OBJECT(<object>v)
        if v == <PyObject *>None:
            return None
    if v is NULL:
        return None
    return <object>v


@cython.auto_pickle(False)
cdef class InstanceFields:
    """The fields of an Instance (instance.py) the engine reads and writes for every
    job, as C members: the compiled calls below read and write them as struct fields
    where a Python attribute costs a dictionary-backed lookup each (on the engine
    thread, ~20 of them a job).  Python code sees ordinary attributes.  Instance
    derives from it (and from concurrent.futures.Future, whose own fields _state,
    _result and _exception live here too); instance.py documents each field."""

    cdef public object _state, _result, _exception, _owner, job, _uuid_str, args, _kwargs
    cdef public object priority, state, payload, handle, attempts
    cdef public object worker, processed_ns, started_mono, completed_ns
    # Unboxed (_NO_NS: None): every queued instance has both, and as int objects they
    # were 40 bytes more per queued instance (one int, shared with the store's row)
    cdef int64_t _created_ns, _scheduled_ns

    def __init__(self, owner, job, uid, args, kwargs, priority, created_ns):
        # Future.__init__ minus its Condition and lists (instance.py: Instance makes
        # them on first use).  The fields not set here start as None.
        self._state = _FUTURE_PENDING
        self._owner = owner
        self.job = job
        # its text only: every instance needs it (records, lookups), the int would be
        # ~48 more bytes per queued instance (uid: the text, or the 128-bit int)
        self._uuid_str = uid if type(uid) is str else uuid_text(uid)
        self.args = args
        self._kwargs = kwargs or None
        self.priority = priority
        self.state = _CREATED if _CREATED is not None else _created_state()
        self.payload = b""
        self._created_ns = _ns_field(created_ns)
        self._scheduled_ns = _NO_NS
        self.handle = -1
        self.attempts = 0
        self.started_mono = 0

    @property
    def created_ns(self):
        """When it was made (Unix ns)."""
        return _ns(self._created_ns)

    @created_ns.setter
    def created_ns(self, value):
        self._created_ns = _ns_field(value)

    @property
    def scheduled_ns(self):
        """When it is (or was) due to run (Unix ns); None until it is scheduled."""
        return _ns(self._scheduled_ns)

    @scheduled_ns.setter
    def scheduled_ns(self, value):
        self._scheduled_ns = _ns_field(value)

    # Read on every path that records or looks up an instance: as C properties they
    # cost a third of what a Python property does.
    @property
    def uuid_str(self):
        """The UUID as its canonical string (the key every store uses)."""
        return self._uuid_str

    @property
    def kind(self):
        """The kind of the instance's job."""
        return self.job.kind

    def __del__(self):
        # Out of the owner's lookup table before the object goes (see Borrowed): the
        # entry, if it is this object's, is cleared and removed in C, no Python code
        # in between.  (An Instance without an engine, or an engine already torn down
        # at interpreter exit, has no table to leave.)
        cdef PyObject *v
        owner = self._owner
        if owner is None:
            return
        try:
            known = owner._known
        except AttributeError:
            return
        if type(known) is not dict:
            return
        v = PyDict_GetItem(known, self._uuid_str)
        if v is not NULL and type(<object>v) is Borrowed and (<Borrowed>v).ptr == <PyObject *>self:
            (<Borrowed>v).ptr = NULL
            PyDict_DelItem(known, self._uuid_str)

    def __reduce__(self):
        # copy.copy() and pickle, as before the fields were C members: its class, then
        # its fields (these members, then the attribute array's, if any)
        return (_restore_instance, (type(self), (
            self._state, self._result, self._exception, self._owner, self.job,
            self._uuid_str, self.args, self._kwargs, self.priority, self.state,
            self.payload, self.created_ns, self.scheduled_ns, self.handle, self.attempts,
            self.worker, self.processed_ns, self.started_mono, self.completed_ns,
        ), getattr(self, "__dict__", None)))


def _restore_instance(cls, tuple members, attributes):
    """InstanceFields.__reduce__'s inverse."""
    cdef InstanceFields f = cls.__new__(cls)
    (f._state, f._result, f._exception, f._owner, f.job, f._uuid_str, f.args, f._kwargs,
     f.priority, f.state, f.payload, f.created_ns, f.scheduled_ns, f.handle, f.attempts,
     f.worker, f.processed_ns, f.started_mono, f.completed_ns) = members
    if attributes:
        f.__dict__.update(attributes)
    return f


# The collector's walk of an Instance visits only the members that may refer to an
# object able to take part in a reference cycle: the Future's outcome, the owner, the
# job, the arguments and the payload (which holds an exception for a moment when the
# arguments cannot be pickled).  The others hold only strings, ints, None or a State
# (the Future's state name, the uuid, priority, handle, attempts, worker, timestamps):
# Cython's own walk visited all 17, and for a caller holding 100,000 Futures each full
# collection read the uuid and timestamps of every one of them from cold memory.  Not
# visiting a reference is always safe: the collector only treats its target as
# referenced from outside (a cycle through these members would not be collected; none
# can form through a str or an int).
ctypedef int (*_visit_fn)(PyObject *, void *) noexcept


cdef int _instance_traverse(PyObject *o, _visit_fn visit, void *arg) noexcept:
    cdef InstanceFields f = <InstanceFields>o
    cdef PyObject *members[7]
    members[0] = <PyObject *>f._result
    members[1] = <PyObject *>f._exception
    members[2] = <PyObject *>f._owner
    members[3] = <PyObject *>f.job
    members[4] = <PyObject *>f.args
    members[5] = <PyObject *>f._kwargs
    members[6] = <PyObject *>f.payload
    cdef int i, e
    for i in range(7):
        if members[i] is not NULL:
            e = visit(members[i], arg)
            if e:
                return e
    return 0


(<PyTypeObject *>InstanceFields).tp_traverse = <traverseproc>_instance_traverse


# A time field's None, unboxed (no instant this engine handles is 292 years before 1970)
cdef int64_t _NO_NS = INT64_MIN


cdef inline object _ns(int64_t value):
    return None if value == _NO_NS else value


cdef int64_t _ns_field(object value) except? -1:
    # what a time field keeps: None, or an int (no float truncated) that fits in
    # int64 and is not the None marker
    if value is None:
        return _NO_NS
    cdef int64_t v = _index64(value)
    if v == _NO_NS:
        raise OverflowError(f"a time in ns must be above {_NO_NS}")
    return v


cdef object _FUTURE_PENDING = "PENDING"  # concurrent.futures._base.PENDING
cdef object _CREATED = None  # State.CREATED (state.py), looked up on first use


cdef object _created_state():
    global _CREATED
    from jobengine.state import State
    _CREATED = State.CREATED
    return _CREATED


# --- the recorder's state records ----------------------------------------------------

from cpython.ref cimport Py_XDECREF

cdef int _V_CREATED = 1, _V_SCHEDULED = 2  # State.CREATED/SCHEDULED's values (tested)

# One state record (records.py: STATE_ROW, the same fields).  The objects are owned
# references; state, attempt and run are what every reader computes with.
ctypedef struct _StateRec:
    PyObject *uuid
    PyObject *kind
    PyObject *time
    PyObject *worker
    PyObject *cause
    int64_t state, attempt, run


@cython.no_gc  # it holds strs, ints and None only: never part of a reference cycle
@cython.final
@cython.auto_pickle(False)
cdef class RecordBuffer:
    """The recorder's state records not yet handed to the store (issue 14: records in
    a compact C buffer).  Each is 64 bytes in one growable array instead of an 8-tuple
    (~120 bytes and an allocation) in a deque; the memory store's write reads them in
    place (memory_write), and they become STATE_ROW tuples only for a store that
    needs them (tuples()).  Appends from any thread: each one runs no Python code
    once its arguments are converted, so the GIL makes it whole; take() moves the
    records out the same way."""

    cdef _StateRec *a
    cdef Py_ssize_t n, cap

    def __dealloc__(self):
        cdef Py_ssize_t i
        for i in range(self.n):
            _release_rec(&self.a[i])
        free(self.a)

    cdef int push(self, object uuid, object kind, int64_t state, object time,
                  int64_t attempt, object worker, int64_t run, object cause) except -1:
        cdef Py_ssize_t cap
        cdef _StateRec *grown
        if self.n == self.cap:
            cap = max(64, self.cap * 2)
            grown = <_StateRec *>realloc(self.a, cap * sizeof(_StateRec))
            if grown == NULL:
                raise MemoryError()
            self.a, self.cap = grown, cap
        cdef _StateRec *r = &self.a[self.n]
        Py_INCREF(uuid)
        Py_INCREF(kind)
        Py_INCREF(time)
        Py_INCREF(worker)
        Py_INCREF(cause)
        r.uuid, r.kind, r.time = <PyObject *>uuid, <PyObject *>kind, <PyObject *>time
        r.worker, r.cause = <PyObject *>worker, <PyObject *>cause
        r.state, r.attempt, r.run = state, attempt, run
        self.n += 1
        return 0

    def append(self, uuid, kind, state, time, attempt, worker, run, cause):
        """Add one record: STATE_ROW's fields, in its order (state, attempt and run:
        ints, no float truncated)."""
        self.push(uuid, kind, _index64(state), time, _index64(attempt), worker,
                  _index64(run), cause)

    def created(self, uuid, kind, time, run):
        """Add a new instance's two records: CREATED, then SCHEDULED, at `time`."""
        cdef int64_t r = _index64(run)
        self.push(uuid, kind, _V_CREATED, time, 0, None, r, None)
        self.push(uuid, kind, _V_SCHEDULED, time, 0, None, r, None)

    def take(self, Py_ssize_t max_n=-1):
        """A new buffer holding the first `max_n` records (all: -1), which leave this
        one."""
        # Made before anything moves (a MemoryError then leaves every record here);
        # from there on no Python code runs, so no other thread's append lands half in
        # the records taken, half in those left.
        cdef RecordBuffer out = RecordBuffer.__new__(RecordBuffer)
        cdef _StateRec *part
        if max_n < 0 or max_n >= self.n:
            out.a, out.n, out.cap = self.a, self.n, self.cap
            self.a, self.n, self.cap = NULL, 0, 0
            return out
        if max_n == 0:
            return out
        part = <_StateRec *>malloc(max_n * sizeof(_StateRec))
        if part == NULL:
            raise MemoryError()
        memcpy(part, self.a, max_n * sizeof(_StateRec))
        memmove(self.a, self.a + max_n, (self.n - max_n) * sizeof(_StateRec))
        self.n -= max_n
        out.a, out.n, out.cap = part, max_n, max_n
        return out

    def tuples(self):
        """The records as STATE_ROW tuples (uuid, kind, state, time_ns, attempt,
        worker, run, cause), oldest first."""
        cdef list out = PyList_New(self.n)
        cdef Py_ssize_t i
        cdef _StateRec *r
        cdef tuple t
        for i in range(self.n):
            r = &self.a[i]
            t = (<object>r.uuid, <object>r.kind, r.state, <object>r.time, r.attempt,
                 <object>r.worker, r.run, <object>r.cause)
            Py_INCREF(t)
            PyList_SET_ITEM(out, i, t)
        return out

    def __len__(self):
        return self.n


cdef inline int64_t _index64(object value) except? -1:
    return PyNumber_Index(value)  # (OverflowError past int64)


cdef inline void _release_rec(_StateRec *r) noexcept:
    Py_XDECREF(r.uuid)
    Py_XDECREF(r.kind)
    Py_XDECREF(r.time)
    Py_XDECREF(r.worker)
    Py_XDECREF(r.cause)


# --- submit()'s short path ------------------------------------------------------------

cdef object _least_loaded(dict workers, object credits):
    # Dispatcher.deal's first slot: the least loaded worker with a free credit, the
    # first of equals in the pool's order (its sort is stable), or None
    best = None
    for w in workers.values():
        if not w.retiring and len(w.inflight) < credits and (
                best is None or len(w.inflight) < len(best.inflight)):
            best = w
    return best



cdef tuple _NO_ARGS = ()


cdef bint _a_consumer_parked(list rings):
    cdef Ring ring
    for ring in rings:
        if __atomic_load_n(ring.r.park, __ATOMIC_ACQUIRE):
            return True
    return False


def any_consumer_parked(list rings):
    """Whether the consumer of any of `rings` sleeps (Ring.consumer_parked): given the
    pool's task rings, whether a worker waits for work (Engine.make_way)."""
    return _a_consumer_parked(rings)


def pause_without_gil(double seconds):
    """Sleep `seconds` with the GIL released and without running signal handlers (they
    run when the caller's Python code next runs): a thread that must not raise
    KeyboardInterrupt half-way through a call lets another thread have the GIL."""
    cdef timespec ts
    if seconds <= 0:
        return
    ts.tv_sec = <long>seconds
    ts.tv_nsec = <long>((seconds - ts.tv_sec) * 1e9)
    with nogil:
        # a signal cuts nanosleep short (EINTR) and leaves what remains in ts
        while nanosleep(&ts, &ts) != 0 and errno == EINTR:
            pass


cdef extern from "<string.h>" nogil:
    # a GNU extension (Python.h defines _GNU_SOURCE first)
    void *memmem(const void *haystack, size_t haystacklen, const void *needle,
                 size_t needlelen)


# pickle.dumps((args, {}), 5) for the arguments most calls pass, written directly: a
# flat tuple of None, bools, ints within 32 bits, floats and strs whose UTF-8 is under
# 256 bytes, 1 KiB of pickle at most.  pickle.dumps builds a Pickler, its memo and its buffer for every call,
# ~4,000 instructions for one int (callgrind), most of a compiled submit's own work;
# this writes the same bytes, opcode for opcode, in ~200.  What _pickle.c writes for
# them at protocol 5: PROTO 5 and one FRAME (its length: what follows it), the
# arguments (MARK first when more than 3), each str memoized on first sight and
# fetched (BINGET) on the next sight of the same object, TUPLE1/2/3 (or TUPLE) and
# MEMOIZE, EMPTY_DICT and MEMOIZE, TUPLE2 and MEMOIZE, STOP.  tests/test_short_path.py
# holds it to pickle.dumps byte for byte.
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.exc cimport PyErr_Clear


cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t *size) noexcept


cdef enum:
    _PLAIN_MAX_ARGS = 64  # (so every memo index fits BINGET's one byte)
    _PLAIN_MAX_STR = 255
    _PLAIN_HEAD = 11  # PROTO 5, FRAME and its 8-byte length
    # The pickle's most bytes: a submit's call runs on the caller's thread, whose stack
    # may be small (threading.stack_size); larger arguments go to pickle.dumps
    _PLAIN_BUF = 1024
    _PLAIN_TAIL = 7  # TUPLEn MEMOIZE EMPTY_DICT MEMOIZE TUPLE2 MEMOIZE STOP


cdef object _pickle_plain_args(tuple args):
    # the bytes, or None for arguments it does not cover (the caller pickles them)
    cdef Py_ssize_t n = len(args), i, j, size
    if n == 0 or n > _PLAIN_MAX_ARGS:
        return None
    cdef unsigned char buf[_PLAIN_BUF]
    cdef PyObject *strs[_PLAIN_MAX_ARGS]
    cdef Py_ssize_t nstr = 0, pos = _PLAIN_HEAD
    cdef long long v
    cdef int overflow
    cdef double d
    cdef uint64_t bits
    cdef const char *utf8
    cdef object a
    if n > 3:
        buf[pos] = 0x28  # MARK
        pos += 1
    for i in range(n):
        if pos + 9 + _PLAIN_TAIL > _PLAIN_BUF:  # (9: the longest but a str's)
            return None
        a = args[i]
        if a is None:
            buf[pos] = 0x4e  # NONE
            pos += 1
        elif type(a) is bool:
            buf[pos] = 0x88 if a is True else 0x89  # NEWTRUE / NEWFALSE
            pos += 1
        elif type(a) is int:
            overflow = 0
            v = PyLong_AsLongLongAndOverflow(a, &overflow)
            if overflow or v < -0x80000000LL or v > 0x7fffffffLL:
                return None
            if 0 <= v <= 0xff:
                buf[pos] = 0x4b  # BININT1
                buf[pos + 1] = <unsigned char>v
                pos += 2
            elif 0 <= v <= 0xffff:
                buf[pos] = 0x4d  # BININT2, little-endian
                buf[pos + 1] = <unsigned char>(v & 0xff)
                buf[pos + 2] = <unsigned char>(v >> 8)
                pos += 3
            else:
                buf[pos] = 0x4a  # BININT, 4 bytes little-endian, two's complement
                bits = <uint64_t>(<uint32_t>(<int32_t>v))
                for j in range(4):
                    buf[pos + 1 + j] = <unsigned char>((bits >> (8 * j)) & 0xff)
                pos += 5
        elif type(a) is float:
            d = PyFloat_AS_DOUBLE(a)
            memcpy(&bits, &d, 8)
            buf[pos] = 0x47  # BINFLOAT, 8 bytes big-endian
            for j in range(8):
                buf[pos + 1 + j] = <unsigned char>((bits >> (56 - 8 * j)) & 0xff)
            pos += 9
        elif type(a) is str:
            for j in range(nstr):
                if strs[j] == <PyObject *>a:  # the same object again: from the memo
                    buf[pos] = 0x68  # BINGET
                    buf[pos + 1] = <unsigned char>j
                    pos += 2
                    break
            else:
                utf8 = PyUnicode_AsUTF8AndSize(a, &size)
                if utf8 is NULL:  # (lone surrogates: pickle has its own way)
                    PyErr_Clear()
                    return None
                if size > _PLAIN_MAX_STR or pos + size + 3 + _PLAIN_TAIL > _PLAIN_BUF:
                    return None
                buf[pos] = 0x8c  # SHORT_BINUNICODE, its length, its UTF-8, MEMOIZE
                buf[pos + 1] = <unsigned char>size
                memcpy(&buf[pos + 2], utf8, size)
                pos += 2 + size
                buf[pos] = 0x94
                pos += 1
                strs[nstr] = <PyObject *>a
                nstr += 1
        else:
            return None
    buf[pos] = (0x85 if n == 1 else 0x86 if n == 2 else 0x87 if n == 3 else 0x74)  # TUPLEn
    # (room for these seven was checked with each argument)
    buf[pos + 1] = 0x94  # MEMOIZE
    buf[pos + 2] = 0x7d  # EMPTY_DICT
    buf[pos + 3] = 0x94
    buf[pos + 4] = 0x86  # TUPLE2
    buf[pos + 5] = 0x94
    buf[pos + 6] = 0x2e  # STOP
    pos += _PLAIN_TAIL
    buf[0] = 0x80  # PROTO 5
    buf[1] = 5
    buf[2] = 0x95  # FRAME, 8 bytes little-endian
    bits = <uint64_t>(pos - _PLAIN_HEAD)
    for j in range(8):
        buf[3 + j] = <unsigned char>((bits >> (8 * j)) & 0xff)
    return PyBytes_FromStringAndSize(<char *>buf, pos)


def plain_args_pickle(tuple args):
    """pickle.dumps((args, {}), 5) written directly for the arguments it covers (a flat
    tuple of 1-64 None, bools, ints within 32 bits, floats and strs under 256 bytes of
    UTF-8, 1 KiB of pickle at most), else None: the compiled submit's pickling.  For
    tests."""
    return _pickle_plain_args(args)


cdef object _plain_task_bytes(tuple args):
    # job.task_bytes for positional arguments without a "?" placeholder and an executor
    # that takes no Instance: pickle.dumps((args, {})) with no Python frame between (a
    # call of task_bytes took ~0.8 us for one int, pickle.dumps ~0.3 of it); None for
    # task_bytes to do it (a placeholder, something of the user's script that goes by
    # value, or a value pickle refuses)
    cdef bytes raw
    for a in args:
        if type(a) is str and a == "?":
            return None
    raw = _pickle_plain_args(args)
    if raw is None:
        try:
            raw = _pickle_dumps((args, {}), 5)
        except Exception:
            return None
    # (not `b"__main__" in raw`: bytes.__contains__ tries its argument as an int first,
    # and the TypeError it makes and clears cost ~0.3 us a call, as much as the pickle)
    if memmem(PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), b"__main__", 8) is not NULL:
        return None
    return raw


@cython.final
cdef class ShortPath:
    """Manager.submit(), schedule_registered_job() and schedule_job()'s common case,
    compiled: one call where the Python path made ~15 (issue 14: the submitting
    thread's cost a job).  It is Manager._admit_plain followed by Engine.admit and
    Recorder.created, step for step, for a job of its own (not transient) with no
    schedule options and no state-change handler, arguments that fit its executor's
    signature without a full bind (and, for the go-job calls, with no annotation to
    convert them by), its executor already pickled, on a running engine with no shared
    queue, no follow-up uuid given to this thread, and the recorder below its flush
    mark.  Those Python methods stay the reference and take every other case: submit()
    and schedule() return the new Instance, or None having recorded nothing (then an
    argument that could not be pickled is pickled again by the general path, which
    reports it).  On an idle engine it also deals the instance itself (_deal_idle).
    Made by Manager.start() for its engine, dropped with it; it keeps the registry's,
    the engine's and the recorder's containers it reads, which are never rebound."""

    cdef object engine, recorder, touched
    cdef object inbox, given, time_ns, instance_type, task_bytes, no_arguments
    cdef object scheduled, kind_ids, log, dispatcher, pool
    # (typed: a dict's get and item calls compile to C calls where an untyped one went
    # through a method lookup each, ~4 a submit; the deques' appends bound once)
    cdef dict mglobals, implicit, jobs, blobs, known
    cdef object touched_append, inbox_append
    cdef uint32_t t_task
    cdef RecordBuffer records
    cdef Doorbell doorbell
    cdef Py_ssize_t flush_every

    def __init__(self, manager, engine, registry, dict manager_globals, instance_type,
                 task_bytes, no_arguments, scheduled_state, Py_ssize_t flush_every):
        if not (isinstance(instance_type, type) and issubclass(instance_type, InstanceFields)):
            raise TypeError("ShortPath makes InstanceFields instances")
        # (not the manager itself: a Manager dropped without stop() is collected, and
        # stops its engine, as soon as nothing refers to it; a cycle would wait for the
        # collector)
        self.engine = engine
        self.mglobals = manager_globals
        self.implicit = registry._implicit
        self.jobs = registry._jobs
        self.blobs = registry._blobs
        self.kind_ids = registry.kind_ids()  # (the live mapping)
        from jobengine.engine import log
        from jobengine.pool.channel import T_TASK
        self.log, self.t_task = log, T_TASK
        self.recorder = engine.recorder
        self.records = engine.recorder._records
        self.touched = engine.recorder._touched
        self.touched_append = self.touched.append
        self.known = engine._known
        self.inbox = engine.inbox
        self.inbox_append = self.inbox.append
        self.given = manager._given_uid
        self.time_ns = manager._clock.time_ns
        self.doorbell = engine.pool.doorbell
        self.dispatcher = engine.dispatcher
        self.pool = engine.pool
        self.instance_type = instance_type
        self.task_bytes = task_bytes
        self.no_arguments = no_arguments
        self.scheduled = scheduled_state
        self.flush_every = flush_every

    def submit(self, fn, tuple args, dict kwargs):
        """submit(fn, *args, **kwargs) (the Executor rule: arguments as given)."""
        try:
            job = self.implicit.get(fn)
        except TypeError:  # unhashable: never shared between calls
            return None
        if job is None:
            return None
        return self._admit(job, args, kwargs, False)

    def schedule(self, job, tuple args, kwargs):
        """schedule_job(job, args=args, kwargs=kwargs) (the go-job rule: only a
        registered job, and only when nothing would be converted)."""
        if kwargs is not None and type(kwargs) is not dict:
            return None
        return self._admit(job, args, kwargs, True)

    cdef object _admit(self, job, tuple args, dict kwargs, bint registered):
        engine = self.engine
        if (engine.state != "running" or engine.broken is not None
                or self.mglobals["_exiting"]):
            return None
        # manager.py: _plain(job), and no handler to call for the two records
        if (job.transient or job.crontab is not None or job.schedule_at is not None
                or job.schedule_after is not None or job.jitter is not None
                or job.state_change_handler is not None):
            return None
        # Job.bind's common case: no full bind, nothing to convert
        if job._signature is not None:
            arity = job._arity
            if arity is None or kwargs or not (arity[0] <= len(args) <= arity[1]):
                return None
            if registered and job._conversions is not None:
                return None
        if registered and self.jobs.get(job.kind) is not job:  # registry.adopt's case
            return None
        if self.blobs.get(job) is None:  # registry.executor_blob makes it, once
            return None
        if self.given.value is not None:  # a follow-up job's uuid (Manager._next_uid)
            return None
        recorder = self.recorder
        if recorder._unflushed + 2 > self.flush_every:  # Recorder.created flushes, may wait
            return None
        uid = uuid7_text()
        if not kwargs and not job.injections:
            payload = self.no_arguments if not args else _plain_task_bytes(args)
        else:
            payload = None
        if payload is None:
            try:
                payload = self.task_bytes(job, args, kwargs, uid)
            except Exception:
                return None
        created = self.time_ns()
        cdef int64_t created_ns = _ns_field(created)
        cdef type cls = self.instance_type
        inst = (<PyTypeObject *>cls).tp_new(cls, <PyObject *>_NO_ARGS, NULL)
        cdef InstanceFields f = <InstanceFields>inst
        # InstanceFields.__init__, then _admit_plain's and Recorder.created's fields
        f._state = _FUTURE_PENDING
        f._owner = engine
        f.job = job
        f._uuid_str = uid
        f.args = args
        f._kwargs = kwargs or None
        f.priority = job.priority
        f.handle = -1
        f.attempts = 0
        f.started_mono = 0
        f._created_ns = created_ns
        f._scheduled_ns = created_ns
        f.payload = payload
        f.state = self.scheduled
        # Engine.admit: records first (once the engine has one, it may run at once)
        self.records.created(uid, job.kind, created, 1)
        self.touched_append(inst)
        recorder._unflushed += 2  # (read again: pickling may have let another thread in)
        cdef dict known = self.known
        known[uid] = _borrow(inst)  # Engine.remember(inst): its owner is the engine
        if len(known) > engine._known_limit:
            engine._prune_known()
        self.inbox_append(inst)
        if not engine._active and self._deal_idle(engine, f):
            return inst
        # Engine._ring_for_inbox
        __atomic_fetch_or(&self.doorbell.words[1], 1, __ATOMIC_SEQ_CST)
        je_unpark(&self.doorbell.words[0])
        if self.dispatcher.nap_ns and _a_consumer_parked(self.pool.task_rings):
            engine.make_way()
        if engine.state == "stopped":
            engine.cancel_queued(inst)
        return inst

    cdef bint _deal_idle(self, engine, InstanceFields inst) except -1:
        # Engine._deal_here for the instance just admitted to an idle engine (nothing
        # counted active, nothing in the core, only it in the inbox), with
        # Engine._dispatch, _take_inbox and Dispatcher.deal for that one instance: no
        # heap push and pop, no sorting.  Any other case, or recycled workers (their
        # tasks are counted by Dispatcher._send), goes to engine._deal_here, the
        # reference.  True: dealt, the engine thread has nothing to do for it.
        inbox = self.inbox
        core = engine.core
        lock = engine.lock
        dispatcher = engine.dispatcher
        if (len(inbox) != 1 or inbox[0] is not inst or len(core) or engine._preload
                or engine._finished or dispatcher.max_jobs is not None):
            return engine._deal_here()
        if engine.state != "running" or lock.locked():
            return False
        turn = engine._turn
        if not turn.acquire(False):
            return False
        try:
            credits = dispatcher.credits
            best = _least_loaded(engine.pool.workers, credits)
            if best is None:  # (all busy with uncounted runs): the engine thread deals
                return engine._deal_here()
            with lock:  # _take_inbox
                if len(inbox) != 1 or inbox[0] is not inst or inst.state is not self.scheduled:
                    return False  # (canceled meanwhile, or another joined it: the turn's)
                inbox.popleft()
                h = engine.new_handle(inst)
                engine._active += 1
            requeue, failed, touched = deal_tasks(
                [best], [credits - len(best.inflight)], [inst], self.kind_ids,
                dispatcher._send, self.t_task)
            for w in touched:
                w.channel.tasks.publish()
            if requeue:  # (its ring was full): in the core, for the engine thread
                with lock:
                    core.add(h, 0, inst.priority)
            for u, e in failed:
                engine._fail_unit(u, e, "it could not be handed to a worker")
            return not (inbox or len(core) or engine._preload or engine._finished)
        except Exception:  # left for the engine thread, whose turn meets it again
            self.log.exception("jobengine: dealing a new instance from the admitting thread")
            return False
        finally:
            turn.release()


# --- the memory store's batch write ---------------------------------------------------

# history codes (state | attempt << 8 | run << 24) of a first run's first attempts, made
# once: a million instances' histories then share a few int objects instead of holding
# 28 bytes per record each
cdef list _state_codes = [None] * (128 * 4)


cdef extern from "Python.h":
    void PyObject_GC_UnTrack(void *op)

from cpython.long cimport PyLong_AsLongLongAndOverflow


# A queued instance's row, compact.  Most rows the store keeps at any moment belong to
# instances that are only waiting: their whole story is CREATED and SCHEDULED at the
# instant they were made.  Such a row is kept as a QueuedRow (48 bytes, its time
# unboxed, nothing for the collector to track) instead of the 16-item list (184 bytes)
# and the int of its time (40), and becomes the list, the same values, when it is
# written again or read (issue 14: memory per queued instance).  The two records it
# stands for (_V_CREATED, _V_SCHEDULED: see the state records above):
cdef object _CODE_CREATED = _V_CREATED | 1 << 24  # (state | attempt 0 << 8 | run 1 << 24)
cdef object _CODE_SCHEDULED = _V_SCHEDULED | 1 << 24


@cython.no_gc  # it holds a str and an int: never part of a reference cycle
@cython.final
@cython.auto_pickle(False)
cdef class QueuedRow:
    """A MemoryStore row (stores/memory.py) of an instance that is only queued: made
    by memory_write, read through memory_row_list.  Not a public type."""

    cdef readonly object kind, priority
    cdef readonly int64_t created_ns
    # How many of its two records (CREATED, then SCHEDULED) memory_write has yet to
    # see: it makes the row from the instance's snapshot, before the records that
    # come after it in the same call, and never returns with this above 0.
    cdef int pending

    def __repr__(self):
        return f"QueuedRow({self.kind!r}, {self.priority!r}, {self.created_ns})"


cdef list _unpack_fresh(QueuedRow fresh):
    # the list row a compact one stands for: its header, then its two records
    created = fresh.created_ns
    cdef list row = [fresh.kind, _V_SCHEDULED, fresh.priority, 0, created, created, None,
                     None, _CODE_CREATED, created, None, None, _CODE_SCHEDULED, created,
                     None, None]
    PyObject_GC_UnTrack(<void *>row)
    return row


cdef inline bint _int64_of(object v, int64_t *out):
    # v, an int that fits in int64, into *out; False for anything else
    if type(v) is not int:
        return False
    cdef int overflow = 0
    cdef long long n = PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow:
        return False
    out[0] = n
    return True


cdef inline QueuedRow _queued_row(kind, priority, long long created_ns, int pending):
    # a compact row; pending: of its two records, how many memory_write has yet to see
    cdef QueuedRow q = QueuedRow.__new__(QueuedRow)
    q.kind = kind
    q.priority = priority
    q.created_ns = created_ns
    q.pending = pending
    return q


cdef list _unpack_seen(QueuedRow fresh):
    # the list row of a compact one made from its snapshot in this call, with only the
    # records seen so far (memory_write: a record it did not expect, or the call's end)
    cdef list row = _unpack_fresh(fresh)
    del row[16 - 4 * fresh.pending:]
    fresh.pending = 0
    return row


# A finished instance's row, compact.  Of the rows a store keeps for long, most belong to
# instances that ran once and completed: CREATED and SCHEDULED at the instant they were
# made, PROCESSING and COMPLETED on one worker in attempt 1.  Such a row is kept as a
# DoneRow (72 bytes, its times unboxed, untracked) instead of the 24-item list (~250
# bytes and the ints of its times), and becomes that list when written again or read.
# Making one costs the engine thread one small object where the list cost an unpacked
# queued row, eight appends and a resize (bench/prof_memory_write.py).  Its four records
# (_V_PROCESSING, _V_COMPLETED: State.PROCESSING/COMPLETED's values, tested):
cdef int _V_PROCESSING = 4, _V_COMPLETED = 8
cdef object _CODE_PROCESSING = _V_PROCESSING | 1 << 8 | 1 << 24  # (attempt 1, run 1)
cdef object _CODE_COMPLETED = _V_COMPLETED | 1 << 8 | 1 << 24


@cython.no_gc  # it holds a str, an int and a worker id: never part of a reference cycle
@cython.final
@cython.auto_pickle(False)
cdef class DoneRow:
    """A MemoryStore row (stores/memory.py) of an instance that completed in its first
    attempt, with just the four records of that story: made by memory_write, read
    through memory_row_list.  Not a public type."""

    cdef readonly object kind, priority
    # the worker of its PROCESSING and COMPLETED records (None until memory_write
    # has seen the first of them)
    cdef readonly object worker
    cdef readonly int64_t created_ns, processed_ns, completed_ns
    # How many of its four records (CREATED, SCHEDULED, PROCESSING, COMPLETED) memory_write
    # has yet to see: as QueuedRow.pending
    cdef int pending

    def __repr__(self):
        return (f"DoneRow({self.kind!r}, {self.priority!r}, {self.created_ns}, "
                f"{self.processed_ns}, {self.completed_ns}, {self.worker!r})")


cdef list _unpack_done(DoneRow d):
    # the list row a compact finished one stands for, with only the records seen so
    # far (all of them once pending is 0); the row is complete from then on
    created, processed, completed, worker = d.created_ns, d.processed_ns, d.completed_ns, d.worker
    cdef list row = [d.kind, _V_COMPLETED, d.priority, 1, created, created, processed,
                     completed, _CODE_CREATED, created, None, None, _CODE_SCHEDULED, created,
                     None, None, _CODE_PROCESSING, processed, worker, None, _CODE_COMPLETED,
                     completed, worker, None]
    if d.pending:
        del row[24 - 4 * d.pending:]
        d.pending = 0
    PyObject_GC_UnTrack(<void *>row)
    return row


cdef inline object _done_row_of(tuple r, int64_t created_ns, int pending):
    # a snapshot (as _queued_row_of reads it) of an instance that completed in attempt
    # 1, due when made at created_ns: its compact row, waiting for `pending` of its
    # four records; else None
    cdef int64_t c = 0, p = 0, d = 0
    if not (r[2] == _V_COMPLETED and r[4] == 1 and _int64_of(r[5], &c) and c == created_ns
            and (r[6] is r[5] or (_int64_of(r[6], &p) and p == c))
            and _int64_of(r[7], &p) and _int64_of(r[8], &d)):
        return None
    cdef DoneRow row = DoneRow.__new__(DoneRow)
    row.kind = r[1]
    row.priority = r[3]
    row.created_ns, row.processed_ns, row.completed_ns = c, p, d
    row.pending = pending
    return row


cdef inline bint _same_worker(object a, object b):
    return a is b or (type(a) is int and type(b) is int and a == b)


cdef inline bint _seen_done_record(DoneRow d, long long s, long long a, long long run,
                                   object time, object worker, object cause) except -1:
    # whether this record is the next of the four the compact row stands for
    cdef int64_t t = 0
    cdef int step = 4 - d.pending
    if run != 1 or cause is not None or not _int64_of(time, &t):
        return False
    if step < 2:
        if not (a == 0 and worker is None and t == d.created_ns
                and s == (_V_CREATED if step == 0 else _V_SCHEDULED)):
            return False
    elif step == 2:
        if not (a == 1 and s == _V_PROCESSING and t == d.processed_ns):
            return False
        d.worker = worker
    elif not (a == 1 and s == _V_COMPLETED and t == d.completed_ns
              and _same_worker(worker, d.worker)):
        return False
    d.pending -= 1
    return True


cdef object _compact_done(list row):
    # the compact form of a row that holds exactly a first-attempt completion's story
    # (header: COMPLETED, attempt 1, due when made; records: CREATED and SCHEDULED at its
    # creation, PROCESSING and COMPLETED at its processed and completed times on one
    # worker, attempt 1, run 1, no cause; times that are int64s), else None
    cdef int64_t c = 0, p = 0, d = 0, t = 0
    if len(row) != 24:
        return None
    if not (row[1] == _V_COMPLETED and row[3] == 1 and _int64_of(row[4], &c)
            and _int64_of(row[5], &t) and t == c and _int64_of(row[6], &p)
            and _int64_of(row[7], &d)):
        return None
    if not (row[8] == _CODE_CREATED and _int64_of(row[9], &t) and t == c
            and row[10] is None and row[11] is None
            and row[12] == _CODE_SCHEDULED and _int64_of(row[13], &t) and t == c
            and row[14] is None and row[15] is None
            and row[16] == _CODE_PROCESSING and _int64_of(row[17], &t) and t == p
            and row[19] is None
            and row[20] == _CODE_COMPLETED and _int64_of(row[21], &t) and t == d
            and _same_worker(row[22], row[18]) and row[23] is None):
        return None
    cdef DoneRow done = DoneRow.__new__(DoneRow)
    done.kind = row[0]
    done.priority = row[2]
    done.worker = row[18]
    done.created_ns, done.processed_ns, done.completed_ns = c, p, d
    return done


cdef inline list _unpack_compact(object row):
    # a compact row's list (QueuedRow or DoneRow), with only the records seen so far
    if type(row) is QueuedRow:
        return _unpack_seen(<QueuedRow>row) if (<QueuedRow>row).pending else _unpack_fresh(
            <QueuedRow>row)
    return _unpack_done(<DoneRow?>row)


cdef inline object _queued_row_of(tuple r):
    # a new instance's snapshot (uuid, kind, state, priority, attempts, created,
    # scheduled, processed, completed, outcome) that is only queued: SCHEDULED as made,
    # never tried, due at its creation, a time that is an int64: its compact row,
    # waiting for its two records (the recorder writes them with the snapshot), else
    # None
    created = r[5]
    cdef int64_t ns = 0
    if not (r[2] == _V_SCHEDULED and r[4] == 0 and _int64_of(created, &ns)
            and (r[6] is created or r[6] == created) and r[7] is None and r[8] is None
            and r[9] is None):
        return None
    return _queued_row(r[1], r[3], ns, 2)


cdef inline bint _seen_record(QueuedRow q, long long s, long long a, long long run,
                              object time, object worker, object cause) except -1:
    # whether this record is the next of the two the compact row stands for
    if run != 1 or a != 0 or worker is not None or cause is not None or type(time) is not int:
        return False
    if s != (_V_CREATED if q.pending == 2 else _V_SCHEDULED):
        return False
    cdef int overflow = 0
    if PyLong_AsLongLongAndOverflow(time, &overflow) != q.created_ns or overflow:
        return False
    q.pending -= 1
    return True


def memory_row_list(object row):
    """A MemoryStore row as its list (stores/memory.py): a compact row (a QueuedRow or
    a DoneRow, see memory_write) unpacked into a new list, a list row itself."""
    return row if type(row) is list else _unpack_compact(row)


def memory_row_header(object row):
    """A MemoryStore row's first 8 items (kind, state, priority, attempts, created,
    scheduled, processed, completed) as a new list, whatever its shape: what a query
    reads, without unpacking a compact row's records."""
    if type(row) is list:
        return (<list>row)[:8]
    cdef int64_t c
    if type(row) is QueuedRow:
        c = (<QueuedRow>row).created_ns
        return [(<QueuedRow>row).kind, _V_SCHEDULED, (<QueuedRow>row).priority, 0, c, c,
                None, None]
    cdef DoneRow d = <DoneRow?>row
    c = d.created_ns
    return [d.kind, _V_COMPLETED, d.priority, 1, c, c, d.processed_ns, d.completed_ns]


cdef inline list _list_row(dict rows, object uuid, object kind, object row):
    # an instance's flat row (stores/memory.py: MemoryStore._row, the same shape),
    # given what rows holds for uuid (`row`, or None): made, or unpacked from its
    # compact form, and kept in rows in place of that.  A list row is not
    # tracked by the garbage collector: it holds only strings, numbers and None, so
    # it can never be part of a reference cycle, and the store keeps thousands of them
    # for a long time (each one tracked was one more object every full collection
    # walks, and one more survivor bringing the next young collection closer).
    if row is None:
        row = [kind, None, 0, 0, 0, None, None, None]
        PyObject_GC_UnTrack(<void *>row)
        rows[uuid] = row
    elif type(row) is not list:  # a compact row, written again (made in this call: with
        row = rows[uuid] = _unpack_compact(row)  # only the records seen yet)
    return row


cdef inline object _compact(list row):
    # the compact form of a row that holds exactly a queued instance's story (header:
    # SCHEDULED at its creation, never tried, no outcome; records: CREATED and
    # SCHEDULED at that instant, attempt 0, run 1, no worker, no cause; a time that is
    # an int64), else None
    if len(row) != 16:
        return None
    created = row[4]
    cdef int64_t ns = 0
    if not _int64_of(created, &ns):
        return None
    if (row[1] == _V_SCHEDULED and row[3] == 0 and row[5] == created and row[6] is None
            and row[7] is None and row[8] == _CODE_CREATED and row[9] == created
            and row[10] is None and row[11] is None and row[12] == _CODE_SCHEDULED
            and row[13] == created and row[14] is None and row[15] is None):
        return _queued_row(row[0], row[2], ns, 0)
    return None


cdef inline object _add_record(list row, long long s, long long a, long long run,
                               object time, object worker, object cause):
    # one state record onto its instance's row; the row's compact form if it now
    # tells exactly a queued instance's story or a first-attempt completion's, else
    # None
    if run == 1 and 0 <= s < 128 and 0 <= a < 4:  # the common codes: one object each
        code = _state_codes[s * 4 + a]
        if code is None:
            code = _state_codes[s * 4 + a] = s | a << 8 | 1 << 24
    else:
        code = s | a << 8 | run << 24
    row.append(code)  # (four appends: no tuple made for an extend)
    row.append(time)
    row.append(worker)
    row.append(cause)
    if s == _V_SCHEDULED and len(row) == 16:  # perhaps now a queued one's story
        return _compact(row)
    if s == _V_COMPLETED and len(row) == 24:  # or a finished one's (its records came in
        return _compact_done(row)  # batches of their own: a job longer than a turn)
    return None


cdef int _write_states(dict rows, object states) except -1:
    # memory_write's state records: each onto its instance's row (a compact row made
    # from a snapshot in this call takes its own records by counting them)
    cdef RecordBuffer buf
    cdef _StateRec *rec
    cdef PyObject *last = NULL  # the uuid of the record before, whose row is `row`
    cdef Py_ssize_t j
    cdef tuple r
    cdef object uuid, row = None, compact
    if type(states) is RecordBuffer:
        buf = <RecordBuffer>states
        for j in range(buf.n):
            rec = &buf.a[j]
            uuid = <object>rec.uuid
            if rec.uuid != last:  # (a new instance's two records share one uuid object)
                row = rows.get(uuid)
            if type(row) is QueuedRow and (<QueuedRow>row).pending and _seen_record(
                    <QueuedRow>row, rec.state, rec.attempt, rec.run, <object>rec.time,
                    <object>rec.worker, <object>rec.cause):
                last = rec.uuid
                continue
            if type(row) is DoneRow and (<DoneRow>row).pending and _seen_done_record(
                    <DoneRow>row, rec.state, rec.attempt, rec.run, <object>rec.time,
                    <object>rec.worker, <object>rec.cause):
                last = rec.uuid
                continue
            if type(row) is not list:
                row = _list_row(rows, uuid, <object>rec.kind, row)
            compact = _add_record(<list>row, rec.state, rec.attempt, rec.run,
                                  <object>rec.time, <object>rec.worker, <object>rec.cause)
            if compact is not None:
                rows[uuid] = compact
                last = NULL  # (`row` is no longer the one the store keeps)
            else:
                last = rec.uuid
    else:
        for r in states:
            uuid = r[0]
            row = rows.get(uuid)
            if type(row) is QueuedRow and (<QueuedRow>row).pending and _seen_record(
                    <QueuedRow>row, r[2], r[4], r[6], r[3], r[5], r[7]):
                continue
            if type(row) is DoneRow and (<DoneRow>row).pending and _seen_done_record(
                    <DoneRow>row, r[2], r[4], r[6], r[3], r[5], r[7]):
                continue
            if type(row) is not list:
                row = _list_row(rows, uuid, r[1], row)
            compact = _add_record(<list>row, r[2], r[4], r[6], r[3], r[5], r[7])
            if compact is not None:
                rows[uuid] = compact
    return 0


def memory_write(dict rows, dict finished, dict outcomes, list instances, object states,
                 list logs, dict all_logs, frozenset final_states, object big_outcome,
                 Py_ssize_t max_raw, bint want_finished, Py_ssize_t keep):
    """MemoryStore.write_batch's loops, compiled (the engine thread runs them for every
    record of every instance on the default store).  Layout as in stores/memory.py:
    rows[uuid] = [kind, state, priority, attempts, created, scheduled, processed,
    completed, then 4 items per state record], or a compact row that memory_row_list
    unpacks: a QueuedRow for an instance that is only queued (SCHEDULED when made, with
    just its CREATED and SCHEDULED records at that instant), a DoneRow for one that
    completed in its first attempt (those two, then PROCESSING and COMPLETED on one
    worker).  Each is made from the snapshot of a new instance (or, a DoneRow, of a
    queued one) whose records are then counted in after it, or from the list when its
    records complete the pattern otherwise; finished: uuid -> completed_ns,
    oldest first; outcomes[uuid] = the outcome tuple as recorded ("r", raw) / ("e",
    ...), kept raw and turned into store columns when read, except a result over
    max_raw bytes, which big_outcome(outcome) turns into its columns now (it is not
    kept).  `states`: a RecordBuffer, read in place, or a list of STATE_ROW tuples.
    Returns the uuids that reached a final state when want_finished, else None.
    Retention: with keep >= 0, the oldest finished instances beyond `keep` are
    forgotten, each with its row, logs and outcome (MemoryStore._drop, per job once the
    store is full).  The uuids returned may include some of those."""
    cdef tuple r
    cdef object uuid, row, o
    cdef list done = [] if want_finished else None
    cdef Py_ssize_t j
    cdef bint was_final
    # A new instance that is only queued gets its compact row from its snapshot at
    # once, not a list that its two records then turn into one (the common case: an
    # instance made and queued); `fresh` keeps those rows and their uuids until the
    # records have been seen (see _seen_record; _unpack_seen if they are not).
    cdef list fresh = []
    cdef object compact
    cdef int64_t made
    try:
        for r in instances:
            uuid = r[0]
            row = rows.get(uuid)
            # A new instance that is only queued, or one that completed in its first
            # attempt (new, or queued till now), gets its compact row from its snapshot
            # at once, counting its records in as they come below (the common case on
            # the engine thread: a job queued in one batch, finished in a later one).
            if row is None:
                compact = _queued_row_of(r)
                if compact is None and r[2] == _V_COMPLETED and _int64_of(r[5], &made):
                    compact = _done_row_of(r, made, 4)
            elif type(row) is QueuedRow:
                compact = _done_row_of(r, (<QueuedRow>row).created_ns,
                                       (<QueuedRow>row).pending + 2)
            else:
                compact = None
            if compact is not None:
                rows[uuid] = compact
                fresh.append(compact)
                fresh.append(uuid)
                if type(compact) is QueuedRow:
                    continue
                was_final = False  # (new, or queued)
            else:
                row = _list_row(rows, uuid, r[1], row)
                # The store keeps uuid in `finished` exactly while its row's state is
                # final (MemoryStore.put_instances and _drop keep it so too): the row,
                # looked up anyway, says whether `finished` holds it, without two
                # lookups a job there.
                was_final = (<list>row)[1] in final_states
                for j in range(8):  # row[0:8] = r[1:9], without the slice's tuple
                    (<list>row)[j] = r[j + 1]
            if r[2] in final_states:
                if want_finished:
                    done.append(uuid)
                if was_final:  # a recurrence ending again: now the newest
                    finished.pop(uuid, None)
                finished[uuid] = r[8] or 0
                o = r[9]
                if o is not None:
                    if o[0] == "r" and len(o[1]) > max_raw:
                        o = big_outcome(o)
                    outcomes[uuid] = o
            elif was_final:  # a recurrence running again
                finished.pop(uuid, None)
        _write_states(rows, states)
    finally:  # a compact row still waiting for records becomes the list of those seen
        for j in range(0, len(fresh), 2):
            compact = fresh[j]
            if ((<QueuedRow>compact).pending if type(compact) is QueuedRow
                    else (<DoneRow>compact).pending) and rows.get(fresh[j + 1]) is compact:
                rows[fresh[j + 1]] = _unpack_compact(compact)
    for r in logs:
        uuid = r[0]
        row = all_logs.get(uuid)
        if row is None:
            all_logs[uuid] = [r[1:]]
        else:
            (<list>row).append(r[1:])
    cdef Py_ssize_t extra = len(finished) - keep if keep >= 0 else 0
    cdef Py_ssize_t pos = 0
    cdef PyObject *k
    cdef PyObject *v
    cdef list oldest
    if extra > 0:
        # the oldest few only, found first and dropped after: the walk must not see
        # the dict change under it.  Each goes as MemoryStore._drop forgets one.
        oldest = []
        while extra > 0 and PyDict_Next(finished, &pos, &k, &v):
            oldest.append(<object>k)
            extra -= 1
        for uuid in oldest:
            del finished[uuid]
            rows.pop(uuid, None)
            all_logs.pop(uuid, None)
            outcomes.pop(uuid, None)
    return done


# --- the recorder's batches -----------------------------------------------------------

def take_all(q):
    """What the deque `q` holds now, oldest first, popped one by one (as many as it
    held when called): an append from another thread meanwhile, even one let in by a
    finalizer the collector runs mid-way, stays in q for the next call, never lost."""
    cdef Py_ssize_t i, n = len(q)
    cdef list out = []
    pop = q.popleft
    for i in range(n):
        out.append(pop())
    return out


def snapshots(list touched, dict outcomes):
    """Recorder.flush's instance rows: for each Instance in `touched` (a Run's records
    touch its parent), its latest state, once, ordered by its last touch: (uuid, kind,
    state value, priority, attempts, created_ns, scheduled_ns, processed_ns,
    completed_ns, outcome), the outcome popped from `outcomes` (uuid -> outcome)."""
    cdef set seen = set()
    cdef list out = []
    cdef Py_ssize_t i
    cdef object uuid, created
    cdef tuple row
    cdef long long state
    cdef InstanceFields f
    for i in range(len(touched) - 1, -1, -1):
        f = <InstanceFields?>touched[i]  # (only Instances: a Run's records touch its parent)
        uuid = f._uuid_str
        if uuid in seen:
            continue
        seen.add(uuid)
        # (the times are kept unboxed: one int for both when due as made, the common
        # case; the state's value read as the int a State is, no attribute lookup)
        created = _ns(f._created_ns)
        state = f.state
        row = (uuid, f.job.kind, state, f.priority, f.attempts, created,
               created if f._scheduled_ns == f._created_ns else _ns(f._scheduled_ns),
               f.processed_ns, f.completed_ns, outcomes.pop(uuid, None))
        # Not tracked by the collector: it holds strings, ints, None and an outcome
        # tuple of strings and bytes, so it is never part of a cycle, and a batch of
        # them alive while the store writes was most of what each young collection
        # walked (two a job, against one Instance a job)
        PyObject_GC_UnTrack(<void *>row)
        out.append(row)
    out.reverse()
    return out


# --- the SQL stores' history rows ------------------------------------------------------

from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdio cimport snprintf

cdef struct _Text:
    char *p
    Py_ssize_t n, cap

cdef int _put(_Text *t, const char *s, Py_ssize_t n) except -1:
    cdef Py_ssize_t cap
    cdef char *grown
    if t.n + n > t.cap:
        cap = max(t.cap * 2, t.n + n + 256)
        grown = <char *>realloc(t.p, cap)
        if grown == NULL:
            raise MemoryError()
        t.p, t.cap = grown, cap
    memcpy(t.p + t.n, s, n)
    t.n += n
    return 0

cdef int _put_field(_Text *t, object v, object dumps) except -1:
    # exactly what orjson writes for an int (64-bit), None or a str
    cdef char num[24]
    cdef int k
    cdef bytes b
    if v is None:
        return _put(t, "null", 4)
    cdef int overflow = 0
    cdef long long x
    if type(v) is int:
        x = PyLong_AsLongLongAndOverflow(v, &overflow)
        if not overflow:
            k = snprintf(num, 24, "%lld", x)
            return _put(t, num, k)
    b = dumps(v)  # a str (escaped as orjson does), an int past 63 bits, anything else
    return _put(t, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))


def group_history(list states, object dumps):
    """sql.group_history compiled: STATE_ROWs (uuid, kind, state, time_ns, attempt,
    worker, run, cause) -> one history row per uuid, in first-seen order: (uuid, kind,
    the JSON text orjson gives for [[state, time_ns, attempt, worker, run, cause],
    ...], the first record's time_ns, the last one's).  `dumps` is orjson.dumps: a
    field that is not an int or None goes through it."""
    cdef dict groups = {}
    cdef list out = [], rows
    cdef object r, g, u
    cdef tuple row
    cdef Py_ssize_t i, j, n
    cdef _Text t
    for r in states:
        u = (<tuple?>r)[0]
        g = groups.get(u)
        if g is None:
            groups[u] = [r]
        else:
            (<list>g).append(r)
    t.p, t.n, t.cap = NULL, 0, 0
    try:
        for u, g in groups.items():
            rows = <list>g
            t.n = 0
            _put(&t, "[", 1)
            for i in range(len(rows)):
                row = <tuple>rows[i]
                n = len(row)
                if n < 4:
                    raise IndexError(f"a state row has {n} fields, not 8: {row!r}")
                _put(&t, "[" if i == 0 else ",[", 1 if i == 0 else 2)
                for j in range(2, n):
                    if j > 2:
                        _put(&t, ",", 1)
                    _put_field(&t, row[j], dumps)
                _put(&t, "]", 1)
            _put(&t, "]", 1)
            row = <tuple>rows[0]
            out.append((u, row[1], PyUnicode_DecodeUTF8(t.p, t.n, NULL), row[3],
                        (<tuple>rows[len(rows) - 1])[3]))
    finally:
        free(t.p)
    return out


# --- dispatch: ready instances into the workers' task rings ----------------------------

cdef int _write_task(object w, object inst, dict kind_ids, uint32_t t_task) except -2:
    # Dispatcher._send for the common task, compiled: 1 written, 0 the ring is full,
    # -1 not the common case (the caller sends it the Python way).
    cdef object kind_id = kind_ids.get(inst.job)
    cdef object payload
    cdef unsigned long long attempt, handle
    cdef InstanceFields f = None
    cdef int written
    if kind_id is None or kind_id not in w.kinds:
        return -1  # its executor goes first (T_DEFINE)
    if isinstance(inst, InstanceFields):  # (its fields as C members)
        f = <InstanceFields>inst
        payload, handle, attempt = f.payload, f.handle, f.attempts + 1
    else:  # a Run of a recurrence
        payload, handle, attempt = inst.payload, inst.handle, inst.attempts + 1
    written = _ring_task(w.channel.tasks, t_task, handle | attempt << 32, kind_id, payload)
    if written != 1:
        return written
    if f is not None:
        f.attempts = attempt
        f.worker = w.index
    else:
        inst.attempts = attempt
        inst.worker = w.index
    w.inflight[handle] = inst
    w.dispatched += 1
    return 1


cdef int _ring_task(Ring ring, uint32_t t_task, unsigned long long a, object kind_id,
                    object payload) except -2:
    # A task record into a worker's ring: 1 written, 0 the ring is full, -1 a payload
    # it cannot take inline (not bytes, or spilled to a file: the Python way sends it)
    cdef Py_ssize_t n
    cdef const char *p = NULL
    if type(payload) is not bytes:
        return -1
    n = PyBytes_GET_SIZE(payload)
    if <uint64_t>n > je_ring_max_payload(&ring.r):
        return -1
    if n:
        p = PyBytes_AS_STRING(payload)
    return 1 if je_ring_write(&ring.r, t_task, a, kind_id, p, <uint32_t>n) == 0 else 0


def deal_tasks(list slots, list free, list instances, dict kind_ids, send, uint32_t t_task):
    """Dispatcher.deal's loop: `instances` (best first) go to `slots` (workers with a
    free credit, least loaded first; free[k] is slot k's), round-robin.  The common task
    (its executor already sent to that worker, a payload the ring takes) is written
    here; any other, and every one when kind_ids is empty (recycled workers: _send
    counts them), goes through send(w, inst) (Dispatcher._send).  Returns (requeue,
    failed, touched): those that found no room, [(instance, exception)] for those whose
    send raised, and the workers written to (to publish).  tests/test_dispatcher.py
    holds it to the Python loop it replaced."""
    cdef Py_ssize_t n = len(slots), k = 0, j
    cdef list requeue = [], failed = []
    cdef set touched = set()
    cdef object w, inst, left
    cdef int sent
    if len(free) != n:
        raise ValueError("deal_tasks: one free-credit count per slot")
    if n == 0:
        return list(instances), failed, touched
    for inst in instances:
        for j in range(n):
            if free[k]:
                break
            k = (k + 1) % n
        w = slots[k]
        left = free[k]
        if not left:
            requeue.append(inst)
            continue
        try:
            sent = _write_task(w, inst, kind_ids, t_task)
            if sent < 0:
                sent = 1 if send(w, inst) else 0
        except Exception as e:  # only this instance fails, never the dispatch
            failed.append((inst, e))
            continue
        if not sent:
            requeue.append(inst)
            continue
        free[k] = 0 if w.retiring else left - 1
        touched.add(w)
        k = (k + 1) % n
    return requeue, failed, touched


# --- the engine's common worker events -----------------------------------------------

# Event tags (pool/channel.py); FLAG_LARGE marks a payload spilled to a file.
cdef enum:
    _E_STARTED = 16
    _E_OK = 17
    _TAG_MASK = 0xFF
    _FLAG_LARGE = 0x100


def release_units(list units, list by_handle, list free):
    """Engine._release for each unit, compiled (the engine thread runs it for every
    finished job): free its handle (by_handle[h] = None, h onto `free`) if it still
    holds one, and set unit.handle = -1.  Returns (how many of the freed units counted
    toward wait(), the jobs of freed units whose job is transient, one per unit).  The
    lock is the caller's.  (The lookup table is not touched: its entry never kept the
    unit alive; see Engine._known.)"""
    cdef Py_ssize_t h, n = len(by_handle)
    cdef long long counted = 0
    cdef list transient = []
    cdef InstanceFields f
    for unit in units:
        f = <InstanceFields>unit if isinstance(unit, InstanceFields) else None
        h = f.handle if f is not None else unit.handle  # (None: a Run of a recurrence)
        if 0 <= h < n and by_handle[h] is unit:
            by_handle[h] = None
            free.append(h)
            if unit.counted:
                counted += 1
            job = f.job if f is not None else unit.job
            if job.transient:
                transient.append(job)
        if f is None:
            unit.handle = -1
        else:
            f.handle = -1
    return counted, transient


def prune_known(dict known):
    """Engine._prune_known's walk, compiled (it walks every uuid the engine knows each
    time the table doubles: ~0.3 us an entry in Python, a few percent of a submit
    loop that holds its Futures): drops the weak references that died (a Borrowed
    entry leaves the table with its Instance: see Borrowed).  The walk runs no Python
    code and makes no object the collector counts, so no other thread can change
    `known` under it; the changes are made after it, each only if the entry is still
    the one seen."""
    cdef Py_ssize_t pos = 0
    cdef PyObject *k
    cdef PyObject *v
    cdef list dead_keys = [], dead_refs = []
    cdef Py_ssize_t i
    while PyDict_Next(known, &pos, &k, &v):
        if PyWeakref_CheckRef(<object>v) and PyWeakref_GET_OBJECT(<object>v) == <PyObject *>None:
            dead_keys.append(<object>k)
            dead_refs.append(<object>v)
    for i in range(len(dead_keys)):
        if known.get(dead_keys[i]) is dead_refs[i]:
            del known[dead_keys[i]]


def settle_results(pending, finished, log, list units, list results):
    """Instance.set_result(result) for each unit, in order: what the engine defers for
    a run of completed jobs (EventDrain).  The common case is instance.py's
    Instance._settle without a waiter (no Condition made yet: nobody waits, no
    callback, no cancel) done here; any other goes through the unit's set_result.  One
    that raises is logged as the engine's deferred calls are, the others still settle."""
    cdef Py_ssize_t i
    cdef InstanceFields f
    for i in range(len(units)):
        unit = units[i]
        try:
            f = <InstanceFields?>unit  # (the drain's units: Instances, never a Run)
            if unit._cond is None and f._state == pending:
                f._result = results[i]
                f._exception = None
                f._state = finished
                if unit._cond is not None:  # made meanwhile: its waiter needs the news
                    unit._notify_settled()
            else:
                unit.set_result(results[i])
        except Exception:
            log.exception("jobengine: settling an instance failed; the engine goes on")


@cython.final
cdef class EventDrain:
    """Engine._drain_worker's loop, compiled, for the two events every job sends: a
    worker started an attempt (E_STARTED) and it returned a value (E_OK), for one-off
    instances without handlers, without a cancel pending, on the system clock.  That
    is what a job costs on the engine thread; every other record (errors, logs, runs
    of recurrences, handlers, a cancel, a stale or unknown event) goes, in its turn, to
    the Python handler given to drain(), which stays the reference for all of them.

    What it does per event is Engine._handle_event / _succeeded / Recorder.transition
    for those cases, step for step: the same attributes set, the same STATE_ROW tuples
    and touched instances recorded, the same metrics counted, the result unpickled and
    its Future settled (deferred) once its batch is written."""

    cdef RecordBuffer records
    cdef object touched, outcomes, deferred, finished, stats, dispatcher
    cdef object monotonic_ns, loads, processing, completed, scheduled
    cdef long long processing_v, completed_v
    # metrics.EngineStats counted here, not called (4 Python calls a job): its dicts,
    # and its histograms' bucket bounds; any other stats object (a subclass) is called
    cdef bint count_here
    cdef object executed, finals  # defaultdicts: dict's C calls apply (<dict> below)
    cdef object run_hists, wait_hists, completed_name
    cdef long long bounds[32]
    cdef Py_ssize_t nbounds
    # Metrics and the dispatcher's moving average, kept in C within one drain call
    # (per job they were ~15 attribute and dict operations and ~6 int and float
    # objects, ~9% of the engine thread): counts for one kind at a time (a turn's
    # events are mostly of one kind), added to EngineStats when the kind changes and
    # whenever Python code may look (_flush_stats: before an event is handed over or
    # a unit fails, and at the end of the call).
    cdef object acc_kind
    cdef long long acc_started, acc_completed, acc_wait_total, acc_run_total
    cdef long long acc_wait[33]
    cdef long long acc_run[33]
    cdef bint acc_waits, acc_runs
    cdef bint d_loaded
    cdef double d_avg
    cdef long long d_seen, d_credits
    # completed units and their results not yet handed to the deferred queue
    cdef object settle
    cdef list units, results
    # the recorder's deques' append, bound once (a method call by name costs more)
    cdef object touched_append, finished_append

    def __init__(self, recorder, dispatcher, finished, monotonic_ns, loads, processing,
                 completed, scheduled, settle, stock_stats=None, tuple bounds_ns=(),
                 completed_name="completed"):
        cdef Py_ssize_t i
        self.records = recorder._records
        self.touched = recorder._touched
        self.outcomes = recorder._outcomes
        self.deferred = recorder._deferred
        self.stats = recorder.stats
        self.dispatcher = dispatcher
        self.finished = finished
        self.monotonic_ns = monotonic_ns
        self.loads = loads
        self.processing = processing
        self.completed = completed
        self.scheduled = scheduled
        self.processing_v = processing._value_
        self.completed_v = completed._value_
        self.settle = settle
        self.units = self.results = None
        self.touched_append = self.touched.append
        self.finished_append = finished.append
        self.count_here = stock_stats is not None and type(self.stats) is stock_stats
        if len(bounds_ns) > 32:
            raise ValueError("at most 32 histogram bounds")
        self.nbounds = len(bounds_ns)
        for i in range(self.nbounds):
            self.bounds[i] = bounds_ns[i]
        if self.count_here:
            self.executed = self.stats.executed
            self.finals = self.stats.finals
            self.run_hists = self.stats.run
            self.wait_hists = self.stats.wait
            self.completed_name = completed_name

    cdef inline Py_ssize_t _bucket(self, long long ns) noexcept:
        # metrics._Histogram.observe_ns: the first bound >= ns (bisect_left), or +Inf
        cdef Py_ssize_t i = 0
        while i < self.nbounds and self.bounds[i] < ns:
            i += 1
        return i

    cdef inline void _counting(self, object kind) except *:
        if kind is not self.acc_kind:
            self._flush_stats()
            self.acc_kind = kind

    cdef inline void _started(self, object kind, object wait_ns) except *:
        # EngineStats.started
        cdef long long ns
        if not self.count_here:
            self.stats.started(kind, wait_ns)
            return
        self._counting(kind)
        self.acc_started += 1
        if wait_ns is not None:
            ns = wait_ns
            if ns < 0:  # (wall clocks: a due time set in the future by another node)
                ns = 0
            self.acc_wait[self._bucket(ns)] += 1
            self.acc_wait_total += ns
            self.acc_waits = True

    cdef inline void _completed(self, object kind, long long run_ns) except *:
        # EngineStats.ended(kind, COMPLETED, run_ns)
        if not self.count_here:
            self.stats.ended(kind, self.completed, run_ns)
            return
        self._counting(kind)
        if run_ns < 0:
            run_ns = 0
        self.acc_completed += 1
        self.acc_run[self._bucket(run_ns)] += 1
        self.acc_run_total += run_ns
        self.acc_runs = True

    cdef void _add_histogram(self, object hists, long long *counts, long long total) except *:
        hist = hists[self.acc_kind]  # (a defaultdict: made on first use, as observe_ns)
        cdef list into = hist.counts
        cdef Py_ssize_t i
        for i in range(self.nbounds + 1):
            if counts[i]:
                into[i] = into[i] + counts[i]
                counts[i] = 0
        hist.total_ns = hist.total_ns + total

    cdef void _flush_stats(self) except *:
        # what was counted in C into EngineStats and the dispatcher, where Python reads
        cdef dict executed, finals
        if self.d_loaded:
            self.d_loaded = False
            d = self.dispatcher
            d.avg_ns = self.d_avg
            d.seen = self.d_seen
        if self.acc_kind is None:
            return
        kind = self.acc_kind
        if self.acc_started:
            executed = <dict>self.executed
            executed[kind] = executed.get(kind, 0) + self.acc_started
            self.acc_started = 0
        if self.acc_completed:
            finals = <dict>self.finals
            key = (kind, self.completed_name)
            finals[key] = finals.get(key, 0) + self.acc_completed
            self.acc_completed = 0
        if self.acc_waits:
            self._add_histogram(self.wait_hists, self.acc_wait, self.acc_wait_total)
            self.acc_waits, self.acc_wait_total = False, 0
        if self.acc_runs:
            self._add_histogram(self.run_hists, self.acc_run, self.acc_run_total)
            self.acc_runs, self.acc_run_total = False, 0
        self.acc_kind = None

    cdef inline void _observe_run(self, long long run_ns) except *:
        # Dispatcher.observe(run_ns), step for step (its moving average in doubles, as
        # Python computes it), calling only its recompute() when that is due
        d = self.dispatcher
        if not self.d_loaded:
            self.d_avg, self.d_seen, self.d_credits = d.avg_ns, d.seen, d.credits
            self.d_loaded = True
        self.d_avg = self.d_avg * 0.9 + <double>run_ns * 0.1
        self.d_seen += 1
        if self.d_seen & 15 == 0 or self.d_credits == 1:
            d.avg_ns = self.d_avg
            d.seen = self.d_seen
            d.recompute()
            self.d_credits = d.credits

    cdef inline void _settle_batch(self) except *:
        # the completed units so far: one deferred settle call, in their place
        if self.units is not None:
            self.deferred.append((self.settle, (self.units, self.results)))
            self.units = self.results = None

    cdef inline void _hand_over(self, slow, w, tuple rec) except *:
        self._settle_batch()
        self._flush_stats()
        slow(w, rec)

    def drain(self, w, list records, slow, failed):
        """Handle `records` (a worker's, in order); slow(w, record) handles the rest.
        Should handling one raise, failed(w, unit, exception) fails that unit only, as
        the reference path does, and the drain goes on.  The Futures of the jobs it
        completes are settled in one deferred call per run of them (settle), not one
        each: what is handed over in between keeps its place in the order."""
        try:
            self._drain(w, records, slow, failed)
        finally:
            self._settle_batch()
            self._flush_stats()

    cdef _drain(self, w, list records, slow, failed):
        cdef dict inflight = w.inflight
        cdef tuple rec
        cdef long long tag, t
        cdef object b, unit, job, result, uuid, kind, attempts
        cdef long long run_ns
        cdef unsigned long long handle, ab
        cdef InstanceFields f
        for rec in records:
            tag = rec[0]
            t = tag & _TAG_MASK
            if (t != _E_STARTED and t != _E_OK) or tag & _FLAG_LARGE:
                self._hand_over(slow, w, rec)
                continue
            ab = rec[1]  # handle | attempt << 32 (the literals unsigned: C arithmetic)
            handle = ab & 0xFFFFFFFFULL
            unit = inflight.get(handle)
            # (a Run of a recurrence has no C fields: the reference path takes it)
            if unit is None or not isinstance(unit, InstanceFields):
                self._hand_over(slow, w, rec)
                continue
            f = <InstanceFields>unit
            if f.attempts != <long long>(ab >> 32) or unit.cancel_requested:
                self._hand_over(slow, w, rec)
                continue
            job = f.job
            if job.state_change_handler is not None:
                self._hand_over(slow, w, rec)
                continue
            b = rec[2]
            if t == _E_STARTED:
                if f.state is not self.scheduled:
                    self._hand_over(slow, w, rec)  # (an illegal move: the reference path raises it)
                    continue
            else:
                if job.response_handler is not None or f.state is not self.processing:
                    self._hand_over(slow, w, rec)
                    continue
                try:
                    result = self.loads(rec[3])
                except BaseException:
                    self._hand_over(slow, w, rec)  # the reference path reports it (ResultDecodeError)
                    continue
            try:
                kind = job.kind
                attempts = f.attempts
                uuid = f._uuid_str  # (what the uuid_str property returns)
                if t == _E_STARTED:
                    f.processed_ns = b
                    f.started_mono = self.monotonic_ns()
                    w.running = unit
                    f.state = self.processing
                    if attempts <= 1:  # queue wait: from its due time to its start
                        self._started(kind, None if f._scheduled_ns == _NO_NS
                                      else b - f._scheduled_ns)
                    else:
                        self._started(kind, None)
                    self.records.push(uuid, kind, self.processing_v, b, attempts, f.worker,
                                      unit.run, None)
                    self.touched_append(unit)
                else:
                    del inflight[handle]
                    w.running = None
                    w.jobs += 1
                    run_ns = b - f.processed_ns
                    self._observe_run(run_ns)
                    f.completed_ns = b
                    outcome = ("r", rec[3])
                    # (a str and bytes: never in a cycle.  The store keeps it until the
                    # instance is forgotten: tracked, it was a second survivor a job
                    # besides the caller's Future, twice the young collections)
                    PyObject_GC_UnTrack(<void *>outcome)
                    self.outcomes[uuid] = outcome
                    f.state = self.completed
                    self._completed(kind, run_ns)
                    self.records.push(uuid, kind, self.completed_v, b, attempts, f.worker,
                                      unit.run, None)
                    self.touched_append(unit)
                    self.finished_append(unit)
                    if self.units is None:
                        self.units, self.results = [], []
                    self.units.append(unit)
                    self.results.append(result)
            except Exception as e:  # never the engine: only this unit fails
                self._settle_batch()
                self._flush_stats()
                failed(w, unit, e)


# --- UUIDv7 ------------------------------------------------------------------------------

cdef extern from "<time.h>" nogil:
    ctypedef long je_time_t "time_t"
    cdef struct je_timespec "timespec":
        je_time_t tv_sec
        long tv_nsec
    int je_clock_gettime "clock_gettime"(int, je_timespec *)
    int JE_CLOCK_REALTIME "CLOCK_REALTIME"

cdef extern from "<sys/random.h>" nogil:
    ssize_t je_getrandom "getrandom"(void *buf, size_t buflen, unsigned int flags)

cdef extern from "Python.h":
    object _PyLong_FromByteArray(const unsigned char *bytes, size_t n, int little_endian,
                                 int is_signed)

cdef uint64_t _u7_ms = 0  # the last millisecond handed out
cdef uint64_t _u7_seq = 0  # the counter within it
cdef uint64_t _u7_rng = 0  # splitmix64 state
cdef bint _u7_seeded = False


def uuid7_reseed():
    """New random state from the kernel (a forked child must not repeat its parent's
    random bits; ids.py registers this to run after fork)."""
    global _u7_rng, _u7_seeded
    cdef uint64_t seed = 0
    if je_getrandom(&seed, sizeof(seed), 0) != sizeof(seed):
        raise OSError("getrandom() failed")
    _u7_rng = seed
    _u7_seeded = True


cdef inline uint64_t _rand64() noexcept:
    # splitmix64: random bits for ids (unguessability is not asked of them; uniqueness
    # comes from the time and the counter, the random bits separate processes)
    global _u7_rng
    _u7_rng += 0x9E3779B97F4A7C15ULL
    cdef uint64_t z = _u7_rng
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef void _uuid7_words(uint64_t *hi_out, uint64_t *lo_out) noexcept:
    global _u7_ms, _u7_seq
    cdef je_timespec ts
    je_clock_gettime(JE_CLOCK_REALTIME, &ts)
    cdef uint64_t ms = <uint64_t>ts.tv_sec * 1000 + <uint64_t>ts.tv_nsec // 1000000
    if ms <= _u7_ms:
        ms = _u7_ms
        _u7_seq += 1
        if _u7_seq > 0xFFF:  # the counter ran out within one millisecond
            ms += 1
            _u7_seq = _rand64() & 0xFF
    else:
        _u7_seq = _rand64() & 0xFF
    _u7_ms = ms
    # (unsuffixed, Cython takes a literal past 32 bits for a Python int, and the whole
    # expression with it: six int objects a call, ~60% of the id's cost)
    hi_out[0] = (ms & 0xFFFFFFFFFFFFULL) << 16 | (<uint64_t>0x7) << 12 | _u7_seq
    lo_out[0] = (<uint64_t>0b10) << 62 | (_rand64() & 0x3FFFFFFFFFFFFFFFULL)


def uuid7():
    """A new UUIDv7 (RFC 9562) as an int: 48-bit Unix milliseconds, version 7, a 12-bit
    counter that makes ids from one process increase within a millisecond (method 1 of
    §6.2; it starts at a random value below 256 each millisecond and borrows the next
    millisecond when it runs out), variant 10, 62 random bits.  Later calls in one
    process give larger values.  Not thread-safe on its own: the GIL serializes it."""
    if not _u7_seeded:
        uuid7_reseed()
    cdef uint64_t hi, lo
    _uuid7_words(&hi, &lo)
    cdef unsigned char buf[16]
    cdef int i
    for i in range(8):
        buf[i] = (hi >> (56 - 8 * i)) & 0xFF
        buf[8 + i] = (lo >> (56 - 8 * i)) & 0xFF
    return _PyLong_FromByteArray(buf, 16, 0, 0)


def uuid7_text():
    """uuid_text(uuid7()) without the int between: the text of a new UUIDv7, what
    every new instance keeps (~0.15 us less a call than the two)."""
    if not _u7_seeded:
        uuid7_reseed()
    cdef uint64_t hi, lo
    _uuid7_words(&hi, &lo)
    return _uuid_chars(hi, lo)


# --- the worker's attempt ------------------------------------------------------------------


cdef inline int64_t _wall_ns() noexcept:
    cdef je_timespec ts
    je_clock_gettime(JE_CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


def worker_attempt(worker, Ring events, uint64_t packed, fn, inject, kind, payload):
    """Worker._attempt (pool/worker.py) compiled for the common case: the worker's cost
    a job (issue 14).  It publishes STARTED, unpickles (args, kwargs), calls the
    executor with worker.current set (its interrupt handler reads it), pickles the
    result and writes OK unpublished (Worker.run publishes it), step for step as
    _attempt does.  Every other case goes back to the Worker's methods, which stay the
    reference: a record that does not fit the ring now (Worker.emit waits or spills),
    arguments that do not unpickle (_arguments_failed), an Instance to hand over or
    anything but a tuple and a dict (_call), a failed call (_failed), a result plain
    pickle cannot carry (_send_result, which tries cloudpickle)."""
    cdef int64_t stamp = _wall_ns()
    if je_ring_write(&events.r, _E_STARTED, packed, <uint64_t>stamp, NULL, 0) == 0:
        je_ring_publish(&events.r)
    else:
        worker.emit(_E_STARTED, packed, stamp)
    try:
        decoded = _pickle_loads(payload)
    except BaseException as exc:
        worker._arguments_failed(packed, kind, exc)
        return
    if (type(decoded) is not tuple or len(<tuple>decoded) != 2
            or type((<tuple>decoded)[0]) is not tuple or type((<tuple>decoded)[1]) is not dict):
        box = [decoded]
        decoded = None  # (only the box holds the arguments: _call takes them out)
        worker._call(packed, fn, inject, kind, box)
        return
    args = (<tuple>decoded)[0]
    kwargs = (<tuple>decoded)[1]
    decoded = None
    worker.current = packed
    try:
        if kwargs:
            result = fn(*args, **kwargs)
        else:
            result = fn(*args)
    except BaseException as exc:
        worker.current = 0
        args = kwargs = None
        worker._failed(packed, exc)
        return
    worker.current = 0
    args = kwargs = None  # the job's arguments are not kept past the job
    try:
        out = _pickle_dumps(result, 5)
    except BaseException:
        worker._send_result(packed, kind, result)  # it reports what it cannot carry
        return
    result = None
    stamp = _wall_ns()
    cdef Py_ssize_t n = PyBytes_GET_SIZE(out)
    if (<uint64_t>n > je_ring_max_payload(&events.r)
            or je_ring_write(&events.r, _E_OK, packed, <uint64_t>stamp, PyBytes_AS_STRING(out),
                             <uint32_t>n) != 0):
        worker.emit(_E_OK, packed, stamp, out, False)  # it spills a large one to a file
