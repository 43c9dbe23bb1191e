"""Backoff policies for Job(backoff=...).

Owns: the backoff policy helpers.  Never does: sleep (the engine arms a timer)."""

from __future__ import annotations

import random
from collections.abc import Callable

from .errors import InvalidArgumentError


def exponential_backoff(
    base: float = 0.1, factor: float = 2.0, maximum: float = 60.0, jitter: float = 0.1
) -> Callable[[int], float]:
    """Delay before retry n (1-based): min(maximum, base * factor**(n-1)), then spread by
    +-jitter (a fraction) so retries of many instances do not land together."""
    if base < 0 or factor < 1 or maximum < 0 or not 0 <= jitter <= 1:
        raise InvalidArgumentError(
            f"exponential_backoff needs base >= 0, factor >= 1, maximum >= 0, 0 <= jitter <= 1;"
            f" got base={base}, factor={factor}, maximum={maximum}, jitter={jitter}"
        )

    def delay(attempt: int) -> float:
        d = min(maximum, base * factor ** max(0, attempt - 1))
        return max(0.0, d * (1 + random.uniform(-jitter, jitter)))

    delay.__qualname__ = f"exponential_backoff(base={base}, factor={factor}, maximum={maximum})"
    return delay
