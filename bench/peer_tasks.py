"""The no-op task of each peer queue in bench/queue_bench.py (Huey, Dramatiq, RQ), all on
the Redis at JOBENGINE_REDIS_URL.  Imported by the peers' own worker commands."""

from __future__ import annotations

import os

URL = os.environ.get("JOBENGINE_REDIS_URL", "redis://127.0.0.1:6379/0")


def noop(x):
    """What every system runs (jobengine's workers import it by name too)."""
    return None


try:  # each peer is optional: pip install 'jobengine[bench]'
    from huey import RedisHuey

    huey = RedisHuey("jobengine-bench", url=URL, results=False)  # no result store: its fastest
    huey_noop = huey.task()(noop)
except ImportError:  # pragma: no cover
    huey = None

try:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    dramatiq.set_broker(RedisBroker(url=URL))
    dramatiq_noop = dramatiq.actor(max_retries=0, queue_name="jobengine_bench")(noop)
except ImportError:  # pragma: no cover
    dramatiq = None
