"""Instance states (go-job's), their groups, and the legal transitions.

Owns: State and the transition table.  Never does: change an instance (the recorder
does, through check_transition)."""

from __future__ import annotations

import enum

from .errors import IllegalTransitionError


class State(enum.IntFlag):
    """The life of an instance: CREATED -> SCHEDULED -> PROCESSING -> a final state.

    Groups, as go-job defines them: ACTIVE (SCHEDULED or PROCESSING: waiting or
    running), FINAL (finished), ERROR (TERMINATED, TIMED_OUT or CANCELED: finished
    without a result), SUCCESS (COMPLETED).  A failed
    attempt with retries left and a recurring instance go from their final state back
    to SCHEDULED; every other move outside TRANSITIONS raises IllegalTransitionError."""

    CREATED = 1
    SCHEDULED = 2
    PROCESSING = 4
    COMPLETED = 8
    TERMINATED = 16
    CANCELED = 32
    TIMED_OUT = 64

    ACTIVE = SCHEDULED | PROCESSING
    FINAL = COMPLETED | TERMINATED | CANCELED | TIMED_OUT
    ERROR = TERMINATED | TIMED_OUT | CANCELED
    SUCCESS = COMPLETED

    def __str__(self) -> str:
        return self.name or super().__str__()


#: state -> the states it may move to
TRANSITIONS: dict[State, State] = {
    State.CREATED: State.SCHEDULED | State.CANCELED,
    # TERMINATED straight from SCHEDULED: it can never run (its arguments cannot be
    # pickled, or the pool is broken).
    State.SCHEDULED: State.PROCESSING | State.CANCELED | State.TERMINATED,
    State.PROCESSING: State.COMPLETED | State.TERMINATED | State.TIMED_OUT | State.CANCELED,
    # Retries (after a failure) and recurrences (after any run) go back to SCHEDULED.
    State.COMPLETED: State.SCHEDULED,
    State.TERMINATED: State.SCHEDULED,
    State.TIMED_OUT: State.SCHEDULED,
    State.CANCELED: State(0),
}


# The same table as pairs: a set lookup costs a fraction of IntFlag arithmetic, and this
# check runs on every transition of every instance.
_LEGAL = frozenset(
    (old, new) for old, allowed in TRANSITIONS.items() for new in TRANSITIONS if new & allowed
)


def check_transition(old: State, new: State) -> None:
    """Raise IllegalTransitionError unless old -> new is legal."""
    if (old, new) not in _LEGAL:
        raise IllegalTransitionError(f"illegal state transition {old.name} -> {new.name}")
